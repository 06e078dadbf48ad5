package serve

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"

	"github.com/nix2aci/nix2aci/objstore"
	"github.com/nix2aci/nix2aci/pipeline"
	"github.com/nix2aci/nix2aci/publish"
)

// DefaultLeaseTTL is Options.LeaseTTL's default.
const DefaultLeaseTTL = time.Minute

// startStore checks the store at start, so that bad credentials, a
// missing bucket or an unreachable endpoint are told then, and puts the
// public key there (for a public bucket or CDN; the server answers it
// itself).
func (s *Server) startStore() error {
	if s.o.LeaseTTL == 0 {
		s.o.LeaseTTL = DefaultLeaseTTL
	}
	if s.o.LeaseTTL < 3*time.Second || s.o.LeaseTTL > objstore.MaxTTL {
		return &UsageError{fmt.Sprintf("the lease time %s is not between 3s and %s", s.o.LeaseTTL, objstore.MaxTTL)}
	}
	if s.o.Replica == "" {
		b := make([]byte, 6)
		rand.Read(b)
		host, _ := os.Hostname()
		s.o.Replica = bounded(host, 60) + "-" + hex.EncodeToString(b)
	}
	s.stored = map[string]storedImage{}
	s.asking = make(chan struct{}, maxAsking)
	s.refreshes = make(chan struct{}, maxRefreshes)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := s.o.Store.Check(ctx); err != nil {
		return err
	}
	if _, err := s.o.Store.Put(ctx, s.objKey("pubkeys/"+s.fp+".asc"), s.pubkey, "application/pgp-keys", objstore.Cond{}); err != nil {
		return fmt.Errorf("writing the public key into %s: %w", s.o.Store, err)
	}
	return nil
}

// objKey is the store's key of a file of the tree under the base path:
// keys are the paths of the publish tree (acis/HOST/NAME-….aci).
func (s *Server) objKey(rel string) string {
	return path.Join(strings.TrimPrefix(s.basePath, "/"), rel)
}

// store serves the bucket of Options.Store; the data directory is its
// staging tree.
type store struct{ s *Server }

func (store) kind() string { return "store" }

func (st store) have(ctx context.Context, rel string) (bool, error) {
	return st.s.inStore(ctx, strings.TrimSuffix(rel, ".asc"))
}

// send redirects to rel in the bucket once the image and its signature
// are complete there.
func (st store) send(w http.ResponseWriter, r *http.Request, rel string, latest bool) bool {
	s := st.s
	ok, err := st.have(r.Context(), rel)
	if err != nil {
		fail(w, http.StatusBadGateway, "asking the image store %s: %v", s.o.Store, err)
		return true
	}
	if !ok {
		return false
	}
	u, err := s.o.Store.URL(r.Context(), s.objKey(rel))
	if err != nil {
		fail(w, http.StatusBadGateway, "%v", err)
		return true
	}
	// A signed URL expires: the redirect is not kept. No body: a client
	// follows Location (http.Redirect would add an HTML one).
	h := w.Header()
	h["Cache-Control"] = []string{"no-store"}
	h["Location"] = []string{u}
	h["Content-Length"] = []string{"0"}
	w.WriteHeader(http.StatusTemporaryRedirect)
	return true
}

// sendBlob redirects to the blob d in the bucket once it is complete
// there: its key names its digest, and the store checked its bytes
// against that digest when they were uploaded. A blob not there is
// served from the data directory, if it holds it.
func (st store) sendBlob(w http.ResponseWriter, r *http.Request, d digest.Digest) bool {
	s := st.s
	ok, err := st.haveBlob(r.Context(), d)
	if err != nil {
		regFail(w, http.StatusBadGateway, "UNKNOWN", "asking the image store %s: %v", s.o.Store, err)
		return true
	}
	if !ok {
		return s.sendBlobFile(w, r, d)
	}
	u, err := s.o.Store.URL(r.Context(), blobRel(d))
	if err != nil {
		regFail(w, http.StatusBadGateway, "UNKNOWN", "%v", err)
		return true
	}
	h := w.Header()
	h["Cache-Control"] = []string{"no-store"}
	h["Location"] = []string{u}
	h["Docker-Content-Digest"] = []string{d.String()}
	h["Content-Length"] = []string{"0"}
	w.WriteHeader(http.StatusTemporaryRedirect)
	return true
}

