package aci_test

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nix2aci/nix2aci/nixstore/nixtest"
)

// The bytes of an image depend on the store's contents alone, not on how
// its files are linked on disk. nix-store --optimise (auto-optimise-store)
// replaces identical files with hard links to one inode, within a store
// path and across paths; the test does the same by hand, as root, to the
// paths of one closure, and the image must not change by a byte.
func TestOptimisedStoreGivesTheSameBytes(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to link files inside the store, as nix-store --optimise does")
	}
	// A nonce: the test changes the store, so each run needs new paths.
	nonce := t.TempDir()
	root := nixtest.Build(t, `let
  other = mk "optimise-other-1.0" "mkdir -p $out/share; echo 'shared contents' > $out/share/same; echo `+nonce+` > $out/share/own";
in mk "optimise-me-1.0" ''
  mkdir -p $out/share $out/bin
  echo 'shared contents' > $out/share/a
  echo 'shared contents' > $out/share/b
  echo 'shared contents' > $out/share/c
  chmod 0555 $out/share/c
  echo 'something else!' > $out/share/d
  echo ${other} > $out/share/ref
''`)
	img := image(t, root, false)
	before, _ := write(t, img)

	// Link as nix-store --optimise would: b to a inside the path, and the
	// other path's identical file to a across paths.
	other := ""
	for _, p := range img.Closure.Paths {
		if filepath.Base(p.Path)[33:] == "optimise-other-1.0" {
			other = p.Path
		}
	}
	link := func(from, to string) {
		t.Helper()
		dir := filepath.Dir(to)
		os.Chmod(dir, 0o755)
		defer func() {
			// As Nix does after optimising: the store's mode and mtime.
			os.Chmod(dir, 0o555)
			os.Chtimes(dir, time.Unix(1, 0), time.Unix(1, 0))
		}()
		if err := os.Remove(to); err != nil {
			t.Fatal(err)
		}
		if err := os.Link(from, to); err != nil {
			t.Fatal(err)
		}
	}
	link(root+"/share/a", root+"/share/b")
	link(root+"/share/a", other+"/share/same")
	after, _ := write(t, img)
	if !bytes.Equal(before, after) {
		hb, ha := entries(t, before), entries(t, after)
		for i := range hb {
			if i < len(ha) && (hb[i].Name != ha[i].Name || hb[i].Typeflag != ha[i].Typeflag || hb[i].Linkname != ha[i].Linkname || !hb[i].ModTime.Equal(ha[i].ModTime) || hb[i].Mode != ha[i].Mode) {
				t.Errorf("entry %d: %s %c %s %v %o, then %s %c %s %v %o", i, hb[i].Name, hb[i].Typeflag, hb[i].Linkname, hb[i].ModTime, hb[i].Mode, ha[i].Name, ha[i].Typeflag, ha[i].Linkname, ha[i].ModTime, ha[i].Mode)
			}
		}
		t.Fatal("linking identical files in the store changed the image")
	}

	// Within the path, identical files of one mode are one file in the
	// image; a file of another mode is not linked to them.
	links := map[string]string{}
	for _, h := range entries(t, after) {
		if h.Typeflag == tar.TypeLink {
			links[filepath.Base(h.Name)] = filepath.Base(h.Linkname)
		}
	}
	if links["b"] != "a" || links["c"] != "" || links["d"] != "" || len(links) != 1 {
		t.Errorf("hard links in the image: %v, want only b -> a", links)
	}
}
