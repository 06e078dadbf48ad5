package publish_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/appc/spec/discovery"
	"github.com/appc/spec/schema"
	"github.com/appc/spec/schema/types"

	"github.com/nix2aci/nix2aci/aci"
	"github.com/nix2aci/nix2aci/internal/testsupport"
	"github.com/nix2aci/nix2aci/internal/testsupport/rktfetch"
	"github.com/nix2aci/nix2aci/internal/testsupport/testkey"
	"github.com/nix2aci/nix2aci/manifest"
	"github.com/nix2aci/nix2aci/pipeline"
	"github.com/nix2aci/nix2aci/publish"
	"github.com/nix2aci/nix2aci/sign"
)

// server serves dir on a loopback port of its own, as a static web server
// or object store would.
func server(t *testing.T, dir string) (base string, port uint) {
	srv := httptest.NewServer(http.FileServer(http.Dir(dir)))
	t.Cleanup(srv.Close)
	_, p, _ := net.SplitHostPort(strings.TrimPrefix(srv.URL, "http://"))
	n, _ := strconv.Atoi(p)
	return srv.URL, uint(n)
}

func build(t *testing.T, app, out string, signer *pipeline.Signer) *pipeline.Result {
	t.Helper()
	return buildNamed(t, app, "127.0.0.1/"+app, out, signer)
}

// buildNamed builds testdata/APP.nix layered as name into out.
func buildNamed(t *testing.T, app, name, out string, signer *pipeline.Signer) *pipeline.Result {
	t.Helper()
	if _, err := exec.LookPath("nix-build"); err != nil {
		t.Fatal("nix-build not found: run the tests with scripts/test, which installs what they need")
	}
	target, _ := filepath.Abs(filepath.Join("testdata", app+".nix"))
	res, err := pipeline.Build(context.Background(), pipeline.Request{Target: target, Kind: pipeline.Layered, Name: name, OutDir: out, Signer: signer})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// keyOf is the publisher's key (made once per test process).
func keyOf(t *testing.T) *openpgp.Entity {
	return testkey.Key(t, sign.KeyOptions{Name: "Publisher", Email: "pub@example.com"})
}

// otherKey is a second key: what keyOf's published key must refuse.
func otherKey(t *testing.T) *openpgp.Entity {
	return testkey.Key(t, sign.KeyOptions{Name: "Stranger", Email: "stranger@example.com"})
}

func TestPublishedTreeIsDiscoverable(t *testing.T) {
	work := t.TempDir()
	site := filepath.Join(work, "site")
	os.MkdirAll(site, 0o755)
	baseURL, port := server(t, site)
	key := keyOf(t)

	// Built unsigned, signed while published.
	out1 := filepath.Join(work, "out1")
	res := build(t, "app1", out1, nil)
	rep, err := publish.Publish(context.Background(), mustExpand(t, out1), publish.Options{Site: site, BaseURL: baseURL + "/acis", Key: key})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Images) != 1+len(res.Layers) || len(rep.Prefixes) != 1 || rep.Prefixes[0] != "127.0.0.1" {
		t.Fatalf("published %+v", rep)
	}

	// rkt trust --prefix: the key is found by discovery.
	app, _ := discovery.NewAppFromString("127.0.0.1/app1")
	keys, _, err := discovery.DiscoverPublicKeys(*app, nil, discovery.InsecureHTTP, port)
	if err != nil || len(keys) != 1 {
		t.Fatalf("public keys: %v %v", keys, err)
	}
	found, err := sign.ReadKey(bytes.NewReader(testsupport.Get(t, keys[0])))
	if err != nil || sign.Fingerprint(found) != sign.Fingerprint(key) {
		t.Fatalf("discovered key: %v", err)
	}
	trust := sign.NewTrust()
	trust.AddPrefix("127.0.0.1", found)

	// rkt fetch 127.0.0.1/app1:1.0, with its layers.
	got := filepath.Join(work, "fetched")
	os.MkdirAll(got, 0o755)
	rktfetch.Fetch(t, port, "127.0.0.1/app1", map[types.ACIdentifier]string{"version": "1.0", "os": "linux", "arch": "amd64"}, trust, got, "")
	ents, _ := os.ReadDir(got)
	if len(ents) != 3 {
		t.Errorf("fetched %d images, want the app and 2 layers", len(ents))
	}
	// Rendered as rkt renders them, they run.
	runApp(t, got, filepath.Join(got, "app1-1.0-linux-amd64.aci"), "app1 1.0 reads: foo data")

	// Publishing again adds: app2, built and signed elsewhere, published
	// with the public key only; app1 stays as it was.
	out2 := filepath.Join(work, "out2")
	build(t, "app2", out2, pipeline.KeySigner(key))
	if _, err := publish.Publish(context.Background(), mustExpand(t, out2), publish.Options{Site: site, BaseURL: baseURL + "/acis", PublicKey: found}); err != nil {
		t.Fatal(err)
	}
	got2 := filepath.Join(work, "fetched2")
	os.MkdirAll(got2, 0o755)
	rktfetch.Fetch(t, port, "127.0.0.1/app2", map[types.ACIdentifier]string{"version": "1.0", "os": "linux", "arch": "amd64"}, trust, got2, "")
	rktfetch.Fetch(t, port, "127.0.0.1/app1", map[types.ACIdentifier]string{"version": "1.0", "os": "linux", "arch": "amd64"}, trust, got2, "")
	page := string(testsupport.Get(t, baseURL+"/"))
	for _, want := range []string{"127.0.0.1/app1:1.0", "127.0.0.1/app2:1.0", `name="ac-discovery-pubkeys"`} {
		if !strings.Contains(page, want) {
			t.Errorf("index.html lacks %s", want)
		}
	}
}

