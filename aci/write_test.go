package aci_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nix2aci/nix2aci/aci"
	"github.com/nix2aci/nix2aci/aci/acitest"
	"github.com/nix2aci/nix2aci/nixstore"
	"github.com/nix2aci/nix2aci/nixstore/nixtest"
)

// image and write are the helpers the cache's tests use too.
var (
	image = acitest.Image
	write = acitest.Write
)

func entries(t *testing.T, b []byte) []*tar.Header {
	t.Helper()
	d, _, err := aci.Decompress(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(d)
	var out []*tar.Header
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, h)
	}
}

func TestFatLayout(t *testing.T) {
	root := nixtest.Hello(t)
	img := image(t, root, false)
	b, res := write(t, img)
	hs := entries(t, b)
	if hs[0].Name != "manifest" {
		t.Errorf("first entry is %q, want manifest", hs[0].Name)
	}
	byName := map[string]*tar.Header{}
	var names []string
	for _, h := range hs {
		n := strings.TrimSuffix(h.Name, "/")
		if byName[n] != nil {
			t.Errorf("duplicate entry %s", n)
		}
		byName[n] = h
		names = append(names, n)
		if h.Uid != 0 || h.Gid != 0 || h.Uname != "" || h.Gname != "" {
			t.Errorf("%s: owner %d:%d %q:%q, want 0:0 and no names", h.Name, h.Uid, h.Gid, h.Uname, h.Gname)
		}
	}
	for _, d := range []string{"rootfs", "rootfs/nix", "rootfs/nix/store"} {
		if h := byName[d]; h == nil || h.Typeflag != tar.TypeDir || h.Mode != 0o755 {
			t.Errorf("%s: got %+v, want a directory with mode 0755", d, h)
		}
	}
	// Depth first, children sorted: every entry's parent comes before it,
	// and siblings are in order.
	for i := 2; i < len(names); i++ {
		parent := filepath.Dir(names[i])
		if _, ok := byName[parent]; !ok {
			t.Errorf("%s has no parent entry", names[i])
		}
	}
	for _, p := range img.Closure.Paths {
		if byName["rootfs"+p.Path] == nil {
			t.Errorf("store path %s missing from the archive", p.Path)
		}
	}
	if res.StorePaths != 3 {
		t.Errorf("StorePaths = %d, want 3", res.StorePaths)
	}
	// The symlink farm.
	if h := byName["rootfs/bin/hello"]; h == nil || h.Typeflag != tar.TypeSymlink || h.Linkname != root+"/bin/hello" {
		t.Errorf("rootfs/bin/hello: got %+v, want a symlink to %s/bin/hello", h, root)
	}
	if byName["rootfs/nix-support"] != nil {
		t.Error("nix-support was linked into the root")
	}
	// A hard link inside one store path stays a hard link, with the
	// store's modes and mtimes.
	var link *tar.Header
	for n, h := range byName {
		if strings.HasSuffix(n, "/lib/greeting-link") || strings.HasSuffix(n, "/lib/greeting") {
			if h.Typeflag == tar.TypeLink {
				link = h
			}
			if h.ModTime.Unix() != 1 || h.Mode != 0o444 {
				t.Errorf("%s: mtime %v mode %o, want the store's (1, 0444)", n, h.ModTime.Unix(), h.Mode)
			}
		}
	}
	if link == nil {
		t.Error("the hard link in hello-lib was not kept as a hard link")
	}
}

func TestDeterministic(t *testing.T) {
	img := image(t, nixtest.Hello(t), false)
	a, _ := write(t, img)
	b, _ := write(t, img, aci.WithJobs(1))
	if !bytes.Equal(a, b) {
		t.Error("two builds of the same closure differ")
	}
}

func TestThinMountTargets(t *testing.T) {
	root := nixtest.Hello(t)
	img := image(t, root, true)
	b, _ := write(t, img)
	byName := map[string]*tar.Header{}
	for _, h := range entries(t, b) {
		byName[strings.TrimSuffix(h.Name, "/")] = h
	}
	for _, p := range img.Closure.Paths {
		h := byName["rootfs"+p.Path]
		fi, err := os.Stat(p.Path)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case h == nil:
			t.Errorf("no mount target for %s", p.Path)
		case fi.IsDir() && h.Typeflag != tar.TypeDir:
			t.Errorf("%s is a directory but its mount target is not", p.Path)
		case !fi.IsDir() && (h.Typeflag != tar.TypeReg || h.Size != 0):
			t.Errorf("%s is a file but its mount target is not an empty file", p.Path)
		}
		for n := range byName {
			if strings.HasPrefix(n, "rootfs"+p.Path+"/") {
				t.Errorf("thin image holds store contents: %s", n)
			}
		}
	}
}

func TestCompressions(t *testing.T) {
	img := image(t, nixtest.Hello(t), false)
	var ids []string
	for _, c := range []aci.Compression{aci.Gzip, aci.Xz, aci.None} {
		b, res := write(t, img, aci.WithCompression(c, 0))
		info, err := aci.Inspect(bytes.NewReader(b))
		if err != nil || info.Compression != string(c) {
			t.Errorf("%s: read back as %v, %v", c, info, err)
		}
		ids = append(ids, res.ImageID)
	}
	if ids[0] != ids[1] || ids[1] != ids[2] {
		t.Errorf("the image ID depends on the compression: %v", ids)
	}
}

func TestNothingLeftOnError(t *testing.T) {
	img := image(t, nixtest.Hello(t), false)
	dir := t.TempDir()
	path := filepath.Join(dir, "x.aci")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := aci.WriteFile(ctx, path, img); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled build: got %v, want context.Canceled", err)
	}
	img.Closure.Paths = append(img.Closure.Paths, nixstore.PathInfo{Path: "/nix/store/00000000000000000000000000000000-gone"})
	_, err := aci.WriteFile(context.Background(), path, img)
	var ip *nixstore.InvalidPathError
	if !errors.As(err, &ip) || ip.Path != "/nix/store/00000000000000000000000000000000-gone" {
		t.Errorf("missing store path: got %v, want an error naming it", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("failed builds left %v behind", ents)
	}
}

func TestInspectRejects(t *testing.T) {
	tests := map[string][]byte{
		"garbage":      []byte("this is not an archive at all, not even close"),
		"no manifest":  tarOf(t, map[string]string{"rootfs/": ""}),
		"no rootfs":    tarOf(t, map[string]string{"manifest": `{"acKind":"ImageManifest","acVersion":"0.8.11","name":"x"}`}),
		"bad manifest": tarOf(t, map[string]string{"manifest": `{"acKind":"ImageManifest","acVersion":"0.8.11","name":"NOT VALID"}`, "rootfs/": ""}),
	}
	for name, b := range tests {
		if _, err := aci.Inspect(bytes.NewReader(b)); !aci.IsInvalid(err) {
			t.Errorf("%s: got %v, want an InvalidError", name, err)
		}
	}
}

func tarOf(t *testing.T, files map[string]string) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for name, body := range files {
		h := &tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}
		if strings.HasSuffix(name, "/") {
			h.Typeflag, h.Size = tar.TypeDir, 0
		}
		tw.WriteHeader(h)
		tw.Write([]byte(body))
	}
	tw.Close()
	return buf.Bytes()
}