// haveBlob says whether the blob d is complete in the store: there, with
// the SHA-256 the store checked at upload equal to its digest. A yes is
// remembered for storedFor.
func (st store) haveBlob(ctx context.Context, d digest.Digest) (bool, error) {
	s := st.s
	key := blobRel(d)
	s.mu.Lock()
	e, ok := s.stored[key]
	s.mu.Unlock()
	if ok && time.Since(e.at) < storedFor {
		return true, nil
	}
	o, err := s.o.Store.Stat(ctx, key)
	switch {
	case errors.Is(err, objstore.ErrNotExist):
		return false, nil
	case err != nil:
		return false, err
	case o.SHA256 != d.Encoded():
		return false, nil
	}
	s.mu.Lock()
	if len(s.stored) >= maxStored {
		clear(s.stored)
	}
	s.stored[key] = storedImage{at: time.Now()}
	s.mu.Unlock()
	return true, nil
}

// completeOCI uploads the blobs ds from the data directory, but those
// complete in the store already, and then q's reference, naming m: the
// reference is the image's completion marker there.
func (st store) completeOCI(ctx context.Context, q *request, ds []digest.Digest, m digest.Digest) error {
	s := st.s
	for _, d := range ds {
		if ok, err := st.haveBlob(ctx, d); err != nil || ok {
			if err != nil {
				return fmt.Errorf("asking the image store %s: %w", s.o.Store, err)
			}
			continue
		}
		o, err := s.o.Store.PutFile(ctx, blobRel(d), filepath.Join(s.o.Data, filepath.FromSlash(blobRel(d))), "application/octet-stream")
		if err != nil {
			return fmt.Errorf("uploading the blob %s to %s: %w", d, s.o.Store, err)
		}
		if o.SHA256 != d.Encoded() {
			return fmt.Errorf("uploading the blob %s to %s: the data directory's file has the SHA-256 %s", d, s.o.Store, o.SHA256)
		}
		s.o.Logger.Info("upload", "blob", d.String(), "bytes", o.Size)
	}
	_, err := s.o.Store.Put(ctx, q.rel, []byte(m.String()+"\n"), "text/plain", objstore.Cond{IfNoneMatch: true})
	if errors.Is(err, objstore.ErrPrecondition) {
		// Another replica's, or an earlier build's: the same image, if
		// builds are reproducible; the store's stands.
		return nil
	}
	if err != nil {
		return fmt.Errorf("uploading the reference of %s to %s: %w", q.name, s.o.Store, err)
	}
	return nil
}

// fetchOCI reads q's reference from the store and, when the manifest it
// names and every blob the manifest names are complete there, writes the
// manifest and the reference into the data directory.
func (st store) fetchOCI(ctx context.Context, q *request) (bool, error) {
	s := st.s
	b, _, err := s.o.Store.Get(ctx, q.rel, 200)
	if errors.Is(err, objstore.ErrNotExist) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	m, err := digest.Parse(strings.TrimSpace(string(b)))
	if err != nil || m.Algorithm() != digest.SHA256 {
		s.o.Logger.Warn("store", "reference", q.rel, "incomplete", "it names no sha256 digest")
		return false, nil
	}
	if ok, err := st.haveBlob(ctx, m); !ok || err != nil {
		return false, err
	}
	body, _, err := s.o.Store.Get(ctx, blobRel(m), maxManifest)
	if err != nil {
		return false, err
	}
	if digest.FromBytes(body) != m {
		return false, fmt.Errorf("the store's manifest %s has other bytes", m)
	}
	var man struct {
		Config struct{ Digest digest.Digest }
		Layers []struct{ Digest digest.Digest }
	}
	if err := json.Unmarshal(body, &man); err != nil {
		return false, fmt.Errorf("the store's manifest %s: %w", m, err)
	}
	blobs := []digest.Digest{man.Config.Digest}
	for _, l := range man.Layers {
		blobs = append(blobs, l.Digest)
	}
	for _, d := range blobs {
		if d.Validate() != nil || d.Algorithm() != digest.SHA256 {
			return false, fmt.Errorf("the store's manifest %s names the blob %.80q", m, d)
		}
		if ok, err := st.haveBlob(ctx, d); !ok || err != nil {
			if err == nil {
				s.o.Logger.Warn("store", "reference", q.rel, "incomplete", "its blob "+d.String()+" is not in the store")
			}
			return false, err
		}
	}
	// The manifest is held as read until its reference is written, so
	// that the collector leaves it.
	s.acquire(blobRel(m))
	defer s.release(blobRel(m))
	if err := s.writeLocal(blobRel(m), body); err != nil {
		return false, err
	}
	if err := s.writeRef(q.rel, m); err != nil {
		return false, err
	}
	return true, nil
}

