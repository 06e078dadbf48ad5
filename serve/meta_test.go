package serve_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/appc/spec/aci"
	"github.com/appc/spec/schema"
	"github.com/appc/spec/schema/types"

	"github.com/nix2aci/nix2aci/pkgs"
	"github.com/nix2aci/nix2aci/serve"
)

// manifestOf reads the manifest of an image file with appc's reader.
func manifestOf(t *testing.T, file string) *schema.ImageManifest {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := aci.ManifestFromImage(f)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return m
}

func annotation(m *schema.ImageManifest, name string) string {
	v, _ := m.Annotations.Get(name)
	return v
}

// fileURL is the URL of NAME's image for arch.
func (e *env) fileURL(name, arch string) string {
	return e.base + "/" + name + "-" + version + "-linux-" + arch + ".aci"
}

// TestMetaNames: shell at the front of a name adds a shell (busybox from
// the offline set) and is the image's exec alone; a meta name after a
// package, or a system asked for with another system's file, is refused
// with a 4xx that says what to ask for; a system the server cannot build
// for is refused before anything is built.
func TestMetaNames(t *testing.T) {
	recipes, _ := filepath.Abs("testdata")
	e := start(t, func(o *serve.Options) { o.Source = "the offline set, in a test"; o.Recipes = recipes })
	trust := trustFromDiscovery(t, e, "127.0.0.1")
	amd64 := map[types.ACIdentifier]string{"version": version, "os": "linux", "arch": "amd64"}

	dir := t.TempDir()
	img := fetch(t, e, "127.0.0.1/shell", amd64, trust, dir, "")
	if got := run(t, dir, img, "-c", "echo a shell; ls /bin/sh"); got != "a shell\n/bin/sh" {
		t.Fatalf("the shell image said %q", got)
	}
	m := manifestOf(t, img)
	if m.App == nil || strings.Join(m.App.Exec, " ") != "/bin/sh" {
		t.Fatalf("the shell image's exec: %+v", m.App)
	}
	if got := annotation(m, "nix2aci.io/package-set"); got != "the offline set, in a test" {
		t.Fatalf("the package-set annotation is %q", got)
	}

	// shell with a package: the package's exec, a shell beside it.
	dir = t.TempDir()
	img = fetch(t, e, "127.0.0.1/shell/tiny", amd64, trust, dir, "")
	if m := manifestOf(t, img); m.App == nil || m.App.Exec[0] != "/bin/tiny" {
		t.Fatalf("shell/tiny's exec: %+v", m.App)
	}

	for _, c := range []struct {
		url, want string
		status    int
	}{
		{e.fileURL("127.0.0.1/busybox/shell", "amd64"), "comes first", 400},
		{e.fileURL("127.0.0.1/shell/shell", "amd64"), "twice", 400},
		{e.fileURL("127.0.0.1/arm64/amd64/busybox", "aarch64"), "two systems", 400},
		{e.fileURL("127.0.0.1/arm64/busybox", "amd64"), "busybox-" + version + "-linux-aarch64", 404},
		{e.fileURL("127.0.0.1/arm64/busybox", "aarch64"), "builds for x86_64-linux only", 422},
		{e.fileURL("127.0.0.1/busybox", "s390x"), "nix2aci builds linux images for", 404},
		{e.fileURL("127.0.0.1/arm64", "aarch64"), "names no package", 404},
	} {
		resp, body := get(t, c.url)
		if resp.StatusCode != c.status || !strings.Contains(string(body), c.want) {
			t.Errorf("GET %s: %s %q, want %d saying %q", c.url, resp.Status, body, c.status, c.want)
		}
	}
	if n := e.built.Load(); n != 2 {
		t.Fatalf("%d builds, want 2: refused names build nothing", n)
	}

	// A server whose Nix could build aarch64-linux, on the offline set
	// (this host's busybox only): refused, saying how to fix it.
	e2 := start(t, func(o *serve.Options) { o.Systems = []string{"x86_64-linux", "aarch64-linux"} })
	resp, body := get(t, e2.fileURL("127.0.0.1/arm64/busybox", "aarch64"))
	if resp.StatusCode != 422 || !strings.Contains(string(body), "serve --nixpkgs or --flake") {
		t.Fatalf("arm64 from the offline set: %s %q", resp.Status, body)
	}
	if n := e2.built.Load(); n != 0 {
		t.Fatalf("%d builds, want none: a system without a package set is known at start", n)
	}
}

