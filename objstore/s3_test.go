package objstore_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/nix2aci/nix2aci/internal/testsupport"
	"github.com/nix2aci/nix2aci/objstore"
	"github.com/nix2aci/nix2aci/objstore/objstoretest"
)

var ctx = context.Background()

// TestS3ObjectsAndConditions: objects written whole and read back with
// the SHA-256 the store checked; a create-only write refused where an
// object is; a write from a stale ETag refused; a signed URL fetches the
// object and stops working when it expires.
func TestS3ObjectsAndConditions(t *testing.T) {
	g := objstoretest.Start(t)
	st := g.Bucket(t, "objects", objstore.S3Options{Expiry: 2 * time.Second})
	file := filepath.Join(t.TempDir(), "img.aci")
	body := strings.Repeat("image bytes ", 10000)
	os.WriteFile(file, []byte(body), 0o644)
	o, err := st.PutFile(ctx, "acis/a/img.aci", file, "application/octet-stream")
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(body))
	s, err := st.Stat(ctx, "acis/a/img.aci")
	if err != nil || s.Size != int64(len(body)) || s.SHA256 != hex.EncodeToString(sum[:]) || s.SHA256 != o.SHA256 {
		t.Fatalf("stat: %+v %v; want %d bytes, sha256 %x", s, err, len(body), sum)
	}
	if _, err := st.Stat(ctx, "acis/a/none.aci"); !errors.Is(err, objstore.ErrNotExist) {
		t.Fatalf("stat of nothing: %v", err)
	}
	if _, _, err := st.Get(ctx, "acis/a/img.aci", 100); err == nil {
		t.Fatal("Get read an object over its bound")
	}

	a, err := st.Put(ctx, "lease", []byte("one"), "text/plain", objstore.Cond{IfNoneMatch: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Put(ctx, "lease", []byte("two"), "text/plain", objstore.Cond{IfNoneMatch: true}); !errors.Is(err, objstore.ErrPrecondition) {
		t.Fatalf("a create-only write over an object: %v, want a failed precondition", err)
	}
	b, err := st.Put(ctx, "lease", []byte("three"), "text/plain", objstore.Cond{IfMatch: a.ETag})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Put(ctx, "lease", []byte("four"), "text/plain", objstore.Cond{IfMatch: a.ETag}); !errors.Is(err, objstore.ErrPrecondition) {
		t.Fatalf("a write from a stale ETag: %v, want a failed precondition", err)
	}
	if got, _, _ := st.Get(ctx, "lease", 100); string(got) != "three" {
		t.Fatalf("the lease holds %q", got)
	}
	if err := st.Delete(ctx, "lease", objstore.Cond{IfMatch: a.ETag}); !errors.Is(err, objstore.ErrPrecondition) {
		t.Fatalf("a delete from a stale ETag: %v", err)
	}
	if err := st.Delete(ctx, "lease", objstore.Cond{IfMatch: b.ETag}); err != nil {
		t.Fatal(err)
	}

	u, err := st.URL(ctx, "acis/a/img.aci")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(got) != body {
		t.Fatalf("GET of the signed URL: %s, %d bytes", resp.Status, len(got))
	}
	time.Sleep(3 * time.Second)
	resp, err = http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("GET of the signed URL after it expired: %s, want 403", resp.Status)
	}
}

// TestCheckNamesTheFix: bad credentials, a missing bucket and an
// unreachable endpoint are told apart, each with what to fix.
func TestCheckNamesTheFix(t *testing.T) {
	g := objstoretest.Start(t)
	g.Bucket(t, "there", objstore.S3Options{})
	closed := "http://" + testsupport.FreeAddr(t)
	for _, c := range []struct {
		name, endpoint, bucket, secret string
		config                         bool
		want                           string
	}{
		{"bad credentials", g.Endpoint, "there", "wrong", true, "AWS_SECRET_ACCESS_KEY"},
		{"missing bucket", g.Endpoint, "missing", objstoretest.SecretKey, true, `the bucket "missing" does not exist`},
		{"unreachable", closed, "there", objstoretest.SecretKey, false, "cannot reach the store"},
	} {
		cfg := aws.Config{Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider(objstoretest.AccessKey, c.secret, "")}
		st, err := objstore.NewS3(cfg, objstore.S3Options{Endpoint: c.endpoint, Bucket: c.bucket, PathStyle: true})
		if err != nil {
			t.Fatal(err)
		}
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err = st.Check(cctx)
		cancel()
		var ce *objstore.CheckError
		if !errors.As(err, &ce) || ce.Config != c.config || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want a CheckError (config %v) saying %q", c.name, err, c.config, c.want)
		}
	}
}