func runApp(t *testing.T, deps, image, want string) {
	t.Helper()
	run, _ := filepath.Abs("../scripts/bwrap-run")
	out, err := exec.Command(run, "--deps", deps, image).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != want {
		t.Fatalf("running %s: %v\n%s", image, err, out)
	}
}

func mustExpand(t *testing.T, args ...string) []string {
	imgs, err := publish.Expand(args)
	if err != nil {
		t.Fatal(err)
	}
	return imgs
}

// unsignedApp1 builds app1 layered and unsigned in a new work directory,
// and returns that directory, a key and the images.
func unsignedApp1(t *testing.T) (work string, key *openpgp.Entity, imgs []string) {
	work = t.TempDir()
	out := filepath.Join(work, "out")
	build(t, "app1", out, nil)
	return work, keyOf(t), mustExpand(t, out)
}

// Bad requests fail before anything is written.
func TestPublishRefuses(t *testing.T) {
	work, key, imgs := unsignedApp1(t)
	for _, tc := range []struct {
		name, base string
		o          func(*publish.Options)
		want       string
	}{
		{"ftp base URL", "ftp://example.com/acis", nil, "not an http(s) URL"},
		{"query", "https://example.com/acis?x=1", nil, "has a query"},
		{"dot-dot", "https://example.com/a/../acis", nil, "not canonical"},
		{"a quote in the host", `https://local"host/acis`, nil, "neither a DNS name"},
		{"an underscore in the host", "https://a_b.example.com/acis", nil, "neither a DNS name"},
		{"a numeric host", "https://127.1/acis", nil, "neither a DNS name"},
		{"a hex host", "https://0x7f/acis", nil, "neither a DNS name"},
		{"a zone", "https://[fe80::1%25eth0]/acis", nil, "not an IPv6 address"},
		{"port 99999", "https://example.com:99999/acis", nil, "give a number from 1 to 65535"},
		{"port 0", "https://example.com:0/acis", nil, "give a number from 1 to 65535"},
		{"port 080", "https://example.com:080/acis", nil, "give a number from 1 to 65535"},
		{"an empty port", "https://example.com:/acis", nil, "not HOST or HOST:PORT"},
		{"an escaped path", "https://example.com/a%2e/acis", nil, "a URL escapes or a server decodes"},
		{"a space in the path", "https://example.com/a%20b", nil, "a URL escapes or a server decodes"},
		{"a plus in the path", "https://example.com/a+b", nil, "cannot be a directory of the tree"},
		{"an empty query", "https://example.com/acis?", nil, "has a query"},
		{"no key", "https://example.com/acis", func(o *publish.Options) { o.Key = nil }, "needs the key rkt will trust"},
		{"unsigned with a public key only", "https://example.com/acis", func(o *publish.Options) { o.Key, o.PublicKey = nil, key }, "is not signed"},
	} {
		site := filepath.Join(work, "site-"+strings.ReplaceAll(tc.name, " ", "-"))
		o := publish.Options{Site: site, BaseURL: tc.base, Key: key}
		if tc.o != nil {
			tc.o(&o)
		}
		_, err := publish.Publish(context.Background(), imgs, o)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v; want %q", tc.name, err, tc.want)
		}
		if ents, _ := os.ReadDir(site); len(ents) != 0 {
			t.Errorf("%s: the site holds %d files", tc.name, len(ents))
		}
	}
	// A signature that does not verify with the published key.
	other := otherKey(t)
	signed := filepath.Join(work, "signed")
	build(t, "app1", signed, pipeline.KeySigner(other))
	_, err := publish.Publish(context.Background(), mustExpand(t, signed), publish.Options{Site: filepath.Join(work, "s2"), BaseURL: "https://example.com/acis", PublicKey: key})
	if err == nil || !strings.Contains(err.Error(), "does not verify with the published key") {
		t.Errorf("a signature by another key: %v", err)
	}
	// An altered image: refused whatever its signature says.
	victim := imgs[0]
	data, _ := os.ReadFile(victim)
	if err := os.WriteFile(victim, append(data, "tail"...), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = publish.Publish(context.Background(), imgs, publish.Options{Site: filepath.Join(work, "s3"), BaseURL: "https://example.com/acis", Key: key})
	if !aci.IsInvalid(err) {
		t.Errorf("an altered image: %v", err)
	}
	// A site that publishes the prefix elsewhere already.
	site := filepath.Join(work, "s4")
	imgs = mustExpand(t, filepath.Join(work, "signed"))
	if _, err := publish.Publish(context.Background(), imgs, publish.Options{Site: site, BaseURL: "https://example.com/acis", Key: key}); err != nil {
		t.Fatal(err)
	}
	_, err = publish.Publish(context.Background(), imgs, publish.Options{Site: site, BaseURL: "https://example.com/other", Key: key})
	if err == nil || !strings.Contains(err.Error(), "publishes 127.0.0.1 at https://example.com/acis/") {
		t.Errorf("another base URL for one prefix: %v", err)
	}
	// A dependency in the tree with other bytes than the app pins.
	var layers []string
	var libfoo string
	for _, f := range imgs {
		switch {
		case strings.Contains(filepath.Base(f), "_libfoo-"):
			libfoo = filepath.Join(work, "changed", filepath.Base(f))
			annotate(t, f, libfoo)
			layers = append(layers, libfoo)
		case strings.Contains(filepath.Base(f), "_nix_"):
			layers = append(layers, f)
		}
	}
	changed, err := aci.InspectFile(libfoo)
	if err != nil {
		t.Fatal(err)
	}
	site = filepath.Join(work, "s5")
	if _, err := publish.Publish(context.Background(), layers, publish.Options{Site: site, BaseURL: "https://example.com/acis", Key: key}); err != nil {
		t.Fatal(err)
	}
	app := filepath.Join(work, "signed", "app1-1.0-linux-amd64.aci")
	_, err = publish.Publish(context.Background(), []string{app}, publish.Options{Site: site, BaseURL: "https://example.com/acis", Key: key})
	if err == nil || !strings.Contains(err.Error(), "but the one published has "+changed.ImageID) {
		t.Errorf("a dependency with another image ID: %v", err)
	}
	// An unwritable site (as root, a path under a file).
	os.WriteFile(filepath.Join(work, "file"), nil, 0o644)
	_, err = publish.Publish(context.Background(), imgs, publish.Options{Site: filepath.Join(work, "file", "site"), BaseURL: "https://example.com/acis", Key: key})
	if err == nil || !strings.Contains(err.Error(), "creating the site") {
		t.Errorf("an unwritable site: %v", err)
	}
}

