package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The GC root beside a thin image keeps the store paths it mounts alive,
// and it is that root, not anything else, that does.
func TestGCRootKeepsThinImageAlive(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	t.Setenv("NIX_CONFIG", "substituters =")
	t.Setenv("NIX_PATH", "")
	// A derivation unique to this test run, so nothing else holds it.
	src := `derivation { name = "gc-probe-1.0"; system = builtins.currentSystem; builder = "/bin/sh";
  PATH = "/usr/bin:/bin"; nonce = "` + dir + `"; args = [ "-c" "mkdir -p $out/bin; echo > $out/bin/gc-probe; chmod +x $out/bin/gc-probe" ]; }`
	if err := os.WriteFile("probe.nix", []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	if code := run([]string{"nix2aci", "build", "./probe.nix", "--thin", "--no-link"}); code != 0 {
		t.Fatalf("build exited %d", code)
	}
	root := filepath.Join("ACIs", "gc-probe-1.0-linux-amd64.gcroot")
	path, err := os.Readlink(root)
	if err != nil {
		t.Fatalf("no GC root beside the image: %v", err)
	}
	out, err := exec.Command("nix-store", "--delete", path).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "still alive") {
		t.Fatalf("nix-store --delete %s: %v\n%s; want it refused while the root exists", path, err, out)
	}
	os.Remove(root)
	if out, err := exec.Command("nix-store", "--delete", path).CombinedOutput(); err != nil {
		t.Fatalf("without the root the path should be collectable: %v\n%s", err, out)
	}
}
