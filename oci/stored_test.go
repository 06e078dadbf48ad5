package oci

import (
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nix2aci/nix2aci/aci"
)

// baseLayout writes a layout of one image with a layer blob (any bytes:
// ReadStored does not read layers) and the annotations a base has.
func baseLayout(t *testing.T) (string, Layer) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "base.oci")
	l, err := Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	data := "not really a tar stream"
	d := digest.FromString(data)
	if _, err := l.writeBlob(func(w io.Writer) (digest.Digest, int64, *aci.Result, error) {
		n, err := io.WriteString(w, data)
		return d, int64(n), nil, err
	}); err != nil {
		t.Fatal(err)
	}
	ly := Layer{Descriptor: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: d, Size: int64(len(data))}, DiffID: digest.FromString("diff")}
	cfg, err := BaseConfig("linux", "amd64", time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.WriteAnnotatedImage(cfg, []Layer{ly}, "1", "1", map[string]string{"nix2aci/store-paths": "/nix/store/x"}); err != nil {
		t.Fatal(err)
	}
	return dir, ly
}

// An image layout nix2aci wrote reads back as written, and its layer is
// linked into another layout, not copied.
func TestReadStoredAndLinkLayer(t *testing.T) {
	dir, ly := baseLayout(t)
	s, err := ReadStored(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Layers) != 1 || s.Layers[0].Digest != ly.Digest || s.Layers[0].DiffID != ly.DiffID || s.Layers[0].Size != ly.Size || s.Annotations["nix2aci/store-paths"] != "/nix/store/x" || s.Config.OS != "linux" {
		t.Fatalf("read %+v", s)
	}
	app, err := Create(filepath.Join(t.TempDir(), "app.oci"))
	if err != nil {
		t.Fatal(err)
	}
	if err := app.LinkLayer(s, ly); err != nil {
		t.Fatal(err)
	}
	a, _ := os.Stat(blobPath(dir, ly.Digest))
	b, _ := os.Stat(app.blobPath(ly.Digest))
	if a == nil || b == nil || a.Sys().(*syscall.Stat_t).Ino != b.Sys().(*syscall.Stat_t).Ino {
		t.Fatal("the layer blob was not linked")
	}
}

// Everything of a layout is input: each way it can lie is an error, and
// no digest reaches a path unchecked.
func TestReadStoredRefusesWhatItCannotTrust(t *testing.T) {
	// rewrite replaces the manifest of the layout by m (as JSON), with
	// the index naming it by its true digest, unless index is given.
	rewrite := func(t *testing.T, dir string, m any, index *ocispec.Index) {
		data, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		d := digest.FromBytes(data)
		if err := os.WriteFile(blobPath(dir, d), data, 0o644); err != nil {
			t.Fatal(err)
		}
		if index == nil {
			index = &ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, Manifests: []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageManifest, Digest: d, Size: int64(len(data))}}}
		}
		data, _ = json.Marshal(index)
		if err := os.WriteFile(filepath.Join(dir, ocispec.ImageIndexFile), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	manifestOf := func(t *testing.T, dir string) ocispec.Manifest {
		s, err := ReadStored(dir)
		if err != nil {
			t.Fatal(err)
		}
		data, err := readBlob(dir, s.Manifest, maxStoredManifest)
		if err != nil {
			t.Fatal(err)
		}
		var m ocispec.Manifest
		if err := json.Unmarshal(data, &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	for _, c := range []struct {
		name, want string
		change     func(t *testing.T, dir string)
	}{
		{"not a layout", "not an OCI image layout", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, ocispec.ImageLayoutFile))
		}},
		{"two images", "holds 2 images, not one", func(t *testing.T, dir string) {
			m := manifestOf(t, dir)
			s, _ := ReadStored(dir)
			rewrite(t, dir, m, &ocispec.Index{Manifests: []ocispec.Descriptor{s.Manifest, s.Manifest}})
		}},
		{"manifest changed", "does not have that digest and size", func(t *testing.T, dir string) {
			s, _ := ReadStored(dir)
			p := blobPath(dir, s.Manifest.Digest)
			data, _ := os.ReadFile(p)
			os.WriteFile(p, []byte(strings.Replace(string(data), "/nix/store/x", "/nix/store/y", 1)), 0o644)
		}},
		{"manifest too large", "at most", func(t *testing.T, dir string) {
			s, _ := ReadStored(dir)
			d := s.Manifest
			d.Size = maxStoredManifest + 1
			rewrite(t, dir, manifestOf(t, dir), &ocispec.Index{Manifests: []ocispec.Descriptor{d}})
		}},
		{"manifest digest escapes", "invalid", func(t *testing.T, dir string) {
			rewrite(t, dir, manifestOf(t, dir), &ocispec.Index{Manifests: []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageManifest, Digest: "sha256:../../../etc/passwd", Size: 10}}})
		}},
		{"layer digest escapes", "invalid", func(t *testing.T, dir string) {
			m := manifestOf(t, dir)
			m.Layers[0].Digest = "sha256:../../../../../etc/passwd"
			rewrite(t, dir, m, nil)
		}},
		{"layer of another algorithm", "is not SHA-256", func(t *testing.T, dir string) {
			m := manifestOf(t, dir)
			m.Layers[0].Digest = digest.SHA512.FromString("x")
			rewrite(t, dir, m, nil)
		}},
		{"layer missing", "no such file", func(t *testing.T, dir string) {
			m := manifestOf(t, dir)
			os.Remove(blobPath(dir, m.Layers[0].Digest))
		}},
		{"layer of another size", "is not a file of", func(t *testing.T, dir string) {
			m := manifestOf(t, dir)
			m.Layers[0].Size++
			rewrite(t, dir, m, nil)
		}},
		{"a layer the config lacks", "its config lists 1 layers, its manifest 2", func(t *testing.T, dir string) {
			m := manifestOf(t, dir)
			m.Layers = append(m.Layers, m.Layers[0])
			rewrite(t, dir, m, nil)
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir, _ := baseLayout(t)
			c.change(t, dir)
			_, err := ReadStored(dir)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error saying %q", err, c.want)
			}
		})
	}
}
