package serve_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/appc/spec/discovery"
	"github.com/appc/spec/schema/types"

	"github.com/nix2aci/nix2aci/internal/testsupport"
	"github.com/nix2aci/nix2aci/internal/testsupport/rktfetch"
	"github.com/nix2aci/nix2aci/internal/testsupport/testkey"
	"github.com/nix2aci/nix2aci/pipeline"
	"github.com/nix2aci/nix2aci/serve"
	"github.com/nix2aci/nix2aci/sign"
)

const version = "vtest1"

type env struct {
	s     *serve.Server
	srv   *httptest.Server
	port  uint
	base  string // the images' base URL
	data  string
	key   *openpgp.Entity
	built atomic.Int32
	// cached counts the store paths builds took from the cache.
	cached atomic.Int32
	// reused counts the layers builds found written already.
	reused atomic.Int32
}

func start(t *testing.T, edit func(*serve.Options)) *env {
	t.Helper()
	if _, err := exec.LookPath("nix-build"); err != nil {
		t.Fatal("nix-build not found: run the tests with scripts/test, which installs what they need")
	}
	e := &env{data: filepath.Join(t.TempDir(), "data")}
	key := testkey.Key(t, sign.KeyOptions{Name: "Server", Email: "serve@example.com"})
	e.key = key
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, p, _ := net.SplitHostPort(l.Addr().String())
	n, _ := strconv.Atoi(p)
	e.port = uint(n)
	e.base = fmt.Sprintf("http://127.0.0.1:%d/acis", n)
	o := serve.Options{
		Prefix: "127.0.0.1", BaseURL: e.base, Key: key, Data: e.data, Version: version,
		Build: func(ctx context.Context, r pipeline.Request) (*pipeline.Result, error) {
			e.built.Add(1)
			res, err := pipeline.Build(ctx, r)
			if err == nil {
				e.cached.Add(int32(res.CachedPaths))
				for _, l := range res.Layers {
					if l.Reused {
						e.reused.Add(1)
					}
				}
			}
			return res, err
		},
	}
	if edit != nil {
		edit(&o)
	}
	s, err := serve.New(o)
	if err != nil {
		t.Fatal(err)
	}
	e.s = s
	e.srv = httptest.NewUnstartedServer(s)
	e.srv.Listener.Close()
	e.srv.Listener = l
	e.srv.Start()
	t.Cleanup(func() { e.srv.Close(); s.Close() })
	return e
}

func (e *env) url(name, ext string) string {
	host, last, _ := strings.Cut(name, "/")
	_ = host
	return e.base + "/" + name[:len(name)-len(last)] + last + "-" + version + "-linux-amd64." + ext
}

// get is a GET with the headers hdr (name, value, ...), returning the
// response and its body; failing to get them is fatal.
func get(t *testing.T, url string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	resp, b, err := request(url, hdr...)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// request is get for a goroutine other than the test's, which must not
// call t.Fatal: it returns the error.
func request(url string, hdr ...string) (*http.Response, []byte, error) {
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		return nil, nil, err
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return nil, nil, err
	}
	return resp, b, nil
}

// mustGet is a GET that must answer 200 OK.
var mustGet = testsupport.Get

// fetch does what rkt fetch NAME[:VERSION] does from e, with appc's
// discovery client (rktfetch.Fetch), the files into dir.
func fetch(t *testing.T, e *env, name string, labels map[types.ACIdentifier]string, trust *sign.Trust, dir, pinned string) string {
	t.Helper()
	return rktfetch.Fetch(t, e.port, name, labels, trust, dir, pinned)
}

