package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/nix2aci/nix2aci/nixstore/nixtest"
)

// tmpfs mounts a file system of size bytes at a new directory.
func tmpfs(t *testing.T, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		t.Skipf("cannot mount tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	return dir
}

// A full disk, as the output directory or as the cache, fails the build
// with a message saying so, leaves no partial image, no stray temporary
// file and no damaged cache entry; the next build with room gives the
// bytes of a cold build.
func TestFullDisk(t *testing.T) {
	bin := binary(t)
	// 2 MB of incompressible data: the image cannot fit in 512 KiB.
	root := nixtest.Build(t, `mk "full-disk-1.0" "mkdir -p $out/bin; cp /bin/busybox $out/bin/full-disk; head -c 2000000 /dev/urandom > $out/blob"`)
	work := t.TempDir()
	build := func(args ...string) (string, error) {
		cmd := exec.Command(bin, append([]string{"build", root, "--no-link"}, args...)...)
		cmd.Dir = work
		cmd.Env = append(os.Environ(), "XDG_CACHE_HOME="+filepath.Join(work, "cache"))
		b, err := cmd.CombinedOutput()
		return string(b), err
	}
	cold, err := build("--out", "cold", "--no-cache")
	if err != nil {
		t.Fatalf("cold build: %v\n%s", err, cold)
	}
	want, err := os.ReadFile(filepath.Join(work, "cold", "full-disk-1.0-linux-amd64.aci"))
	if err != nil {
		t.Fatal(err)
	}

	full := tmpfs(t, "512k")
	out, err := build("--out", filepath.Join(full, "ACIs"))
	if err == nil || !strings.Contains(out, "no space left on device") {
		t.Fatalf("build onto a full disk: %v\n%s", err, out)
	}
	if ents, _ := os.ReadDir(full); len(ents) != 0 {
		t.Errorf("the failed build left %d entries on the full disk", len(ents))
	}

	cache := tmpfs(t, "512k")
	out, err = build("--out", "warm", "--cache-dir", cache)
	if err != nil {
		t.Fatalf("a full cache must not fail the build: %v\n%s", err, out)
	}
	got, _ := os.ReadFile(filepath.Join(work, "warm", "full-disk-1.0-linux-amd64.aci"))
	if !bytes.Equal(got, want) {
		t.Error("a build with a full cache differs from a cold build")
	}
	// Whatever the cache holds now is sound: a build from it is cold's bytes.
	out, err = build("--out", "again", "--cache-dir", cache)
	if err != nil {
		t.Fatalf("build from the full cache: %v\n%s", err, out)
	}
	got, _ = os.ReadFile(filepath.Join(work, "again", "full-disk-1.0-linux-amd64.aci"))
	if !bytes.Equal(got, want) {
		t.Error("a build from the cache that filled up differs from a cold build")
	}
	filepath.WalkDir(cache, func(p string, d os.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), ".tmp-") {
			t.Errorf("stray temporary file in the cache: %s", p)
		}
		return nil
	})
}
