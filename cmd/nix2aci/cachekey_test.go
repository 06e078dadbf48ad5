package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nix2aci/nix2aci/nixstore/nixtest"
)

// The cache key is made on the first build, private, with the user's
// configuration; a key others can read, or one inside the cache, is
// refused with a warning naming the fix, and the build still gives the
// bytes of a cold build. NIX2ACI_CACHE_KEY names another key.
func TestCacheKey(t *testing.T) {
	t.Parallel()
	bin := binary(t)
	root := nixtest.Build(t, `mk "cache-key-1.0" "mkdir -p $out/bin; cp /bin/busybox $out/bin/cache-key; seq 1 200000 > $out/numbers"`)
	work := t.TempDir()
	build := func(env []string, args ...string) (out, stderr string) {
		t.Helper()
		cmd := exec.Command(bin, append([]string{"build", root, "--no-link", "--json", "--out", "out"}, args...)...)
		cmd.Dir = work
		cmd.Env = append(append(os.Environ(), "XDG_CACHE_HOME="+filepath.Join(work, "cache"), "XDG_CONFIG_HOME="+filepath.Join(work, "config")), env...)
		var o, e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &e
		if err := cmd.Run(); err != nil {
			t.Fatalf("build: %v\n%s", err, e.String())
		}
		var res struct{ ACI string }
		json.Unmarshal(o.Bytes(), &res)
		b, _ := os.ReadFile(filepath.Join(work, res.ACI))
		return string(b), e.String()
	}
	cold, _ := build(nil, "--no-cache")

	key := filepath.Join(work, "config", "nix2aci", "cache-key")
	if got, stderr := build(nil); got != cold || strings.Contains(stderr, "cache key") {
		t.Fatalf("first cached build: identical %v, stderr %q", got == cold, stderr)
	}
	fi, err := os.Stat(key)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the key: %v, %v", fi, err)
	}
	if got, _ := build(nil); got != cold {
		t.Fatal("a build with tagged entries differs from a cold build")
	}

	os.Chmod(key, 0o644)
	got, stderr := build(nil)
	if got != cold || !strings.Contains(stderr, "chmod 600") || !strings.Contains(stderr, "do not use the cache") {
		t.Errorf("a readable key: identical %v, stderr %q", got == cold, stderr)
	}

	inside := filepath.Join(work, "cache", "nix2aci", "key")
	got, stderr = build([]string{"NIX2ACI_CACHE_KEY=" + inside})
	if got != cold || !strings.Contains(stderr, "inside the cache directory") {
		t.Errorf("a key inside the cache: identical %v, stderr %q", got == cold, stderr)
	}
	if _, err := os.Stat(inside); err == nil {
		t.Error("a key was made inside the cache")
	}

	other := filepath.Join(work, "other-key")
	if got, stderr := build([]string{"NIX2ACI_CACHE_KEY=" + other}); got != cold || stderr != "" {
		t.Errorf("another key: identical %v, stderr %q", got == cold, stderr)
	}
	if _, err := os.Stat(other); err != nil {
		t.Errorf("NIX2ACI_CACHE_KEY was not made: %v", err)
	}
}
