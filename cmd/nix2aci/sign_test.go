package main

import (
	"os"
	"path/filepath"
	"testing"
)

// A CI secret holding the armored key signs without any key file.
func TestSigningKeyFromEnvironment(t *testing.T) {
	dir := t.TempDir()
	testKey(t, dir) // k.asc, p.asc; before Chdir: it builds the CLI from the package directory
	t.Chdir(dir)
	t.Setenv("XDG_CACHE_HOME", filepath.Join(dir, "cache"))
	t.Setenv("NIX_CONFIG", "substituters =")
	t.Setenv("NIX_PATH", "")
	key, err := os.ReadFile("k.asc")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("NIX2ACI_SIGNING_KEY", string(key))
	if code := run([]string{"nix2aci", "build", "busybox", "--sign", "--no-link"}); code != 0 {
		t.Fatalf("build --sign with the key in NIX2ACI_SIGNING_KEY exited %d", code)
	}
	if code := run([]string{"nix2aci", "verify", "ACIs/busybox-1.35.0-linux-amd64.aci", "--keyring", "p.asc"}); code != 0 {
		t.Fatalf("verify exited %d", code)
	}
}
