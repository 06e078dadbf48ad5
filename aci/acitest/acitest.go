// Package acitest builds and writes images for the tests of aci and of
// the packages below it that are tested through it (fragcache): real
// closures, archives read back with appc's validator and Inspect.
package acitest

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	appcaci "github.com/appc/spec/aci"

	"github.com/nix2aci/nix2aci/aci"
	"github.com/nix2aci/nix2aci/manifest"
	"github.com/nix2aci/nix2aci/nixstore"
)

// Image returns an Image of root's closure with root as the one package.
func Image(t testing.TB, root string, thin bool) aci.Image {
	t.Helper()
	g, err := nixstore.Closure(context.Background(), []string{root})
	if err != nil {
		t.Fatal(err)
	}
	spec := manifest.Spec{Name: "example.com/test", Version: "1.0", System: "x86_64-linux", Exec: []string{"/bin/hello"}}
	if thin {
		spec.Mounts = manifest.StoreMounts(g.StorePaths())
	}
	im, err := manifest.New(spec)
	if err != nil {
		t.Fatal(err)
	}
	return aci.Image{Manifest: im, Closure: g, Packages: []string{root}, Thin: thin}
}

// Write writes img to a file in a new directory and checks it with appc's
// validator, returning the file's bytes.
func Write(t testing.TB, img aci.Image, opts ...aci.Option) ([]byte, *aci.Result) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "x.aci")
	res, err := aci.WriteFile(context.Background(), path, img, opts...)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(b)) != res.Size {
		t.Errorf("Result.Size = %d, file has %d bytes", res.Size, len(b))
	}
	d, _, err := aci.Decompress(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if err := appcaci.ValidateArchive(tar.NewReader(d)); err != nil {
		t.Fatalf("appc's validator rejects the archive: %v", err)
	}
	info, err := aci.Inspect(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if info.ImageID != res.ImageID {
		t.Errorf("Write says image ID %s, reading back gives %s", res.ImageID, info.ImageID)
	}
	return b, res
}