// The site's record is input too: damaged, hostile or not a file, it is
// an error naming it, at once, and nothing is written.
func TestSiteRecordIsUntrusted(t *testing.T) {
	work, key, imgs := unsignedApp1(t)
	for _, tc := range []struct {
		name  string
		write func(string) error
		want  string
	}{
		{"damaged", func(p string) error { return os.WriteFile(p, []byte("{"), 0o644) }, "is damaged"},
		{"huge", func(p string) error { return os.WriteFile(p, bytes.Repeat([]byte(" "), 16<<20+1), 0o644) }, "is damaged"},
		{"path outside", func(p string) error {
			return os.WriteFile(p, []byte(`{"images":{"../../etc/x.aci":{}}}`), 0o644)
		}, "is damaged"},
		{"bad prefix", func(p string) error { return os.WriteFile(p, []byte(`{"prefixes":{"../x":{}}}`), 0o644) }, "not an AC Identifier"},
		{"fifo", func(p string) error { return syscall.Mkfifo(p, 0o644) }, "not a regular file"},
		{"directory", func(p string) error { return os.Mkdir(p, 0o755) }, "not a regular file"},
	} {
		site := filepath.Join(work, "site-"+strings.ReplaceAll(tc.name, " ", "-"))
		os.MkdirAll(site, 0o755)
		if err := tc.write(filepath.Join(site, ".nix2aci-site.json")); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() {
			_, err := publish.Publish(context.Background(), imgs, publish.Options{Site: site, BaseURL: "https://example.com/acis", Key: key})
			done <- err
		}()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s: %v; want %q", tc.name, err, tc.want)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("%s: publish hangs", tc.name)
		}
		if ents, _ := os.ReadDir(site); len(ents) != 1 {
			t.Errorf("%s: the site holds %d entries", tc.name, len(ents))
		}
	}
}

