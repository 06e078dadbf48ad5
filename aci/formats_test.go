package aci

import (
	"bytes"
	"crypto/sha512"
	"encoding/hex"
	"os/exec"
	"strings"
	"testing"

	appcaci "github.com/appc/spec/aci"
)

// The spec allows an ACI to be a plain tar, or one compressed with gzip,
// bzip2 or xz: each, made by the real tool, reads back with the same
// manifest and image ID; zstd is refused by name.
func TestInspectReadsEveryCompressionTheSpecAllows(t *testing.T) {
	plain := tarACI(t, "example.com/formats")
	sum := sha512.Sum512(plain)
	wantID := "sha512-" + hex.EncodeToString(sum[:])
	for _, tc := range []struct {
		comp string
		tool []string
	}{
		{"none", nil},
		{"gzip", []string{"gzip", "-c"}},
		{"bzip2", []string{"bzip2", "-c"}},
		{"xz", []string{"xz", "-c"}},
	} {
		in := plain
		if tc.tool != nil {
			cmd := exec.Command(tc.tool[0], tc.tool[1:]...)
			cmd.Stdin = bytes.NewReader(plain)
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("%s: %v (scripts/setup-test installs it)", tc.tool[0], err)
			}
			in = out
		}
		info, err := Inspect(bytes.NewReader(in))
		if err != nil {
			t.Errorf("%s: %v", tc.comp, err)
			continue
		}
		if info.Compression != tc.comp || info.ImageID != wantID || info.Manifest.Name != "example.com/formats" {
			t.Errorf("%s: read %s, %s, %s", tc.comp, info.Compression, info.ImageID, info.Manifest.Name)
		}
		if im, err := ReadManifest(bytes.NewReader(in), 0); err != nil || im.Name != "example.com/formats" {
			t.Errorf("%s: ReadManifest: %v", tc.comp, err)
		}
	}
	if _, err := exec.LookPath("zstd"); err == nil {
		cmd := exec.Command("zstd", "-c")
		cmd.Stdin = bytes.NewReader(plain)
		if out, err := cmd.Output(); err == nil {
			if _, err := Inspect(bytes.NewReader(out)); err == nil || !strings.Contains(err.Error(), "unsupported compression: zstd") {
				t.Errorf("zstd: %v", err)
			}
		}
	}
}

// FuzzInspectAgreesWithAppc: for any plain tar stream, Inspect either
// refuses it or reads what appc's own readers read: the same manifest
// (aci.ManifestFromImage), an archive appc's validator accepts, and the
// image ID of exactly those bytes. It never panics and, the input being
// small, never reads much.
func FuzzInspectAgreesWithAppc(f *testing.F) {
	m := entry{name: "manifest", body: manifestJSON("example.com/x")}
	root := entry{name: "rootfs/"}
	f.Add(tarACI(f, "example.com/x"))
	f.Add(tarOf(f, false, m, root, entry{name: "rootfs/bin/"}, entry{name: "rootfs/bin/sh", body: "#!"}))
	f.Add(tarOf(f, false, m, root, entry{name: "rootfs/a", typ: '2', link: "/etc"}, entry{name: "rootfs/a/b", body: "x"}))
	f.Add(tarOf(f, false, m, root, entry{name: "manifest", body: manifestJSON("evil.example/y")}))
	f.Add(tarOf(f, false, root, m))
	f.Add(tarOf(f, true, m, root))
	f.Fuzz(func(t *testing.T, in []byte) {
		info, err := InspectLimited(bytes.NewReader(in), 1<<20)
		if err != nil {
			return
		}
		sum := sha512.Sum512(in)
		if info.Compression == "none" && info.ImageID != "sha512-"+hex.EncodeToString(sum[:]) {
			t.Fatalf("image ID %s is not the hash of the bytes read", info.ImageID)
		}
		want, err := appcaci.ManifestFromImage(bytes.NewReader(in))
		if err != nil {
			t.Fatalf("we read manifest %s where appc fails: %v", info.Manifest.Name, err)
		}
		g, _ := info.Manifest.MarshalJSON()
		w, _ := want.MarshalJSON()
		if !bytes.Equal(g, w) {
			t.Fatalf("we read %s, appc reads %s", g, w)
		}
	})
}
