package sign_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/appc/spec/schema"
	"github.com/appc/spec/schema/types"

	"github.com/nix2aci/nix2aci/aci"
	"github.com/nix2aci/nix2aci/internal/testsupport"
	"github.com/nix2aci/nix2aci/manifest"
	"github.com/nix2aci/nix2aci/sign"
)

// img is an image of a dependency tree made for a test.
type img struct {
	name, version string
	deps          []types.Dependency
	body          string
}

// build returns the gzipped ACI of m and its image ID.
func (m img) build(t testing.TB) ([]byte, string) {
	t.Helper()
	im := schema.BlankImageManifest()
	im.Name = *types.MustACIdentifier(m.name)
	for _, l := range [][2]string{{"version", m.version}, {"os", "linux"}, {"arch", "amd64"}} {
		im.Labels = append(im.Labels, types.Label{Name: types.ACIdentifier(l[0]), Value: l[1]})
	}
	im.Dependencies = m.deps
	mj, err := json.Marshal(im)
	if err != nil {
		t.Fatal(err)
	}
	return aciOf(t, string(mj), m.body)
}

// pin is the dependency on m, pinned by the image ID id.
func (m img) pin(id string) types.Dependency {
	d := types.Dependency{ImageName: *types.MustACIdentifier(m.name), Labels: types.Labels{
		{Name: "version", Value: m.version}, {Name: "os", Value: "linux"}, {Name: "arch", Value: "amd64"}}}
	if id != "" {
		h, err := types.NewHash(id)
		if err != nil {
			panic(err)
		}
		d.ImageID = h
	}
	return d
}

// flat is the file name a layered build gives m.
func (m img) flat(t testing.TB) string {
	t.Helper()
	im := schema.BlankImageManifest()
	im.Name = *types.MustACIdentifier(m.name)
	im.Labels = m.pin("").Labels
	name, err := manifest.FlatFileName(im)
	if err != nil {
		t.Fatal(err)
	}
	return name
}