func run(t *testing.T, deps, image string, args ...string) string {
	t.Helper()
	script, _ := filepath.Abs("../scripts/bwrap-run")
	out, err := exec.Command(script, append([]string{"--deps", deps, image}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("running %s: %v\n%s", image, err, out)
	}
	return strings.TrimSpace(string(out))
}

// trustFromDiscovery is rkt trust --prefix: the key discovery names.
func trustFromDiscovery(t *testing.T, e *env, prefix string) *sign.Trust {
	t.Helper()
	app, _ := discovery.NewApp(prefix, nil)
	keys, attempts, err := discovery.DiscoverPublicKeys(*app, nil, discovery.InsecureHTTP, e.port)
	if err != nil || len(keys) != 1 {
		t.Fatalf("discovering the keys of %s: %v %v %v", prefix, keys, err, attempts)
	}
	k, err := sign.ReadKey(bytes.NewReader(mustGet(t, keys[0])))
	if err != nil {
		t.Fatal(err)
	}
	if sign.Fingerprint(k) != sign.Fingerprint(e.key) {
		t.Fatalf("discovery gave the key %s, the server signs with %s", sign.Fingerprint(k), sign.Fingerprint(e.key))
	}
	trust := sign.NewTrust()
	trust.AddPrefix(prefix, k)
	return trust
}

// TestDiscoverFetchVerifyRun: rkt trust --prefix, rkt fetch NAME:VERSION
// of an image not built yet, every signature verified, the app run on its
// layers; then the same from a static copy of the data directory.
func TestDiscoverFetchVerifyRun(t *testing.T) {
	e := start(t, nil)
	trust := trustFromDiscovery(t, e, "127.0.0.1")
	dir := t.TempDir()
	img := fetch(t, e, "127.0.0.1/busybox", map[types.ACIdentifier]string{"version": version, "os": "linux", "arch": "amd64"}, trust, dir, "")
	if got := run(t, dir, img, "echo", "served"); got != "served" {
		t.Fatalf("the app said %q", got)
	}
	if got := run(t, dir, img, "cat", "/etc/ssl/certs/ca-certificates.crt"); !strings.Contains(got, "BEGIN CERTIFICATE") {
		t.Fatalf("no CA certificates in the image: %q", got)
	}
	if n := e.built.Load(); n != 1 {
		t.Fatalf("%d builds, want 1", n)
	}

	// Again, and as latest: from disk, no build; an ETag, and 304 for it.
	resp, body := get(t, e.url("127.0.0.1/busybox", "aci"))
	tag := resp.Header.Get("ETag")
	if resp.StatusCode != 200 || tag == "" {
		t.Fatalf("second GET: %s, ETag %q", resp.Status, tag)
	}
	resp, _ = get(t, e.url("127.0.0.1/busybox", "aci"), "If-None-Match", tag)
	if resp.StatusCode != http.StatusNotModified {
		t.Fatalf("GET with If-None-Match of its ETag: %s, want 304", resp.Status)
	}
	latest := mustGet(t, strings.Replace(e.url("127.0.0.1/busybox", "aci"), version, "latest", 1))
	if !bytes.Equal(latest, body) {
		t.Fatal("latest is not the current version's image")
	}
	if n := e.built.Load(); n != 1 {
		t.Fatalf("%d builds after serving from disk, want 1", n)
	}

	// The data directory is a publish tree: served statically, the same
	// fetch works without the server.
	static := httptest.NewUnstartedServer(http.FileServer(http.Dir(e.data)))
	static.Listener.Close()
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", e.port))
	e.srv.Close()
	if err != nil {
		l, err = net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", e.port))
		if err != nil {
			t.Fatal(err)
		}
	}
	static.Listener = l
	static.Start()
	defer static.Close()
	dir2 := t.TempDir()
	img2 := fetch(t, e, "127.0.0.1/busybox", map[types.ACIdentifier]string{"version": version, "os": "linux", "arch": "amd64"}, trust, dir2, "")
	if got := run(t, dir2, img2, "echo", "static"); got != "static" {
		t.Fatalf("the app said %q", got)
	}
}

// TestImagesShareLayers: images of other names on the same packages are
// published beside the first, on its layers (publishing them again is
// accepted, as the same images), in any order of the packages; each runs.
func TestImagesShareLayers(t *testing.T) {
	e := start(t, nil)
	trust := trustFromDiscovery(t, e, "127.0.0.1")
	labels := map[types.ACIdentifier]string{"version": version, "os": "linux", "arch": "amd64"}
	stamps := func() map[string]string {
		m := map[string]string{}
		files, _ := filepath.Glob(filepath.Join(e.data, "acis", "127.0.0.1", "nix", "*"))
		for _, f := range files {
			fi, err := os.Stat(f)
			if err != nil {
				t.Fatal(err)
			}
			m[f] = fmt.Sprint(fi.Sys().(*syscall.Stat_t).Ino, fi.ModTime().UnixNano())
		}
		return m
	}
	var first map[string]string
	for _, name := range []string{"127.0.0.1/busybox", "127.0.0.1/busybox-static/busybox", "127.0.0.1/busybox/busybox-static"} {
		dir := t.TempDir()
		img := fetch(t, e, name, labels, trust, dir, "")
		if got := run(t, dir, img, "echo", name); got != name {
			t.Fatalf("%s said %q", name, got)
		}
		if first == nil {
			first = stamps()
		}
	}
	if n := e.built.Load(); n != 3 {
		t.Fatalf("%d builds for 3 names, want 3", n)
	}
	// Only the new images are built and published: the later builds
	// find the shared layers written already (busybox and the CA
	// certificates), and the tree's copies are left as they were.
	if n := e.reused.Load(); n < 2 {
		t.Fatalf("%d layers reused by the second and third builds, want at least 2", n)
	}
	// The build directory keeps layers only: no app files, no GC roots
	// (serve needs none: its images are in the tree).
	left, _ := filepath.Glob(filepath.Join(e.data, ".nix2aci-serve", "out", "*"))
	for _, f := range left {
		if b := filepath.Base(f); !strings.Contains(b, "_nix_") && b != ".nix2aci-layers.json" {
			t.Errorf("the build directory keeps %s", filepath.Base(f))
		}
	}
	after := stamps()
	for f, st := range first {
		if after[f] != st {
			t.Errorf("the layer %s was written again by a later build", f)
		}
	}
	layers, _ := filepath.Glob(filepath.Join(e.data, "acis", "127.0.0.1", "nix", "*.aci"))
	if len(layers) == 0 {
		out, _ := exec.Command("find", e.data, "-name", "*.aci").CombinedOutput()
		t.Fatalf("no layers published: %s", out)
	}
	t.Logf("%d layers shared by 3 apps", len(layers))
}

// TestImagesSurviveRestart: a server started again on the same data
// directory and version serves the images built before, byte for byte,
// without building.
func TestImagesSurviveRestart(t *testing.T) {
	e := start(t, nil)
	url := e.url("127.0.0.1/busybox", "aci")
	first, sig := mustGet(t, url), mustGet(t, url+".asc")
	e.srv.Close()
	e.s.Close()
	e2 := start(t, func(o *serve.Options) { o.Data = e.data; o.Key = e.key })
	url2 := e2.url("127.0.0.1/busybox", "aci")
	if again := mustGet(t, url2); !bytes.Equal(again, first) {
		t.Fatal("the image served after a restart is not the one built before")
	}
	if again := mustGet(t, url2+".asc"); !bytes.Equal(again, sig) {
		t.Fatal("the signature served after a restart is not the one made before")
	}
	if n := e2.built.Load(); n != 0 {
		t.Fatalf("%d builds after a restart, want 0", n)
	}
}

// TestMaxDiskCollectsLeastRecentlyUsed: past MaxDisk, the least recently
// used app is removed whole after a build, the layers another app needs
// stay, the app left still fetches and runs, and the removed one is
// built again when asked for.
func TestMaxDiskCollectsLeastRecentlyUsed(t *testing.T) {
	pkgsDir, _ := filepath.Abs("testdata")
	e := start(t, func(o *serve.Options) { o.MaxDisk = 1; o.Recipes = pkgsDir })
	a, b := e.url("127.0.0.1/busybox", "aci"), e.url("127.0.0.1/busybox-static", "aci")
	// An app whose own layer no other app needs: removed with it.
	mustGet(t, e.url("127.0.0.1/tiny", "aci"))
	if m, _ := filepath.Glob(filepath.Join(e.data, "acis", "127.0.0.1", "nix", "tiny-1-*.aci")); len(m) != 1 {
		t.Fatalf("tiny's layer: %v", m)
	}
	mustGet(t, a)
	if m, _ := filepath.Glob(filepath.Join(e.data, "acis", "127.0.0.1", "nix", "tiny-1-*")); len(m) != 0 {
		t.Fatalf("the layer of the app removed is still there: %v", m)
	}
	mustGet(t, b)
	local := func(u string) string {
		return filepath.Join(e.data, "acis", filepath.FromSlash(strings.TrimPrefix(u, e.base+"/")))
	}
	for _, f := range []string{local(a), local(a) + ".asc"} {
		if _, err := os.Stat(f); err == nil {
			t.Errorf("%s is still there past MaxDisk", f)
		}
	}
	if _, err := os.Stat(local(b) + ".asc"); err != nil {
		t.Errorf("the app just built was removed: %v", err)
	}
	trust := trustFromDiscovery(t, e, "127.0.0.1")
	dir := t.TempDir()
	img := fetch(t, e, "127.0.0.1/busybox-static", map[types.ACIdentifier]string{"version": version, "os": "linux", "arch": "amd64"}, trust, dir, "")
	if got := run(t, dir, img, "echo", "kept"); got != "kept" {
		t.Fatalf("the app left said %q", got)
	}
	mustGet(t, a)
	if n := e.built.Load(); n != 4 {
		t.Fatalf("%d builds, want 4: the removed app built again", n)
	}
}
