package objstore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"
)

// maxLease bounds a lease's bytes; leases declare a TTL within
// [minTTL, maxTTL].
const (
	maxLease = 4 << 10
	minTTL   = time.Second
	MaxTTL   = time.Hour
)

// LeaseKey is the key of the lease on building the image at key.
func LeaseKey(key string) string { return ".nix2aci/leases/" + key + ".json" }

type leaseRecord struct {
	Owner   string    `json:"owner"`
	Expires time.Time `json:"expires"`
	TTL     float64   `json:"ttlSeconds"`
	Renewal int       `json:"renewal"`
}

func parseLease(b []byte) (*leaseRecord, error) {
	var r leaseRecord
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(&r); err != nil {
		return nil, err
	}
	ttl := time.Duration(r.TTL * float64(time.Second))
	if r.Owner == "" || len(r.Owner) > 200 || ttl < minTTL || ttl > MaxTTL {
		return nil, errors.New("not a lease")
	}
	return &r, nil
}

// Lease is a lease held: Claim renews it every TTL/3 until Release.
type Lease struct {
	st    Store
	key   string
	owner string
	ttl   time.Duration

	mu      sync.Mutex
	etag    string
	renewal int
	lost    chan struct{}
	lostErr error
	stop    chan struct{}
	done    chan struct{}
}

// Lost is closed when the lease was lost: taken over by another (it
// could not be renewed within its TTL), or its object changed.
func (l *Lease) Lost() <-chan struct{} { return l.lost }

// Err says why the lease was lost.
func (l *Lease) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lostErr
}

func (l *Lease) body(n int) []byte {
	b, _ := json.Marshal(leaseRecord{Owner: l.owner, Expires: time.Now().Add(l.ttl).UTC(), TTL: l.ttl.Seconds(), Renewal: n})
	return b
}

func (l *Lease) renew() {
	defer close(l.done)
	t := time.NewTicker(l.ttl / 3)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		l.mu.Lock()
		etag, n := l.etag, l.renewal+1
		l.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), l.ttl/3)
		o, err := l.st.Put(ctx, l.key, l.body(n), "application/json", Cond{IfMatch: etag})
		cancel()
		switch {
		case err == nil:
			last = time.Now()
			l.mu.Lock()
			l.etag, l.renewal = o.ETag, n
			l.mu.Unlock()
			continue
		case errors.Is(err, ErrPrecondition) || errors.Is(err, ErrNotExist):
		case time.Since(last) < l.ttl*2/3:
			continue // try again at the next tick
		}
		l.mu.Lock()
		l.lostErr = fmt.Errorf("the lease %s was lost: %w", l.key, err)
		l.mu.Unlock()
		close(l.lost)
		return
	}
}

// Release stops renewing and removes the lease, if it is still this
// one's.
func (l *Lease) Release() {
	select {
	case <-l.stop:
		return
	default:
	}
	close(l.stop)
	<-l.done
	l.mu.Lock()
	etag := l.etag
	l.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := l.st.Delete(ctx, l.key, Cond{IfMatch: etag}); err != nil && !errors.Is(err, ErrPrecondition) {
		// A store without conditional deletes: the lease expires.
		_ = err
	}
}

// Claim takes the lease at key for owner (renewed every ttl/3 until
// Release), or, while another holds it live, waits, polling, until done
// reports the work finished (answered as a nil Lease), the lease expires
// (taken over) or ctx ends.
//
// A lease is created only where none is (If-None-Match: *) and taken
// over only from the version read (If-Match: its ETag): of replicas
// claiming at once, one gets it. It is expired when this replica has
// seen it unchanged for its TTL (its own clock, immune to skew), or when
// its stated expiry is more than its TTL past (a lease long dead). done
// is asked again after the lease is taken: work finished by the last
// holder, which writes its result before releasing, is not done twice.
func Claim(ctx context.Context, st Store, key, owner string, ttl, poll time.Duration, done func(context.Context) (bool, error)) (*Lease, error) {
	if ttl < minTTL || ttl > MaxTTL {
		return nil, fmt.Errorf("a lease's time of %s is not between %s and %s", ttl, minTTL, MaxTTL)
	}
	l := &Lease{st: st, key: key, owner: owner, ttl: ttl, lost: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{})}
	var seenTag string
	var seenAt time.Time
	for {
		if ok, err := done(ctx); err != nil || ok {
			return nil, err
		}
		o, err := st.Put(ctx, key, l.body(0), "application/json", Cond{IfNoneMatch: true})
		if err == nil {
			return l.taken(ctx, o, done)
		}
		if !errors.Is(err, ErrPrecondition) {
			return nil, err
		}
		b, cur, err := st.Get(ctx, key, maxLease)
		if errors.Is(err, ErrNotExist) {
			continue // released meanwhile
		}
		if err != nil && !errors.Is(err, ErrPrecondition) {
			// A lease too large to be one: taken over like an invalid one.
			if cur.ETag == "" {
				o, serr := st.Stat(ctx, key)
				if serr != nil {
					return nil, err
				}
				cur = o
			}
		}
		if cur.ETag != seenTag {
			seenTag, seenAt = cur.ETag, time.Now()
		}
		life := ttl
		var rec *leaseRecord
		if err == nil {
			rec, _ = parseLease(b)
		}
		if rec != nil {
			life = time.Duration(rec.TTL * float64(time.Second))
		}
		expired := time.Since(seenAt) >= life || (rec != nil && time.Now().After(rec.Expires.Add(life)))
		if expired {
			o, err := st.Put(ctx, key, l.body(0), "application/json", Cond{IfMatch: cur.ETag})
			if err == nil {
				return l.taken(ctx, o, done)
			}
			if !errors.Is(err, ErrPrecondition) && !errors.Is(err, ErrNotExist) {
				return nil, err
			}
			continue
		}
		select {
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		case <-time.After(poll):
		}
	}
}

func (l *Lease) taken(ctx context.Context, o Object, done func(context.Context) (bool, error)) (*Lease, error) {
	l.etag = o.ETag
	go l.renew()
	if ok, err := done(ctx); err != nil || ok {
		l.Release()
		return nil, err
	}
	return l, nil
}
