// Package rktfetch fetches images as rkt fetch does, for the tests of the
// packages that publish and serve them: appc's own discovery client over
// plain HTTP on a loopback port, then the signature verified with this
// module's sign package, then the dependencies the same way.
package rktfetch

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/appc/spec/discovery"
	"github.com/appc/spec/schema/types"

	"github.com/nix2aci/nix2aci/internal/testsupport"
	"github.com/nix2aci/nix2aci/sign"
)

// Fetch does what rkt fetch NAME does, over plain HTTP on port: discover
// the image's endpoints, download the image and its signature, verify the
// signature against the keys trust holds and the archive in full, check
// the image is named name and, with pinned set, has that image ID; then
// fetch every dependency the same way by its name and labels, pinned to
// the image ID its manifest gives. The files are written into dir; Fetch
// returns the path of the image asked for. Any failure is fatal.
func Fetch(t testing.TB, port uint, name string, labels map[types.ACIdentifier]string, trust *sign.Trust, dir, pinned string) string {
	t.Helper()
	app, err := discovery.NewApp(name, labels)
	if err != nil {
		t.Fatal(err)
	}
	eps, attempts, err := discovery.DiscoverACIEndpoints(*app, nil, discovery.InsecureHTTP, port)
	if err != nil || len(eps) == 0 {
		t.Fatalf("discovering %s: %v %v", name, err, attempts)
	}
	img, sig := testsupport.Get(t, eps[0].ACI), testsupport.Get(t, eps[0].ASC)
	v, err := sign.VerifyWith(bytes.NewReader(img), bytes.NewReader(sig), trust, sign.VerifyOptions{Full: true})
	if err != nil {
		t.Fatalf("%s from %s: %v", name, eps[0].ACI, err)
	}
	if pinned != "" && v.ImageID != pinned {
		t.Fatalf("dependency %s: fetched image ID %s, the app pins %s", name, v.ImageID, pinned)
	}
	if v.Manifest.Name.String() != name {
		t.Fatalf("asked for %s, got an image named %s", name, v.Manifest.Name)
	}
	file := filepath.Join(dir, filepath.Base(eps[0].ACI))
	if err := os.WriteFile(file, img, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, d := range v.Manifest.Dependencies {
		l := map[types.ACIdentifier]string{}
		for _, lb := range d.Labels {
			l[lb.Name] = lb.Value
		}
		Fetch(t, port, d.ImageName.String(), l, trust, dir, d.ImageID.String())
	}
	return file
}