// A published version keeps its bytes: an image with the same name,
// version, os and arch but another image ID is refused, unless Replace;
// and even then not while another published image pins the old one by
// its ID, unless that one is published again too.
func TestRepublishingOtherContents(t *testing.T) {
	work, key, imgs := unsignedApp1(t)
	site := filepath.Join(work, "site")
	o := publish.Options{Site: site, BaseURL: "https://example.com/acis", Key: key}
	first, err := publish.Publish(context.Background(), imgs, o)
	if err != nil {
		t.Fatal(err)
	}
	var oldApp publish.Published
	for _, p := range first.Images {
		if p.Name == "127.0.0.1/app1" {
			oldApp = p
		}
	}
	if len(oldApp.Depends) != len(first.Images)-1 {
		t.Fatalf("the app's record pins %d layers, want %d", len(oldApp.Depends), len(first.Images)-1)
	}

	// The same app, version 1.0, with another environment.
	target, _ := filepath.Abs(filepath.Join("testdata", "app1.nix"))
	other := filepath.Join(work, "other")
	res, err := pipeline.Build(context.Background(), pipeline.Request{Target: target, Kind: pipeline.Layered, Name: "127.0.0.1/app1", OutDir: other,
		Overrides: manifest.Overrides{Env: map[string]string{"CHANGED": "1"}}})
	if err != nil {
		t.Fatal(err)
	}
	newApp := []string{res.ACI}
	published := filepath.Join(site, filepath.FromSlash(oldApp.Path))
	// Both at once, into a new site: one would silently win.
	var oldAppFile string
	for _, f := range imgs {
		if strings.HasPrefix(filepath.Base(f), "app1-") {
			oldAppFile = f
		}
	}
	_, err = publish.Publish(context.Background(), append(append([]string(nil), imgs...), res.ACI), publish.Options{Site: filepath.Join(work, "both"), BaseURL: o.BaseURL, Key: key})
	if err == nil || !strings.Contains(err.Error(), "two of the images are 127.0.0.1/app1") {
		t.Fatalf("two contents for one version in one publish (%s and %s): %v", oldAppFile, res.ACI, err)
	}
	before, _ := os.ReadFile(published)
	_, err = publish.Publish(context.Background(), newApp, o)
	if err == nil || !strings.Contains(err.Error(), "published already with image ID "+oldApp.ImageID) || !strings.Contains(err.Error(), "--replace") {
		t.Fatalf("other contents under a published version: %v", err)
	}
	if after, _ := os.ReadFile(published); !bytes.Equal(before, after) {
		t.Fatal("the refused publish changed the published image")
	}

	// With Replace: nothing pins the app, so it is replaced.
	o.Replace = true
	if _, err := publish.Publish(context.Background(), newApp, o); err != nil {
		t.Fatalf("replacing with --replace: %v", err)
	}
	if info, err := aci.InspectFile(published); err != nil || info.ImageID != res.ImageID {
		t.Fatalf("the site serves %v (%v), want %s", info, err, res.ImageID)
	}

	// A layer with other contents under its name and version: the app
	// the site serves pins the old one, so even Replace refuses.
	var layer publish.Published
	for _, p := range first.Images {
		if p.Name != oldApp.Name {
			layer = p
		}
	}
	var layerFile string
	for _, f := range imgs {
		if strings.HasSuffix(filepath.Base(f), "_"+filepath.Base(layer.Path)) {
			layerFile = f
		}
	}
	changed := filepath.Join(work, "changed", filepath.Base(layerFile))
	annotate(t, layerFile, changed)
	_, err = publish.Publish(context.Background(), []string{changed}, o)
	if err == nil || !strings.Contains(err.Error(), "127.0.0.1/app1 version 1.0 (linux/amd64) pins "+layer.Name) {
		t.Fatalf("replacing a pinned layer: %v", err)
	}

	// The record lost: the file the site serves still says what is
	// published there.
	state := filepath.Join(site, ".nix2aci-site.json")
	os.Remove(state)
	_, err = publish.Publish(context.Background(), imgs, publish.Options{Site: site, BaseURL: o.BaseURL, Key: key})
	if err == nil || !strings.Contains(err.Error(), "published already with image ID "+res.ImageID) {
		t.Fatalf("other contents, the record lost: %v", err)
	}
	if _, err := publish.Publish(context.Background(), imgs, o); err != nil {
		t.Fatal(err)
	}

	// A record whose IDs are not image IDs is refused.
	raw, _ := os.ReadFile(state)
	os.WriteFile(state, bytes.Replace(raw, []byte(`"imageID": "sha512-`), []byte(`"imageID": "../x-`), 1), 0o644)
	if _, err := publish.Publish(context.Background(), newApp, o); err == nil || !strings.Contains(err.Error(), "not one") {
		t.Errorf("a record with a bad image ID: %v", err)
	}
}

