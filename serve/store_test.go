package serve_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/appc/spec/schema/types"

	"github.com/nix2aci/nix2aci/objstore"
	"github.com/nix2aci/nix2aci/objstore/objstoretest"
	"github.com/nix2aci/nix2aci/pipeline"
	"github.com/nix2aci/nix2aci/serve"
)

// noFollow is a client that shows redirects rather than following them.
var noFollow = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

func redirectOf(t *testing.T, u string) (int, string) {
	t.Helper()
	resp, err := noFollow.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("Location")
}

// TestStoreRedirectFetchVerifyRun: on a bucket, a new image is built,
// uploaded, and its image and signature requests are answered with a
// redirect to signed URLs of the bucket; appc's discovery client
// following them gets images whose signatures verify, and the app runs on
// its layers. A second server on the same bucket with an empty data
// directory serves it, and its layers, without building.
func TestStoreRedirectFetchVerifyRun(t *testing.T) {
	g := objstoretest.Start(t)
	st := g.Bucket(t, "images", objstore.S3Options{Expiry: 5 * time.Minute})
	e := start(t, func(o *serve.Options) { o.Store = st })
	trust := trustFromDiscovery(t, e, "127.0.0.1")
	labels := map[types.ACIdentifier]string{"version": version, "os": "linux", "arch": "amd64"}
	dir := t.TempDir()
	img := fetch(t, e, "127.0.0.1/busybox", labels, trust, dir, "")
	if got := run(t, dir, img, "echo", "from the bucket"); got != "from the bucket" {
		t.Fatalf("the app said %q", got)
	}
	if n := e.built.Load(); n != 1 {
		t.Fatalf("%d builds, want 1", n)
	}
	for _, ext := range []string{"aci", "aci.asc"} {
		code, loc := redirectOf(t, e.url("127.0.0.1/busybox", ext))
		u, err := url.Parse(loc)
		if code != http.StatusTemporaryRedirect || err != nil || u.Host != g.Addr || u.Query().Get("X-Amz-Signature") == "" || u.Query().Get("X-Amz-Expires") != "300" {
			t.Fatalf("GET of the %s: %d to %q, want 307 to a URL of %s signed for 300 s", ext, code, loc, g.Addr)
		}
	}
	// The bucket holds the image, its signature and its marker; the
	// public key is there too.
	key := "acis/" + strings.TrimPrefix(e.url("127.0.0.1/busybox", "aci"), e.base+"/")
	for _, k := range []string{key, key + ".asc", objstore.MarkerKey(key)} {
		if _, err := st.Stat(context.Background(), k); err != nil {
			t.Errorf("%s: %v", k, err)
		}
	}

	// A replica with an empty disk: everything from the bucket.
	e2 := start(t, func(o *serve.Options) { o.Store = st; o.Key = e.key })
	e2.key = e.key
	dir2 := t.TempDir()
	img2 := fetch(t, e2, "127.0.0.1/busybox", labels, trustFromDiscovery(t, e2, "127.0.0.1"), dir2, "")
	a, _ := os.ReadFile(img)
	b, _ := os.ReadFile(img2)
	if !bytes.Equal(a, b) {
		t.Fatal("the replica served other bytes")
	}
	if got := run(t, dir2, img2, "echo", "replica"); got != "replica" {
		t.Fatalf("the app said %q", got)
	}
	if n := e2.built.Load(); n != 0 {
		t.Fatalf("the replica with an empty disk built %d images, want 0", n)
	}
	if m, _ := filepath.Glob(filepath.Join(e2.data, "acis", "127.0.0.1", "*.aci")); len(m) != 0 {
		t.Fatalf("the replica wrote images to its disk: %v", m)
	}
}