// write puts data and its signature by key at dir/name.
func write(t testing.TB, dir, name string, data []byte, key *openpgp.Entity) string {
	t.Helper()
	p := testsupport.WriteFile(t, filepath.Join(dir, filepath.FromSlash(name)), data)
	if key != nil {
		if err := os.WriteFile(p+".asc", signBytes(t, key, data, withImage(t, data)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

// tree is an app on layers, written as a layered build writes them: the
// app, its .deps and the layer files, each signed.
type tree struct {
	dir, app string
	layers   []img
	ids      []string
}

var (
	libc   = img{name: "example.com/nix/libc-2.36", version: "hash1", body: "libc"}
	libfoo = img{name: "example.com/nix/libfoo-2.0", version: "hash2", body: "libfoo"}
)

func writeTree(t testing.TB, key *openpgp.Entity, layers ...img) *tree {
	t.Helper()
	tr := &tree{dir: t.TempDir(), layers: layers}
	app := img{name: "example.com/app", version: "1.0", body: "app"}
	var list strings.Builder
	for _, l := range layers {
		data, id := l.build(t)
		write(t, tr.dir, l.flat(t), data, key)
		tr.ids = append(tr.ids, id)
		app.deps = append(app.deps, l.pin(id))
		list.WriteString(l.flat(t) + "\n")
	}
	data, _ := app.build(t)
	tr.app = write(t, tr.dir, "app-1.0-linux-amd64.aci", data, key)
	if err := os.WriteFile(filepath.Join(tr.dir, "app-1.0-linux-amd64.deps"), []byte(list.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return tr
}

// verifyApp verifies the app at path and its dependencies as verify does
// by default.
func verifyApp(t testing.TB, path string, trust *sign.Trust, o sign.DependencyOptions) ([]*sign.VerifiedDependency, error) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sig, err := os.Open(path + ".asc")
	if err != nil {
		t.Fatal(err)
	}
	defer sig.Close()
	v, err := sign.VerifyWith(f, sig, trust, sign.VerifyOptions{ImageIDIfDependencies: true})
	if err != nil {
		t.Fatalf("the app: %v", err)
	}
	files, err := sign.FindDependencyFiles(path, v.Name)
	if err != nil {
		return nil, err
	}
	defer files.Close()
	return sign.VerifyDependencies(context.Background(), v, files, trust, o)
}

// Every dependency of a layered app is verified as the app is: signed by a
// key trusted for its name, its image ID, computed from the file, its pin.
func TestVerifyDependenciesChecksEachLayer(t *testing.T) {
	key := testKey(t)
	tr := writeTree(t, key, libc, libfoo)
	trust := sign.NewTrust()
	trust.AddPrefix("example.com", key)
	deps, err := verifyApp(t, tr.app, trust, sign.DependencyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(deps) != 2 {
		t.Fatalf("got %d dependencies", len(deps))
	}
	for i, d := range deps {
		if d.Name != tr.layers[i].name || d.ImageID != tr.ids[i] || d.Fingerprint != sign.Fingerprint(key) || d.TrustedAs != "example.com" ||
			d.DependencyOf != "example.com/app" || d.Image != filepath.Join(tr.dir, tr.layers[i].flat(t)) {
			t.Errorf("dependency %d: %+v", i, d)
		}
	}

	// A key trusted for the app's name only is not trusted for its
	// layers'.
	appOnly := sign.NewTrust()
	appOnly.AddPrefix("example.com/app", key)
	_, err = verifyApp(t, tr.app, appOnly, sign.DependencyOptions{})
	wantReason(t, "trusted for the app only", err, sign.ReasonUntrusted, "example.com/nix/libc-2.36")

	// A layer replaced by another, signed, build of the same name.
	other, _ := img{name: libfoo.name, version: libfoo.version, body: "evil"}.build(t)
	write(t, tr.dir, libfoo.flat(t), other, key)
	_, err = verifyApp(t, tr.app, trust, sign.DependencyOptions{})
	wantReason(t, "replaced layer", err, sign.ReasonDependencyMismatch, "is pinned to image ID "+tr.ids[1][:19])

	// A layer's signature gone, or made for another file.
	tr = writeTree(t, key, libc, libfoo)
	os.Remove(filepath.Join(tr.dir, libc.flat(t)) + ".asc")
	_, err = verifyApp(t, tr.app, trust, sign.DependencyOptions{})
	wantReason(t, "unsigned layer", err, sign.ReasonMissing, "no signature")
	sig, _ := os.ReadFile(filepath.Join(tr.dir, libfoo.flat(t)) + ".asc")
	os.WriteFile(filepath.Join(tr.dir, libc.flat(t))+".asc", sig, 0o644)
	_, err = verifyApp(t, tr.app, trust, sign.DependencyOptions{})
	wantReason(t, "another layer's signature", err, sign.ReasonOtherImage, "libc-2.36")

	// A layer missing: the message says where verify looked, and how to
	// tell it.
	tr = writeTree(t, key, libc, libfoo)
	os.Remove(filepath.Join(tr.dir, "app-1.0-linux-amd64.deps"))
	os.Remove(filepath.Join(tr.dir, libc.flat(t)))
	_, err = verifyApp(t, tr.app, trust, sign.DependencyOptions{})
	wantReason(t, "missing layer", err, sign.ReasonMissingDependency, "there is no "+filepath.Join(tr.dir, "app-1.0-linux-amd64.deps")+", so the dependencies were looked for in")
	wantReason(t, "missing layer", err, sign.ReasonMissingDependency, "--deps FILE.deps")
	wantReason(t, "missing layer", err, sign.ReasonMissingDependency, "--deps-dir DIR")

	// Bounded: no more images than asked.
	tr = writeTree(t, key, libc, libfoo)
	_, err = verifyApp(t, tr.app, trust, sign.DependencyOptions{MaxImages: 1})
	wantReason(t, "bound", err, sign.ReasonDependencyGraph, "more than 1 images")
}

// A dependency named with other labels than the file it is found in holds,
// or not pinned at all, is refused.
func TestVerifyDependenciesRefusesUnpinnedAndMislabelled(t *testing.T) {
	key := testKey(t)
	trust := rootTrust(key)
	dir := t.TempDir()
	data, _ := libc.build(t)
	write(t, dir, libc.flat(t), data, key)

	app := img{name: "example.com/app", version: "1.0", deps: []types.Dependency{libc.pin("")}}
	appData, _ := app.build(t)
	p := write(t, dir, "app.aci", appData, key)
	_, err := verifyApp(t, p, trust, sign.DependencyOptions{})
	wantReason(t, "unpinned", err, sign.ReasonUnpinnedDependency, "is not pinned by image ID")

	// The file named for version hash1 holds version hash9.
	wrong, wrongID := img{name: libc.name, version: "hash9", body: "libc"}.build(t)
	write(t, dir, libc.flat(t), wrong, key)
	app.deps = []types.Dependency{libc.pin(wrongID)}
	appData, _ = app.build(t)
	write(t, dir, "app.aci", appData, key)
	_, err = verifyApp(t, p, trust, sign.DependencyOptions{})
	wantReason(t, "labels", err, sign.ReasonDependencyMismatch, "whose labels are arch=amd64,os=linux,version=hash9")

	// A file named for libc that holds libfoo.
	foo, fooID := libfoo.build(t)
	write(t, dir, libc.flat(t), foo, key)
	app.deps = []types.Dependency{libc.pin(fooID)}
	appData, _ = app.build(t)
	write(t, dir, "app.aci", appData, key)
	_, err = verifyApp(t, p, trust, sign.DependencyOptions{})
	wantReason(t, "name", err, sign.ReasonDependencyMismatch, "whose image is named example.com/nix/libfoo-2.0")
}

// Dependencies of dependencies are verified too; a tree rkt would fetch
// forever (a cycle) or render an image of twice (a diamond) is refused, and
// so is one deeper than MaxDependencyDepth.
func TestVerifyDependenciesWalksTheTree(t *testing.T) {
	key := testKey(t)
	trust := rootTrust(key)
	dir := t.TempDir()
	put := func(m img) string {
		data, id := m.build(t)
		write(t, dir, m.flat(t), data, key)
		return id
	}
	cID := put(libc)
	foo := libfoo
	foo.deps = []types.Dependency{libc.pin(cID)}
	fooID := put(foo)
	verifyTop := func(deps ...types.Dependency) ([]*sign.VerifiedDependency, error) {
		app := img{name: "example.com/app", version: "1.0", deps: deps}
		data, _ := app.build(t)
		p := write(t, dir, "app-1.0-linux-amd64.aci", data, key)
		return verifyApp(t, p, trust, sign.DependencyOptions{})
	}
	deps, err := verifyTop(foo.pin(fooID))
	if err != nil || len(deps) != 2 || deps[1].Name != libc.name || deps[1].DependencyOf != libfoo.name {
		t.Fatalf("got %v, %v", deps, err)
	}

	// A diamond: the app and libfoo both depend on libc.
	_, err = verifyTop(foo.pin(fooID), libc.pin(cID))
	wantReason(t, "diamond", err, sign.ReasonDependencyGraph, "is reached twice in the dependency tree, through example.com/nix/libfoo-2.0 and through example.com/app")
	_, err = verifyTop(libc.pin(cID), libc.pin(cID))
	wantReason(t, "listed twice", err, sign.ReasonDependencyGraph, "reached twice")

	// A cycle: libbar depends on the app, by its name and labels.
	bar := img{name: "example.com/nix/libbar-1.0", version: "hash3",
		deps: []types.Dependency{img{name: "example.com/app", version: "1.0"}.pin(cID)}}
	barID := put(bar)
	_, err = verifyTop(bar.pin(barID))
	wantReason(t, "cycle", err, sign.ReasonDependencyGraph, "the dependencies form a cycle: example.com/app (sha512-")
	wantReason(t, "cycle", err, sign.ReasonDependencyGraph, "→ example.com/nix/libbar-1.0 (sha512-")

	// A chain deeper than the bound.
	var prev *types.Dependency
	for i := sign.MaxDependencyDepth + 1; i >= 1; i-- {
		m := img{name: fmt.Sprintf("example.com/nix/l%d", i), version: "v"}
		if prev != nil {
			m.deps = []types.Dependency{*prev}
		}
		d := m.pin(put(m))
		prev = &d
	}
	_, err = verifyTop(*prev)
	wantReason(t, "deep", err, sign.ReasonDependencyGraph, fmt.Sprintf("more than %d images deep", sign.MaxDependencyDepth))
}

// A .deps file is hostile: every word a plain .aci file name in its
// directory, once; every dependency listed, nothing else.
func TestDepsFileIsHostile(t *testing.T) {
	key := testKey(t)
	trust := rootTrust(key)
	tr := writeTree(t, key, libc, libfoo)
	depsFile := filepath.Join(tr.dir, "app-1.0-linux-amd64.deps")
	good, _ := os.ReadFile(depsFile)
	for _, tc := range []struct {
		deps   string
		reason sign.Reason
		err    string
	}{
		{"../" + libc.flat(t) + "\n", sign.ReasonDepsFile, "is not a plain file name"},
		{"/etc/" + libc.flat(t) + "\n", sign.ReasonDepsFile, "is not a plain file name"},
		{"sub/" + libc.flat(t) + "\n", sign.ReasonDepsFile, "is not a plain file name"},
		{"--insecure-options=all.aci\n", sign.ReasonDepsFile, `starts with "-": rkt fetch would take it for an option`},
		{"example.com/evil\n", sign.ReasonDepsFile, "is not a plain file name"},
		{"evil\n", sign.ReasonDepsFile, "does not end in .aci: rkt fetch would look the word up by discovery"},
		{string(good) + libc.flat(t) + "\n", sign.ReasonDepsFile, "is listed twice"},
		{strings.ReplaceAll(string(good), "\n", "\r\n"), sign.ReasonDepsFile, "a carriage return"},
		{"*.aci\n", sign.ReasonDepsFile, "the glob character '*'"},
		{libc.flat(t) + "\n", sign.ReasonMissingDependency, "does not list it (as " + libfoo.flat(t)},
		{string(good) + "app-1.0-linux-amd64.aci\n", sign.ReasonDepsFile, "lists app-1.0-linux-amd64.aci, which is no dependency of example.com/app"},
	} {
		os.WriteFile(depsFile, []byte(tc.deps), 0o644)
		_, err := verifyApp(t, tr.app, trust, sign.DependencyOptions{})
		wantReason(t, fmt.Sprintf("%q", tc.deps), err, tc.reason, tc.err)
	}
	os.WriteFile(depsFile, bytes.Repeat([]byte("a.aci "), 1<<16), 0o644)
	_, err := verifyApp(t, tr.app, trust, sign.DependencyOptions{})
	wantReason(t, "huge", err, sign.ReasonDepsFile, "more than 262144 bytes")
	os.WriteFile(depsFile, good, 0o644)
	if _, err := verifyApp(t, tr.app, trust, sign.DependencyOptions{}); err != nil {
		t.Fatal(err)
	}
}

// A dependency file is opened inside its directory only: a symlink leading
// out is refused, one inside is followed; a FIFO is refused at once.
func TestDependencyFilesStayInTheirDirectory(t *testing.T) {
	key := testKey(t)
	trust := rootTrust(key)
	tr := writeTree(t, key, libc)
	name := filepath.Join(tr.dir, libc.flat(t))
	outside := t.TempDir()
	os.Rename(name, filepath.Join(outside, "libc.aci"))
	os.Symlink(filepath.Join(outside, "libc.aci"), name)
	_, err := verifyApp(t, tr.app, trust, sign.DependencyOptions{})
	wantReason(t, "absolute symlink out", err, sign.ReasonMissingDependency, "cannot be opened inside")
	os.Remove(name)
	os.Symlink("../"+filepath.Base(outside)+"/libc.aci", name)
	_, err = verifyApp(t, tr.app, trust, sign.DependencyOptions{})
	wantReason(t, "relative symlink out", err, sign.ReasonMissingDependency, "cannot be opened inside")
	os.Remove(name)
	os.Mkdir(filepath.Join(tr.dir, "store"), 0o755)
	os.Rename(filepath.Join(outside, "libc.aci"), filepath.Join(tr.dir, "store", "libc.aci"))
	os.Symlink("store/libc.aci", name)
	if _, err := verifyApp(t, tr.app, trust, sign.DependencyOptions{}); err != nil {
		t.Errorf("a symlink inside the directory: %v", err)
	}
	os.Remove(name)
	if err := syscall.Mkfifo(name, 0o644); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := verifyApp(t, tr.app, trust, sign.DependencyOptions{}); done <- err }()
	select {
	case err := <-done:
		wantReason(t, "FIFO", err, sign.ReasonMissingDependency, "a FIFO, not a regular file")
	case <-time.After(10 * time.Second):
		t.Fatal("verify blocked on a FIFO")
	}
}

// In a published site, dependencies are where the discovery template puts
// them, and verify finds them there given the site's base path or by
// default: <base>/<dir of name>/<last component>-<version>-<os>-<arch>.aci.
func TestDependenciesInASite(t *testing.T) {
	key := testKey(t)
	trust := rootTrust(key)
	base := t.TempDir()
	data, id := libc.build(t)
	write(t, base, "example.com/nix/libc-2.36-hash1-linux-amd64.aci", data, key)
	app := img{name: "example.com/app", version: "1.0", deps: []types.Dependency{libc.pin(id)}}
	appData, _ := app.build(t)
	p := write(t, base, "example.com/app-1.0-linux-amd64.aci", appData, key)
	f, _ := os.Open(p)
	sig, _ := os.Open(p + ".asc")
	v, err := sign.VerifyWith(f, sig, trust, sign.VerifyOptions{ImageIDIfDependencies: true})
	if err != nil {
		t.Fatal(err)
	}
	files, err := sign.OpenDepsDir(base)
	if err != nil {
		t.Fatal(err)
	}
	defer files.Close()
	deps, err := sign.VerifyDependencies(context.Background(), v, files, trust, sign.DependencyOptions{})
	if err != nil || len(deps) != 1 || deps[0].ImageID != id {
		t.Fatalf("got %v, %v", deps, err)
	}
	// Found there by default too: the app is where the site puts it.
	deps, err = verifyApp(t, p, trust, sign.DependencyOptions{})
	if err != nil || len(deps) != 1 || deps[0].Image != filepath.Join(base, "example.com/nix/libc-2.36-hash1-linux-amd64.aci") {
		t.Fatalf("by default: got %v, %v", deps, err)
	}
	// The site's base path may be the working directory.
	t.Chdir(base)
	deps, err = verifyApp(t, "example.com/app-1.0-linux-amd64.aci", trust, sign.DependencyOptions{})
	if err != nil || len(deps) != 1 || deps[0].Image != "example.com/nix/libc-2.36-hash1-linux-amd64.aci" {
		t.Fatalf("from the base path: got %v, %v", deps, err)
	}
}

// The image ID verify computes without --full is the one aci.Inspect (and
// rkt) computes: the sha512 of the uncompressed archive. Without
// dependencies, ImageIDIfDependencies computes none.
func TestVerifyImageID(t *testing.T) {
	key := testKey(t)
	trust := rootTrust(key)
	data, id := libc.build(t)
	sig := signBytes(t, key, data)
	for _, o := range []sign.VerifyOptions{{ImageID: true}, {Full: true}, {ImageIDIfDependencies: true}} {
		v, err := sign.VerifyWith(bytes.NewReader(data), bytes.NewReader(sig), trust, o)
		want := id
		if o.ImageIDIfDependencies {
			want = ""
		}
		if err != nil || v.ImageID != want {
			t.Errorf("%+v: got %v, %v; want %s", o, v, err, want)
		}
	}
	app, _ := img{name: "example.com/app", version: "1", deps: []types.Dependency{libc.pin(id)}}.build(t)
	info, _ := aci.Inspect(bytes.NewReader(app))
	v, err := sign.VerifyWith(bytes.NewReader(app), bytes.NewReader(signBytes(t, key, app)), trust, sign.VerifyOptions{ImageIDIfDependencies: true})
	if err != nil || v.ImageID != info.ImageID {
		t.Errorf("with dependencies: got %v, %v; want %s", v, err, info.ImageID)
	}
	// Bounded like the rest of verify.
	_, err = sign.VerifyWith(bytes.NewReader(data), bytes.NewReader(sig), trust, sign.VerifyOptions{ImageID: true, MaxImageSize: 1024})
	wantReason(t, "max size", err, sign.ReasonInvalidImage, "larger than the 1024 bytes allowed")
}

// Any .deps file: parsing never panics, and what it accepts are plain
// .aci file names that the shell passes to rkt fetch as they are.
func FuzzParseDeps(f *testing.F) {
	f.Add([]byte("example.com_nix_libc-2.36-hash1-linux-amd64.aci\nexample.com_nix_group-ab-linux-amd64.aci\n"))
	f.Add([]byte("../x.aci\n"))
	f.Add([]byte("a.aci\r\nb.aci\r\n"))
	f.Add([]byte("-x.aci a.aci a.aci"))
	f.Fuzz(func(t *testing.T, data []byte) {
		names, err := sign.ParseDeps("x.deps", data)
		if err != nil {
			return
		}
		words, err := manifest.ShellWords(data)
		if err != nil || !slices.Equal(words, names) {
			t.Fatalf("accepted %q as %q; the shell makes %q (%v)", data, names, words, err)
		}
		seen := map[string]bool{}
		for _, n := range names {
			if seen[n] || !filepath.IsLocal(n) || filepath.Base(n) != n || strings.HasPrefix(n, "-") || !strings.HasSuffix(n, ".aci") {
				t.Fatalf("accepted %q", n)
			}
			seen[n] = true
		}
	})
}
