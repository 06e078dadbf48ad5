// Package nixtest builds small Nix fixtures for tests, with the real
// nix-build and no nixpkgs: derivations whose builder is the host's /bin/sh.
package nixtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Require fails the test when Nix is missing; tests use the real thing.
func Require(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("nix-build"); err != nil {
		t.Fatal("nix-build not found: install Nix (apt-get install nix-bin), or run the tests with scripts/test, which does")
	}
}

// Build evaluates the Nix expression expr and builds it, returning its
// output store path. expr may use two helpers: mk NAME SCRIPT is a
// derivation running SCRIPT with /bin/sh; mkWith NAME SCRIPT ATTRS adds
// derivation attributes. Substituters are off: fixtures build locally.
func Build(t testing.TB, expr string) string {
	t.Helper()
	Require(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "fixture.nix")
	src := `let
  mkWith = name: script: attrs: derivation ({
    inherit name;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    PATH = "/usr/bin:/bin";
    args = [ "-c" script ];
  } // attrs);
  mk = name: script: mkWith name script { };
in ` + expr + "\n"
	if err := os.WriteFile(file, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("nix-build", "--no-out-link", "--option", "substituters", "", file).Output()
	if err != nil {
		msg := err.Error()
		if ee, ok := err.(*exec.ExitError); ok {
			msg = string(ee.Stderr)
		}
		t.Fatalf("nix-build of fixture failed: %s\n%s", msg, src)
	}
	return strings.TrimSpace(string(out))
}

// Hello builds a small closure: a package with bin/hello (a shell script),
// a single-file store path it refers to, and a library directory path.
func Hello(t testing.TB) string {
	return Build(t, `let
  lib = mk "hello-lib-1.0" "mkdir -p $out/lib; echo hello > $out/lib/greeting; ln $out/lib/greeting $out/lib/greeting-link";
  file = builtins.toFile "hello-note" "a single-file store path\n";
in mk "hello-2.1" ''
  mkdir -p $out/bin $out/share $out/nix-support
  printf '#!/bin/sh\necho hello\n' > $out/bin/hello
  chmod +x $out/bin/hello
  echo ${lib} > $out/share/lib-path
  echo ${file} > $out/share/note-path
''`)
}
