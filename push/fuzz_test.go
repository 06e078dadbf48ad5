package push_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nix2aci/nix2aci/internal/testsupport"
	"github.com/nix2aci/nix2aci/push"
)

// OpenLayout takes any index.json and manifest without panicking, and
// every refusal is a *push.LayoutError; what it accepts names only blobs
// inside the layout that match their digests.
func FuzzOpenLayout(f *testing.F) {
	seed := makeLayout(f, filepath.Join(f.TempDir(), "seed.oci"), "1.0", gzLayer(f, "a", 512, 8))
	index := must(os.ReadFile(filepath.Join(seed.dir, "index.json")))
	manifest := must(os.ReadFile(filepath.Join(seed.dir, "blobs", "sha256", strings.TrimPrefix(seed.digest, "sha256:"))))
	f.Add(index, manifest)
	f.Add([]byte(`{"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:../../index.json","size":1}]}`), manifest)
	f.Add(index, []byte(`{"schemaVersion":2,"layers":[{"digest":"sha256:`+strings.Repeat("0", 64)+`","size":-1}]}`))
	f.Fuzz(func(t *testing.T, index, manifest []byte) {
		dir := filepath.Join(t.TempDir(), "l.oci")
		if err := os.CopyFS(dir, os.DirFS(seed.dir)); err != nil {
			t.Fatal(err)
		}
		testsupport.WriteFile(t, filepath.Join(dir, "index.json"), index)
		// The manifest, under the digest the seed's index names.
		testsupport.WriteFile(t, filepath.Join(dir, "blobs", "sha256", strings.TrimPrefix(seed.digest, "sha256:")), manifest)
		im, err := push.OpenLayout(dir)
		if err != nil {
			var le *push.LayoutError
			if !errors.As(err, &le) {
				t.Fatalf("not a LayoutError: %v", err)
			}
			return
		}
		defer im.Close()
		if sha(im.Manifest()) != im.Digest {
			t.Fatalf("accepted a manifest whose digest is not %s", im.Digest)
		}
	})
}