// annotate copies the image src to dst with an annotation added to its
// manifest: the same name and labels, another image ID.
func annotate(t *testing.T, src, dst string) {
	t.Helper()
	rewrite(t, src, dst, func(im *schema.ImageManifest) { im.Annotations.Set("changed", "yes") })
}

// rewrite copies the image src to dst with its manifest changed by edit.
func rewrite(t *testing.T, src, dst string, edit func(*schema.ImageManifest)) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	zr, err := gzip.NewReader(in)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	tr, tw := tar.NewReader(zr), tar.NewWriter(zw)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(tr)
		if h.Name == "manifest" {
			var im schema.ImageManifest
			if err := json.Unmarshal(body, &im); err != nil {
				t.Fatal(err)
			}
			edit(&im)
			body, _ = json.Marshal(im)
			h.Size = int64(len(body))
		}
		tw.WriteHeader(h)
		tw.Write(body)
	}
	tw.Close()
	zw.Close()
	os.MkdirAll(filepath.Dir(dst), 0o755)
	if err := os.WriteFile(dst, out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestImageChangedAfterItsCheckIsRefused: an image (or its signature)
// rewritten between publish's check and its copy into the site is refused,
// signing with a key or verifying a signature made before, and the site
// is left as it was: the copy is proven to hold the bytes checked.
func TestImageChangedAfterItsCheckIsRefused(t *testing.T) {
	work := t.TempDir()
	key := keyOf(t)
	unsigned, signed := filepath.Join(work, "unsigned"), filepath.Join(work, "signed")
	build(t, "app1", unsigned, nil)
	build(t, "app1", signed, pipeline.KeySigner(key))
	for _, tc := range []struct {
		name   string
		dir    string
		o      publish.Options
		change string // the file rewritten after the check
	}{
		{"signing, the image changed", unsigned, publish.Options{Key: key}, ".aci"},
		{"verifying, the image changed", signed, publish.Options{PublicKey: key}, ".aci"},
		{"verifying, the signature changed", signed, publish.Options{PublicKey: key}, ".aci.asc"},
	} {
		imgs := mustExpand(t, tc.dir)
		var app string
		for _, f := range imgs {
			if strings.HasPrefix(filepath.Base(f), "app1-") {
				app = f
			}
		}
		victim := strings.TrimSuffix(app, ".aci") + tc.change
		before := mustRead(t, victim)
		restore := publish.SetCheckedHook(func() {
			b := append([]byte(nil), before...)
			b[len(b)-1] ^= 0x01
			if err := os.WriteFile(victim, b, 0o644); err != nil {
				t.Fatal(err)
			}
		})
		o := tc.o
		o.Site, o.BaseURL = filepath.Join(work, "site"), "https://example.com/acis"
		_, err := publish.Publish(context.Background(), imgs, o)
		restore()
		os.WriteFile(victim, before, 0o644)
		if err == nil || !strings.Contains(err.Error(), "changed while it was being published") {
			t.Errorf("%s: %v", tc.name, err)
		}
		if m, _ := filepath.Glob(filepath.Join(o.Site, "acis", "127.0.0.1", "*")); len(m) != 0 {
			t.Errorf("%s: the site holds %v", tc.name, m)
		}
	}
}