// claim takes the build's lease (see Server.claim); the build is
// cancelled when the lease is lost.
func (st store) claim(q *request) (context.Context, func(), *failure) {
	lease, f := st.s.claim(q)
	if lease == nil {
		return nil, nil, f
	}
	ctx, cancel := context.WithCancel(st.s.ctx)
	go func() {
		select {
		case <-lease.Lost():
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, func() { cancel(); lease.Release() }, nil
}

// complete uploads every image of the build, the layers the tree held
// already too (upload skips those complete there), without publishMu,
// the images held as read so that they are not collected meanwhile.
func (st store) complete(ctx context.Context, res *pipeline.Result, rep *publish.Report) error {
	s := st.s
	up := s.uploadList(res, rep)
	rels := s.relsOf(up)
	for _, r := range rels {
		s.acquire(r)
	}
	s.publishMu.Unlock()
	err := s.upload(ctx, up)
	for _, r := range rels {
		s.release(r)
	}
	s.publishMu.Lock()
	return err
}

// storedFor is how long an image found complete in the store is taken
// as there before the store is asked again, in the background while the
// answer stands: an object removed from the bucket later (a lifecycle
// rule, an operator) is noticed within about twice this (an app's layers
// are asked through the same memory), and the image is built and
// uploaded again on the next request.
var storedFor = time.Minute

// maxStored bounds the images remembered; maxAsking the questions about
// layers in flight to the store, over all requests; maxRefreshes the
// questions in the background (one more found due while these run waits
// for a later request).
const (
	maxStored    = 100_000
	maxAsking    = 16
	maxRefreshes = 16
)

// storedImage is an image found complete in the store.
type storedImage struct {
	at      time.Time
	imageID string
	// layers: the layers its marker names were found complete too (it
	// was asked about as an app).
	layers     bool
	refreshing bool
}

// errIncomplete stops the questions about an app's other layers once
// one is found missing.
var errIncomplete = errors.New("incomplete")

// inStore says whether the image rel (.aci) is complete in the store:
// its marker there, valid, naming both objects as the store holds them,
// and each layer the marker names complete the same way, with the image
// ID it names. A layer's own marker is not followed further: serve writes
// an app's marker naming all its layers, and theirs naming none.
func (s *Server) inStore(ctx context.Context, rel string) (bool, error) {
	_, ok, err := s.complete(ctx, s.objKey(rel), true)
	return ok, err
}

// complete says whether the image at key is complete in the store (see
// inStore; the layers its marker names only when withLayers), and its
// image ID. A yes is remembered for storedFor; after that it stands while
// the store is asked again.
func (s *Server) complete(ctx context.Context, key string, withLayers bool) (string, bool, error) {
	s.mu.Lock()
	e, ok := s.stored[key]
	ok = ok && (e.layers || !withLayers)
	if ok && !e.refreshing && !s.closing && time.Since(e.at) >= storedFor {
		select {
		case s.refreshes <- struct{}{}:
			e.refreshing = true
			s.stored[key] = e
			s.background.Add(1)
			go s.refresh(key, e.layers)
		default:
		}
	}
	s.mu.Unlock()
	if ok {
		return e.imageID, true, nil
	}
	id, why, err := s.check(ctx, key, withLayers)
	if why != "" && withLayers {
		s.o.Logger.Warn("store", "image", key, "incomplete", bounded(why, 300))
	}
	return id, why == "" && err == nil, err
}

// check asks the store whether the image at key is complete (as
// complete says) and remembers a yes; why says what is missing.
func (s *Server) check(ctx context.Context, key string, withLayers bool) (id, why string, err error) {
	m, err := objstore.Complete(ctx, s.o.Store, key)
	var inc *objstore.IncompleteError
	switch {
	case errors.Is(err, objstore.ErrNotExist):
		return "", "not in the store", nil
	case errors.As(err, &inc):
		return "", err.Error(), nil
	case err != nil:
		return "", "", err
	}
	if withLayers && len(m.Depends) > 0 {
		if why, err := s.layersComplete(ctx, m.Depends); why != "" || err != nil {
			return "", why, err
		}
	}
	s.mu.Lock()
	if len(s.stored) >= maxStored {
		clear(s.stored)
	}
	s.stored[key] = storedImage{at: time.Now(), imageID: m.ImageID, layers: withLayers}
	s.mu.Unlock()
	return m.ImageID, "", nil
}

// layersComplete asks about the layers an app's marker names, a few at a
// time (the first request for an app on an empty replica asks about each
// of them), and stops at the first missing. Each must be an image of
// this server's tree.
func (s *Server) layersComplete(ctx context.Context, deps []objstore.Dep) (string, error) {
	under := strings.TrimPrefix(s.basePath, "/")
	if under != "" {
		under += "/"
	}
	for _, d := range deps {
		if !strings.HasPrefix(d.Key, under) || !strings.HasSuffix(d.Key, ".aci") {
			return fmt.Sprintf("its marker names the layer %.200q, which is no image under %s", d.Key, under), nil
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	var missing atomic.Value
	for _, d := range deps {
		if gctx.Err() != nil {
			break
		}
		g.Go(func() error {
			select {
			case s.asking <- struct{}{}:
				defer func() { <-s.asking }()
			case <-gctx.Done():
				return gctx.Err()
			}
			id, ok, err := s.complete(gctx, d.Key, false)
			switch {
			case err != nil:
				return err
			case !ok:
				missing.CompareAndSwap(nil, "its layer "+d.Key+" is not complete in the store")
				return errIncomplete
			case id != d.ImageID:
				missing.CompareAndSwap(nil, fmt.Sprintf("its layer %s is the image %s in the store, its marker names %s", d.Key, id, d.ImageID))
				return errIncomplete
			}
			return nil
		})
	}
	err := g.Wait()
	if why, _ := missing.Load().(string); why != "" {
		return why, nil
	}
	return "", err
}

// refresh asks the store again about an image remembered as complete,
// and forgets it when it no longer is.
func (s *Server) refresh(key string, withLayers bool) {
	defer s.background.Done()
	defer func() { <-s.refreshes }()
	ctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
	defer cancel()
	_, why, err := s.check(ctx, key, withLayers)
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case err != nil:
		// The store could not be asked: the answer stands until the next
		// try.
		if e, there := s.stored[key]; there {
			e.refreshing = false
			s.stored[key] = e
		}
	case why != "":
		delete(s.stored, key)
		s.o.Logger.Warn("store", "image", key, "gone", bounded(why, 300))
	}
}

// claim takes the lease on building q's image, or waits while another
// replica holds it (bounded by the build deadline) until that replica's
// image is complete: then it answers a nil lease and no failure.
func (s *Server) claim(q *request) (*objstore.Lease, *failure) {
	ctx, cancel := context.WithTimeout(s.ctx, s.o.BuildTimeout)
	defer cancel()
	img := strings.TrimSuffix(q.rel, ".asc")
	key := objstore.LeaseKey(s.objKey(img))
	done := func(ctx context.Context) (bool, error) { return s.inStore(ctx, img) }
	if q.oci {
		// An OCI image's reference file is its key (see registry.go).
		key = objstore.LeaseKey(q.rel)
		done = func(ctx context.Context) (bool, error) { return store{s}.fetchOCI(ctx, q) }
	}
	poll := min(max(s.o.LeaseTTL/10, 100*time.Millisecond), 2*time.Second)
	l, err := objstore.Claim(ctx, s.o.Store, key, s.o.Replica, s.o.LeaseTTL, poll, done)
	switch {
	case err == nil && l == nil:
		s.metrics.hits.WithLabelValues("replica").Inc()
		return nil, nil
	case err == nil:
		return l, nil
	case s.ctx.Err() != nil:
		return nil, &failure{status: http.StatusServiceUnavailable, msg: "the server is shutting down"}
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return nil, &failure{status: http.StatusGatewayTimeout, msg: fmt.Sprintf("%s is being built by another replica, which did not finish within the build deadline of %s", q.name, s.o.BuildTimeout)}
	}
	return nil, &failure{status: http.StatusBadGateway, msg: fmt.Sprintf("claiming the build of %s in the image store %s: %v", q.name, s.o.Store, err)}
}

// relsOf are the files under the base path of the images published.
func (s *Server) relsOf(rep *publish.Report) []string {
	var rels []string
	for _, p := range rep.Images {
		rels = append(rels, strings.TrimPrefix(filepath.ToSlash(p.Path), strings.TrimPrefix(s.basePath, "/")+"/"))
	}
	return rels
}

// upload puts the images published into the store, layers before the
// apps on them (publish's order), each image before its signature and
// both before its marker, written last. Images already complete there
// are not uploaded again.
func (s *Server) upload(ctx context.Context, rep *publish.Report) error {
	keyOf := map[string]string{} // by image ID
	for _, p := range rep.Images {
		keyOf[p.ImageID] = filepath.ToSlash(p.Path)
	}
	for _, p := range rep.Images {
		key := filepath.ToSlash(p.Path)
		var deps []objstore.Dep
		for _, id := range p.Depends {
			k, ok := keyOf[id]
			if !ok {
				return fmt.Errorf("uploading %s: its dependency %s is not among the images of the build", key, id)
			}
			deps = append(deps, objstore.Dep{Key: k, ImageID: id})
		}
		m, err := objstore.Complete(ctx, s.o.Store, key)
		var inc *objstore.IncompleteError
		switch {
		case err == nil && m.ImageID != p.ImageID:
			return fmt.Errorf("the store holds %s as the image %s, this build made %s (a build that is not reproducible); remove %s from the store to replace it", key, m.ImageID, p.ImageID, objstore.MarkerKey(key))
		case err == nil && len(deps) > 0 && !slices.Equal(m.Depends, deps):
			// An app complete there, but its marker names other layers:
			// the marker is written again.
			aci := objstore.Object{Key: m.ACI.Key, Size: m.ACI.Size, SHA256: m.ACI.SHA256}
			asc := objstore.Object{Key: m.ASC.Key, Size: m.ASC.Size, SHA256: m.ASC.SHA256}
			if err := objstore.WriteMarker(ctx, s.o.Store, p.ImageID, aci, asc, deps); err != nil {
				return fmt.Errorf("uploading the marker of %s to %s: %w", key, s.o.Store, err)
			}
			continue
		case err == nil:
			continue
		case errors.Is(err, objstore.ErrNotExist), errors.As(err, &inc):
		default:
			return err
		}
		local := filepath.Join(s.o.Data, filepath.FromSlash(key))
		aci, err := s.o.Store.PutFile(ctx, key, local, "application/octet-stream")
		var asc objstore.Object
		if err == nil {
			asc, err = s.o.Store.PutFile(ctx, key+".asc", local+".asc", "application/pgp-signature")
		}
		if err == nil {
			err = objstore.WriteMarker(ctx, s.o.Store, p.ImageID, aci, asc, deps)
		}
		if err != nil {
			return fmt.Errorf("uploading %s to %s: %w", key, s.o.Store, err)
		}
		s.o.Logger.Info("upload", "image", key, "bytes", aci.Size+asc.Size)
	}
	return nil
}
