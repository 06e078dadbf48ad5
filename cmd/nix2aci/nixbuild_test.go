package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// buildACI (nix/build-aci.nix) makes an image as a derivation's output,
// with the static nix2aci binary imported into the store as the builder
// and the closure from exportReferencesGraph. Its files are byte for byte
// those `nix2aci build` writes for the same package and options: fat,
// thin and layered.
func TestBuildACIInsideNixMatchesTheCLI(t *testing.T) {
	t.Setenv("NIX_CONFIG", "substituters =")
	repo, _ := filepath.Abs("../..")
	work := t.TempDir()

	// The builder: a static nix2aci, imported into the store.
	bin := filepath.Join(work, "nix2aci-static", "bin", "nix2aci")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command("nix-store", "--add", filepath.Dir(filepath.Dir(bin))).Output()
	if err != nil {
		t.Fatalf("nix-store --add: %v", err)
	}
	storeBin := strings.TrimSpace(string(out))

	tool := filepath.Join(work, "tool.nix")
	os.WriteFile(tool, []byte(`let
  sh = args: derivation ({ system = builtins.currentSystem; builder = "/bin/sh"; PATH = "/usr/bin:/bin"; } // args);
  base = sh { name = "nixbase-1.0"; args = [ "-c" "mkdir -p $out/bin; cp /bin/busybox $out/bin/busybox" ]; };
in sh {
  name = "nixtool-0.3";
  inherit base;
  args = [ "-c" "mkdir -p $out/bin; printf '#!%s/bin/busybox sh\\necho tool ran\\n' $base > $out/bin/nixtool; chmod +x $out/bin/nixtool" ];
}
`), 0o644)
	pkgOut, err := exec.Command("nix-build", "--no-out-link", tool).Output()
	if err != nil {
		t.Fatalf("nix-build tool: %v", err)
	}
	pkg := strings.TrimSpace(string(pkgOut))

	// The flake at the root exposes it as lib.buildACI.
	names, err := exec.Command("nix", "eval", "--extra-experimental-features", "nix-command flakes", "path:"+repo+"#lib", "--apply", "builtins.attrNames").CombinedOutput()
	if err != nil || !strings.Contains(string(names), `"buildACI"`) {
		t.Errorf("the flake's lib: %v\n%s", err, names)
	}

	for _, kind := range []string{"fat", "thin", "layered"} {
		expr := filepath.Join(work, kind+".nix")
		os.WriteFile(expr, []byte(`(import `+repo+`).lib.buildACI {
  nix2aci = builtins.storePath "`+storeBin+`";
  package = import `+tool+`;
  kind = "`+kind+`";
  name = "example.com/nixtool";
  environment = { GREETING = "hi"; };
}
`), 0o644)
		res, err := exec.Command("nix-build", "--no-out-link", expr).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: nix-build buildACI: %v\n%s", kind, err, res)
		}
		lines := strings.Split(strings.TrimSpace(string(res)), "\n")
		inNix := lines[len(lines)-1]

		cli := filepath.Join(work, "cli-"+kind)
		cmd := exec.Command(binary(t), "build", pkg, "--"+kind, "--name", "example.com/nixtool", "--env", "GREETING=hi", "--no-link", "--no-cache", "--out", cli)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: nix2aci build: %v\n%s", kind, err, b)
		}
		want, _ := filepath.Glob(filepath.Join(cli, "*-linux-amd64.*"))
		var compared int
		for _, w := range want {
			if strings.HasSuffix(w, ".gcroot") {
				continue
			}
			a, _ := os.ReadFile(w)
			b, err := os.ReadFile(filepath.Join(inNix, filepath.Base(w)))
			if err != nil || !bytes.Equal(a, b) {
				t.Errorf("%s: %s differs between nix2aci build and buildACI (%v)", kind, filepath.Base(w), err)
			}
			compared++
		}
		if compared == 0 {
			t.Errorf("%s: nothing to compare in %s", kind, cli)
		}
		ents, _ := os.ReadDir(inNix)
		for _, e := range ents {
			if _, err := os.Stat(filepath.Join(cli, e.Name())); err != nil && !strings.HasPrefix(e.Name(), ".") {
				t.Errorf("%s: buildACI wrote %s, the CLI did not", kind, e.Name())
			}
		}
		if kind == "fat" {
			run, _ := filepath.Abs("../../scripts/bwrap-run")
			b, err := exec.Command(run, filepath.Join(inNix, "nixtool-0.3-linux-amd64.aci")).CombinedOutput()
			if err != nil || strings.TrimSpace(string(b)) != "tool ran" {
				t.Errorf("running buildACI's image: %v\n%s", err, b)
			}
		}
	}
}