// TestStoreNeverServesIncomplete: an image in the bucket without its
// signature, without its marker, or with a marker that lies is not
// served (the server builds it instead; here the build fails, so the
// answer is that failure); once complete, it is.
func TestStoreNeverServesIncomplete(t *testing.T) {
	g := objstoretest.Start(t)
	st := g.Bucket(t, "images", objstore.S3Options{})
	ctx := context.Background()
	recipes, _ := filepath.Abs("testdata")
	e := start(t, func(o *serve.Options) {
		o.Store = st
		o.Recipes = recipes // tiny, a name the server knows
		o.FailureTTL = time.Millisecond
		o.Build = func(context.Context, pipeline.Request) (*pipeline.Result, error) {
			e := errors.New("no builds in this test")
			return nil, e
		}
	})
	u := e.url("127.0.0.1/tiny", "aci")
	key := "acis/" + strings.TrimPrefix(u, e.base+"/")
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "aci"), []byte("an image"), 0o644)
	os.WriteFile(filepath.Join(dir, "asc"), []byte("its signature"), 0o644)
	id := "sha512-" + strings.Repeat("cd", 32)
	notServed := func(state string) {
		t.Helper()
		for _, x := range []string{u, u + ".asc"} {
			if code, loc := redirectOf(t, x); code != http.StatusBadGateway || loc != "" {
				t.Errorf("%s: GET %s: %d to %q, want the failed build's 502", state, x[len(e.base):], code, loc)
			}
		}
	}
	aci, err := st.PutFile(ctx, key, filepath.Join(dir, "aci"), "application/octet-stream")
	if err != nil {
		t.Fatal(err)
	}
	notServed("the image without signature or marker")
	asc, err := st.PutFile(ctx, key+".asc", filepath.Join(dir, "asc"), "application/pgp-signature")
	if err != nil {
		t.Fatal(err)
	}
	notServed("image and signature without marker")
	objstore.WriteMarker(ctx, st, id, aci, objstore.Object{Key: asc.Key, Size: asc.Size + 1, SHA256: asc.SHA256}, nil)
	notServed("a marker lying about the signature's size")
	objstore.WriteMarker(ctx, st, id, objstore.Object{Key: aci.Key, Size: aci.Size, SHA256: asc.SHA256}, asc, nil)
	notServed("a marker lying about the image's digest")
	st.Put(ctx, objstore.MarkerKey(key), []byte(`{"nix2aci-marker":1,"aci":{"key":"../../etc/passwd"}}`), "application/json", objstore.Cond{})
	notServed("a marker naming another object")
	// An app's marker names its layers: each must be complete too, with
	// the image ID the app's marker names, and an image of this tree.
	u2 := e.url("127.0.0.1/tiny-layer", "aci")
	key2 := "acis/" + strings.TrimPrefix(u2, e.base+"/")
	id2 := "sha512-" + strings.Repeat("ef", 32)
	objstore.WriteMarker(ctx, st, id, aci, asc, []objstore.Dep{{Key: key2, ImageID: id2}})
	notServed("a layer not in the store")
	key3 := strings.Replace(key2, "tiny-layer", "tiny-other", 1)
	aci3, _ := st.PutFile(ctx, key3, filepath.Join(dir, "aci"), "application/octet-stream")
	asc3, _ := st.PutFile(ctx, key3+".asc", filepath.Join(dir, "asc"), "application/pgp-signature")
	if err := objstore.WriteMarker(ctx, st, id, aci3, asc3, nil); err != nil {
		t.Fatal(err)
	}
	objstore.WriteMarker(ctx, st, id, aci, asc, []objstore.Dep{{Key: key3, ImageID: id2}})
	notServed("a layer that is another image than the app's marker names")
	objstore.WriteMarker(ctx, st, id, aci, asc, []objstore.Dep{{Key: "elsewhere/x.aci", ImageID: id2}})
	notServed("a layer outside the tree")
	aci2, _ := st.PutFile(ctx, key2, filepath.Join(dir, "aci"), "application/octet-stream")
	asc2, _ := st.PutFile(ctx, key2+".asc", filepath.Join(dir, "asc"), "application/pgp-signature")
	if err := objstore.WriteMarker(ctx, st, id2, aci2, asc2, nil); err != nil {
		t.Fatal(err)
	}
	if err := objstore.WriteMarker(ctx, st, id, aci, asc, []objstore.Dep{{Key: key2, ImageID: id2}}); err != nil {
		t.Fatal(err)
	}
	for _, x := range []string{u, u + ".asc"} {
		if code, _ := redirectOf(t, x); code != http.StatusTemporaryRedirect {
			t.Fatalf("a complete image on a complete layer: GET %s: %d, want 307", x, code)
		}
	}
	if err := objstore.WriteMarker(ctx, st, id, aci, asc, nil); err != nil {
		t.Fatal(err)
	}
	for _, x := range []string{u, u + ".asc"} {
		if code, _ := redirectOf(t, x); code != http.StatusTemporaryRedirect {
			t.Fatalf("a complete image: GET %s: %d, want 307", x, code)
		}
	}
	if got := mustGet(t, u); string(got) != "an image" {
		t.Fatalf("the redirect led to %q", got)
	}
}

