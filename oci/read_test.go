package oci_test

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nix2aci/nix2aci/oci"
)

// layoutFiles is a small image layout, by file name, with the manifest's
// digest.
func layoutFiles(layer string, mutate func(manifest string) string) (map[string]string, string) {
	sum := func(s string) string { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:]) }
	files := map[string]string{"oci-layout": `{"imageLayoutVersion":"1.0.0"}`}
	config := `{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`
	files["blobs/sha256/"+sum(config)] = config
	files["blobs/sha256/"+sum(layer)] = layer
	m := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%d}]}`, sum(config), len(config), sum(layer), len(layer))
	if mutate != nil {
		m = mutate(m)
	}
	files["blobs/sha256/"+sum(m)] = m
	files["index.json"] = fmt.Sprintf(`{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%d,"annotations":{"org.opencontainers.image.ref.name":"1.0"}}]}`, sum(m), len(m))
	return files, "sha256:" + sum(m)
}

func writeLayout(t *testing.T, files map[string]string) string {
	dir := filepath.Join(t.TempDir(), "image.oci")
	for name, data := range files {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func writeTar(t *testing.T, files map[string]string) string {
	p := filepath.Join(t.TempDir(), "image.oci.tar")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(f)
	for name, data := range files {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg})
		tw.Write([]byte(data))
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return p
}

// A layout and an oci-archive are read back whole, every blob checked;
// one whose layer, manifest or index was tampered with, or whose
// descriptors would lead out of the layout, is refused.
func TestReadChecksEveryBlob(t *testing.T) {
	files, digest := layoutFiles("layer bytes", nil)
	for _, read := range []func() (*oci.Checked, error){
		func() (*oci.Checked, error) { return oci.ReadLayout(writeLayout(t, files)) },
		func() (*oci.Checked, error) { return oci.ReadArchive(writeTar(t, files)) },
	} {
		c, err := read()
		if err != nil {
			t.Fatal(err)
		}
		if c.Digest != digest || c.RefName != "1.0" || len(c.Layers) != 1 {
			t.Errorf("read %s %q %d layers", c.Digest, c.RefName, len(c.Layers))
		}
	}

	altered := func(f func(map[string]string)) map[string]string {
		out, _ := layoutFiles("layer bytes", nil)
		f(out)
		return out
	}
	escape, _ := layoutFiles("layer bytes", func(m string) string {
		return strings.Replace(m, `"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:`, `"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:../../../../etc/passwd#`, 1)
	})
	huge, _ := layoutFiles("layer bytes", func(m string) string { return strings.Replace(m, `"size":11}`, `"size":9223372036854775807}`, 1) })
	for _, c := range []struct {
		name  string
		files map[string]string
		want  string
	}{
		{"altered layer", altered(func(f map[string]string) {
			for n, d := range f {
				if d == "layer bytes" {
					f[n] = "layer byteZ"
				}
			}
		}), "altered"},
		{"missing layer", altered(func(f map[string]string) {
			for n, d := range f {
				if d == "layer bytes" {
					delete(f, n)
				}
			}
		}), "missing"},
		{"altered manifest", altered(func(f map[string]string) {
			for n, d := range f {
				if strings.Contains(d, `"layers"`) {
					f[n] = strings.Replace(d, "schemaVersion\":2", "schemaVersion\":2 ", 1)
				}
			}
		}), "descriptor says"},
		{"escaping digest", escape, "not sha256"},
		{"huge size", huge, "not between"},
		{"no index", altered(func(f map[string]string) { delete(f, "index.json") }), "index.json"},
	} {
		for kind, read := range map[string]func(string) (*oci.Checked, error){
			"layout":  func(p string) (*oci.Checked, error) { return oci.ReadLayout(p) },
			"archive": func(p string) (*oci.Checked, error) { return oci.ReadArchive(p) },
		} {
			p := writeLayout(t, c.files)
			if kind == "archive" {
				p = writeTar(t, c.files)
			}
			_, err := read(p)
			var ie *oci.InvalidError
			if !errors.As(err, &ie) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%s, %s: %v, want an InvalidError saying %q", c.name, kind, err, c.want)
			}
		}
	}
}