// TestOtherSystem: with a package set that imports for any system (as
// nixpkgs does) and a Nix that builds aarch64-linux (extra-platforms
// here; a remote builder in real life), arm64/NAME is an aarch64 image
// on aarch64 layers: rkt on an aarch64 host fetches it by its own arch
// label. Asking for the aarch64 file of a plain name builds the same.
func TestOtherSystem(t *testing.T) {
	nixpkgs, _ := filepath.Abs("testdata/nixpkgs")
	t.Setenv("NIX_PATH", "nixpkgs="+nixpkgs)
	t.Setenv("NIX_CONFIG", os.Getenv("NIX_CONFIG")+"\nextra-platforms = aarch64-linux")
	e := start(t, func(o *serve.Options) {
		o.Systems = []string{"x86_64-linux", "aarch64-linux"}
		o.Source = serve.Source(nixpkgs, nil)
	})
	trust := trustFromDiscovery(t, e, "127.0.0.1")
	arm := map[types.ACIdentifier]string{"version": version, "os": "linux", "arch": "aarch64"}
	for _, name := range []string{"127.0.0.1/arm64/shell/hello", "127.0.0.1/shell/hello"} {
		dir := t.TempDir()
		img := fetch(t, e, name, arm, trust, dir, "")
		if got := run(t, dir, img); got != "hello for aarch64-linux" {
			t.Fatalf("%s said %q", name, got)
		}
		files, _ := filepath.Glob(filepath.Join(dir, "*.aci"))
		if len(files) < 2 {
			t.Fatalf("%s: %d images, want the app and its layers", name, len(files))
		}
		for _, f := range files {
			if a, _ := manifestOf(t, f).Labels.Get("arch"); a != "aarch64" {
				t.Fatalf("%s: arch label %q, want aarch64", f, a)
			}
		}
		if src := annotation(manifestOf(t, img), "nix2aci.io/package-set"); !strings.HasPrefix(src, "nixpkgs "+nixpkgs) {
			t.Fatalf("package-set annotation %q", src)
		}
	}
	// The host's own arch still builds for the host.
	dir := t.TempDir()
	img := fetch(t, e, "127.0.0.1/shell/hello", map[types.ACIdentifier]string{"version": version, "os": "linux", "arch": "amd64"}, trust, dir, "")
	if got := run(t, dir, img); got != "hello for x86_64-linux" {
		t.Fatalf("the amd64 image said %q", got)
	}
}

// TestFlakePackages: with a locked flake as the package set, names are
// its packages (shell is its busybox); the image says which flake, by
// its locked reference, and the version label changes when the flake
// does.
func TestFlakePackages(t *testing.T) {
	src := t.TempDir()
	b, err := os.ReadFile("testdata/flake/flake.nix")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "flake.nix"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	lock, err := pkgs.LockFlake(context.Background(), "path:"+src)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(lock.URL, "narHash=") {
		t.Fatalf("locked reference %q has no narHash", lock.URL)
	}
	e := start(t, func(o *serve.Options) { o.Flake = lock.URL; o.Source = serve.Source("", lock) })
	trust := trustFromDiscovery(t, e, "127.0.0.1")
	dir := t.TempDir()
	img := fetch(t, e, "127.0.0.1/shell/greet", map[types.ACIdentifier]string{"version": version, "os": "linux", "arch": "amd64"}, trust, dir, "")
	if got := run(t, dir, img); got != "greetings from a flake" {
		t.Fatalf("the flake's package said %q", got)
	}
	if got := annotation(manifestOf(t, img), "nix2aci.io/package-set"); got != "flake "+lock.URL {
		t.Fatalf("package-set annotation %q, want the locked flake %s", got, lock.URL)
	}
	resp, body := get(t, e.fileURL("127.0.0.1/nosuchpackage", "amd64"))
	if resp.StatusCode != 404 || !bytes.Contains(body, []byte("nosuchpackage")) {
		t.Fatalf("an unknown package of the flake: %s %q", resp.Status, body)
	}
	if n := e.built.Load(); n != 1 {
		t.Fatalf("%d builds, want 1: the flake's names are read at start", n)
	}

	// Another flake revision is another version.
	v1, _ := serve.VersionLabel("", lock.URL, "", "test")
	if err := os.WriteFile(filepath.Join(src, "flake.nix"), append(b, []byte("\n# changed\n")...), 0o644); err != nil {
		t.Fatal(err)
	}
	lock2, err := pkgs.LockFlake(context.Background(), "path:"+src)
	if err != nil {
		t.Fatal(err)
	}
	if v2, _ := serve.VersionLabel("", lock2.URL, "", "test"); v2 == v1 {
		t.Fatalf("the version label %s did not change with the flake", v1)
	}
}