// TestStoreGetsSharedLayers: a second image on a layer the server's tree
// holds already is published without that layer (it is not written
// again), but the store still gets every image the app needs: here the
// layer's objects were lost from the bucket after the first build, and a
// replica with an empty disk still serves the second app and its layer
// from the bucket without building.
func TestStoreGetsSharedLayers(t *testing.T) {
	g := objstoretest.Start(t)
	st := g.Bucket(t, "images", objstore.S3Options{Expiry: 5 * time.Minute})
	e := start(t, func(o *serve.Options) { o.Store = st })
	mustGet(t, e.url("127.0.0.1/busybox", "aci"))
	ctx := context.Background()
	layers, _ := filepath.Glob(filepath.Join(e.data, "acis", "127.0.0.1", "nix", "busybox-*.aci"))
	if len(layers) != 1 {
		t.Fatalf("busybox's layer in the tree: %v", layers)
	}
	key := "acis/127.0.0.1/nix/" + filepath.Base(layers[0])
	for _, k := range []string{objstore.MarkerKey(key), key + ".asc", key} {
		if err := st.Delete(ctx, k, objstore.Cond{}); err != nil {
			t.Fatal(err)
		}
	}
	mustGet(t, e.url("127.0.0.1/busybox-static/busybox", "aci"))
	if n := e.reused.Load(); n < 1 {
		t.Fatalf("%d layers reused, want busybox's", n)
	}
	if _, err := objstore.Complete(ctx, st, key); err != nil {
		t.Fatalf("the shared layer is not complete in the bucket: %v", err)
	}
	e2 := start(t, func(o *serve.Options) { o.Store = st; o.Key = e.key })
	e2.key = e.key
	dir := t.TempDir()
	labels := map[types.ACIdentifier]string{"version": version, "os": "linux", "arch": "amd64"}
	img := fetch(t, e2, "127.0.0.1/busybox-static/busybox", labels, trustFromDiscovery(t, e2, "127.0.0.1"), dir, "")
	if got := run(t, dir, img, "echo", "shared"); got != "shared" {
		t.Fatalf("the app said %q", got)
	}
	if n := e2.built.Load(); n != 0 {
		t.Fatalf("the replica with an empty disk built %d images, want 0", n)
	}
}

// TestStoreNoticesRemovedObjects: objects removed from the bucket after
// the server found their image complete (a lifecycle rule expiring old
// objects, here a shared layer's image and signature) are noticed once
// the server asks the bucket again: the app is built again, the layer
// uploaded again, and the app fetches, verifies and runs whole.
func TestStoreNoticesRemovedObjects(t *testing.T) {
	serve.SetStoredFor(t, 300*time.Millisecond)
	g := objstoretest.Start(t)
	st := g.Bucket(t, "images", objstore.S3Options{})
	e := start(t, func(o *serve.Options) { o.Store = st })
	app := e.url("127.0.0.1/busybox", "aci")
	mustGet(t, app)
	ctx := context.Background()
	layers, _ := filepath.Glob(filepath.Join(e.data, "acis", "127.0.0.1", "nix", "busybox-*.aci"))
	if len(layers) != 1 {
		t.Fatalf("busybox's layer in the tree: %v", layers)
	}
	key := "acis/127.0.0.1/nix/" + filepath.Base(layers[0])
	for _, k := range []string{key + ".asc", key} {
		if err := st.Delete(ctx, k, objstore.Cond{}); err != nil {
			t.Fatal(err)
		}
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if resp, err := http.Get(app); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		if _, err := objstore.Complete(ctx, st, key); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the layer removed from the bucket was not uploaded again within 30 s of requests for its app")
		}
	}
	if n := e.built.Load(); n != 2 {
		t.Fatalf("%d builds, want 2 (the app again, once its layer was found missing)", n)
	}
	dir := t.TempDir()
	labels := map[types.ACIdentifier]string{"version": version, "os": "linux", "arch": "amd64"}
	img := fetch(t, e, "127.0.0.1/busybox", labels, trustFromDiscovery(t, e, "127.0.0.1"), dir, "")
	if got := run(t, dir, img, "echo", "whole again"); got != "whole again" {
		t.Fatalf("the app said %q", got)
	}
}