// TestCompleteRefusesIncomplete: an image is complete only when its
// marker is there, valid, and names both objects with the sizes and
// digests the store holds.
func TestCompleteRefusesIncomplete(t *testing.T) {
	g := objstoretest.Start(t)
	st := g.Bucket(t, "images", objstore.S3Options{})
	dir := t.TempDir()
	key := "acis/h/app-v1-linux-amd64.aci"
	os.WriteFile(filepath.Join(dir, "aci"), []byte("the image"), 0o644)
	os.WriteFile(filepath.Join(dir, "asc"), []byte("the signature"), 0o644)
	id := "sha512-" + strings.Repeat("ab", 32)

	aci, err := st.PutFile(ctx, key, filepath.Join(dir, "aci"), "application/octet-stream")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := objstore.Complete(ctx, st, key); !errors.Is(err, objstore.ErrNotExist) {
		t.Fatalf("an image without signature nor marker: %v, want no marker", err)
	}
	// A marker naming a signature not there.
	if err := objstore.WriteMarker(ctx, st, id, aci, objstore.Object{Key: key + ".asc", Size: 13, SHA256: strings.Repeat("0", 64)}, nil); err != nil {
		t.Fatal(err)
	}
	var inc *objstore.IncompleteError
	if _, err := objstore.Complete(ctx, st, key); !errors.As(err, &inc) {
		t.Fatalf("a marker naming a signature not there: %v", err)
	}
	asc, err := st.PutFile(ctx, key+".asc", filepath.Join(dir, "asc"), "application/pgp-signature")
	if err != nil {
		t.Fatal(err)
	}
	// Markers that lie about a size or a digest.
	for _, lie := range []objstore.Object{{Key: asc.Key, Size: asc.Size + 1, SHA256: asc.SHA256}, {Key: asc.Key, Size: asc.Size, SHA256: aci.SHA256}} {
		objstore.WriteMarker(ctx, st, id, aci, lie, nil)
		if _, err := objstore.Complete(ctx, st, key); !errors.As(err, &inc) {
			t.Fatalf("a marker that lies (%+v): %v", lie, err)
		}
	}
	// Bytes that are not a marker, and a marker too large.
	for _, b := range []string{"{}", `{"nix2aci-marker":1}`, strings.Repeat(" ", objstore.MaxMarker+1)} {
		st.Put(ctx, objstore.MarkerKey(key), []byte(b), "application/json", objstore.Cond{})
		if _, err := objstore.Complete(ctx, st, key); err == nil {
			t.Fatalf("the marker %.40q was taken", b)
		}
	}
	if err := objstore.WriteMarker(ctx, st, id, aci, asc, nil); err != nil {
		t.Fatal(err)
	}
	if m, err := objstore.Complete(ctx, st, key); err != nil || m.ImageID != id {
		t.Fatalf("a complete image: %+v %v", m, err)
	}
}

// TestClaimOnce: of 20 claimers of one lease at once, one does the work;
// the others wait and find it done.
func TestClaimOnce(t *testing.T) {
	g := objstoretest.Start(t)
	st := g.Bucket(t, "leases", objstore.S3Options{})
	var worked atomic.Int32
	done := func(ctx context.Context) (bool, error) {
		_, err := st.Stat(ctx, "result")
		if errors.Is(err, objstore.ErrNotExist) {
			return false, nil
		}
		return err == nil, err
	}
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l, err := objstore.Claim(ctx, st, objstore.LeaseKey("img"), "owner"+string(rune('a'+i)), 3*time.Second, 100*time.Millisecond, done)
			if err != nil {
				t.Error(err)
				return
			}
			if l == nil {
				return
			}
			worked.Add(1)
			time.Sleep(500 * time.Millisecond)
			st.Put(ctx, "result", []byte("done"), "text/plain", objstore.Cond{})
			l.Release()
		}()
	}
	wg.Wait()
	if n := worked.Load(); n != 1 {
		t.Fatalf("%d claimers did the work, want 1", n)
	}
	if _, err := st.Stat(ctx, objstore.LeaseKey("img")); !errors.Is(err, objstore.ErrNotExist) {
		t.Fatalf("the lease is still there after its release: %v", err)
	}
}

// TestClaimTakesOverADeadHolder: a lease its holder stopped renewing
// (died) is taken over within its time; one renewed is not.
func TestClaimTakesOverADeadHolder(t *testing.T) {
	g := objstoretest.Start(t)
	st := g.Bucket(t, "leases", objstore.S3Options{})
	never := func(context.Context) (bool, error) { return false, nil }
	const ttl = 2 * time.Second
	live, err := objstore.Claim(ctx, st, objstore.LeaseKey("img"), "live", ttl, 100*time.Millisecond, never)
	if err != nil || live == nil {
		t.Fatal(err)
	}
	// Renewed: still held after 3 TTLs.
	cctx, cancel := context.WithTimeout(ctx, 3*ttl)
	if l, err := objstore.Claim(cctx, st, objstore.LeaseKey("img"), "other", ttl, 100*time.Millisecond, never); l != nil || err == nil {
		t.Fatalf("a renewed lease was taken over: %v", err)
	}
	cancel()
	objstore.Abandon(live) // as if its holder were killed
	start := time.Now()
	l, err := objstore.Claim(ctx, st, objstore.LeaseKey("img"), "other", ttl, 100*time.Millisecond, never)
	if err != nil || l == nil {
		t.Fatal(err)
	}
	defer l.Release()
	if d := time.Since(start); d > ttl+time.Second {
		t.Fatalf("taking over a dead holder's lease took %s, its time is %s", d, ttl)
	}
	select {
	case <-live.Lost():
	case <-time.After(2 * ttl):
	}
}
