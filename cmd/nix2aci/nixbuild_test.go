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
	t.Parallel()
	repo, _ := filepath.Abs("../..")
	work := t.TempDir()
	storeBin := staticInStore(t, work)

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

// buildLayer (nix/build-layer.nix) makes one layer group image as a
// derivation of its own, on another as its base, and buildACI builds an
// app on the top one: each image is byte for byte the one `nix2aci build
// --layered` writes for a recipe with the same layer groups.
func TestBuildLayerInsideNixMatchesTheCLI(t *testing.T) {
	t.Parallel()
	repo, _ := filepath.Abs("../..")
	work := t.TempDir()
	storeBin := staticInStore(t, work)
	pkgs := filepath.Join(work, "pkgs.nix")
	os.WriteFile(pkgs, []byte(`rec {
  sh = args: derivation ({ system = builtins.currentSystem; builder = "/bin/sh"; PATH = "/usr/bin:/bin"; } // args);
  base = sh { name = "chainbase-1.0"; args = [ "-c" "mkdir -p $out/bin; cp /bin/busybox $out/bin/busybox" ]; };
  lib = sh { name = "chainlib-2.0"; inherit base; args = [ "-c" "mkdir -p $out/share; echo lib data > $out/share/data; echo $base > $out/share/base" ]; };
  app = sh {
    name = "chainapp-0.3";
    inherit base lib;
    args = [ "-c" "mkdir -p $out/bin; printf '#!%s/bin/busybox sh\\n%s/bin/busybox cat %s/share/data\\n' $base $base $lib > $out/bin/chainapp; chmod +x $out/bin/chainapp" ];
  };
}
`), 0o644)
	recipe := filepath.Join(work, "recipe.nix")
	os.WriteFile(recipe, []byte(`let p = import `+pkgs+`; in {
  packages = [ p.app ];
  layers = [ { name = "runtime"; packages = [ p.base ]; } { name = "libs"; packages = [ p.lib ]; } ];
}
`), 0o644)
	cli := filepath.Join(work, "cli")
	cmd := exec.Command(binary(t), "build", recipe, "--layered", "--name", "example.com/chainapp", "--no-link", "--no-cache", "--out", cli)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nix2aci build: %v\n%s", err, b)
	}

	expr := filepath.Join(work, "chain.nix")
	os.WriteFile(expr, []byte(`let
  n = import `+repo+`;
  p = import `+pkgs+`;
  nix2aci = builtins.storePath "`+storeBin+`";
  runtime = n.lib.buildLayer { inherit nix2aci; name = "runtime"; packages = [ p.base ]; prefix = "example.com/nix"; };
  libs = n.lib.buildLayer { inherit nix2aci; name = "libs"; packages = [ p.lib ]; prefix = "example.com/nix"; base = runtime; };
in [ runtime libs (n.lib.buildACI { inherit nix2aci; package = p.app; kind = "layered"; name = "example.com/chainapp"; base = libs; }) ]
`), 0o644)
	res, err := exec.Command("nix-build", "--no-out-link", expr).CombinedOutput()
	if err != nil {
		t.Fatalf("nix-build: %v\n%s", err, res)
	}
	lines := strings.Split(strings.TrimSpace(string(res)), "\n")
	outs := lines[len(lines)-3:]
	var compared int
	for _, dir := range outs {
		files, _ := filepath.Glob(filepath.Join(dir, "*.aci"))
		for _, f := range files {
			a, err := os.ReadFile(filepath.Join(cli, filepath.Base(f)))
			b, _ := os.ReadFile(f)
			if err != nil || !bytes.Equal(a, b) {
				t.Errorf("%s differs between the Nix functions and nix2aci build (%v)", filepath.Base(f), err)
			}
			compared++
		}
	}
	if compared != 3 {
		t.Errorf("compared %d images, want 3 (runtime, libs, app)", compared)
	}
	desc, err := os.ReadFile(filepath.Join(outs[1], "layer.json"))
	if err != nil || !strings.Contains(string(desc), `"name": "example.com/nix/libs"`) || !strings.Contains(string(desc), outs[0]) {
		t.Errorf("libs' layer.json does not describe it on runtime: %v\n%s", err, desc)
	}
	// The app renders on its chain, as rkt renders it, and runs.
	deps := t.TempDir()
	for _, dir := range outs[:2] {
		files, _ := filepath.Glob(filepath.Join(dir, "*.aci"))
		for _, f := range files {
			os.Symlink(f, filepath.Join(deps, filepath.Base(f)))
		}
	}
	run, _ := filepath.Abs("../../scripts/bwrap-run")
	app, _ := filepath.Glob(filepath.Join(outs[2], "chainapp-*.aci"))
	if len(app) != 1 {
		t.Fatalf("no app image in %s", outs[2])
	}
	if b, err := exec.Command(run, "--deps", deps, app[0]).CombinedOutput(); err != nil || strings.TrimSpace(string(b)) != "lib data" {
		t.Errorf("running the app on its chain: %v\n%s", err, b)
	}
}

// staticInStore builds a static nix2aci (the builder of buildACI and
// buildLayer) and imports it into the store, returning its store path.
func staticInStore(t *testing.T, work string) string {
	t.Helper()
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
	return strings.TrimSpace(string(out))
}

// A three-level chain of the debian benchmark corpus (../shared/bench):
// the most shared store paths as a runtime group, the app's other direct
// references as a libraries group on it, the app on top. Built by the CLI
// (--layer-group, --base) and by the Nix functions (buildLayer,
// buildACI { base }), every image is byte-identical, valid under actool,
// no store path is in two images, and the app renders on its chain as rkt
// renders it and runs.
func TestDebianChainByCLIAndNix(t *testing.T) {
	t.Parallel()
	repo, _ := filepath.Abs("../..")
	corpus := filepath.Join(repo, "..", "shared", "bench", "make-corpus")
	if _, err := os.Stat(corpus); err != nil {
		t.Skipf("the benchmark corpora are not beside this checkout (%v)", err)
	}
	out, err := exec.Command(corpus, "debian").Output()
	if err != nil {
		t.Fatalf("make-corpus debian: %v", err)
	}
	app := strings.TrimSpace(string(out))
	lines := func(args ...string) []string {
		b, err := exec.Command(args[0], args[1:]...).Output()
		if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		return strings.Fields(string(b))
	}
	// runtime: the paths most others of the closure refer to (libc,
	// busybox and the like; referrers outside the closure, which other
	// builds in the store add, do not count); libs: the app's other
	// direct references.
	var runtime, libs []string
	closure := map[string]bool{}
	for _, p := range lines("nix-store", "-qR", app) {
		closure[p] = true
	}
	inRuntime := map[string]bool{}
	for _, p := range lines("nix-store", "-qR", app) {
		n := 0
		for _, r := range lines("nix-store", "-q", "--referrers", p) {
			if closure[r] && r != p {
				n++
			}
		}
		if p != app && n >= 20 {
			runtime = append(runtime, p)
			inRuntime[p] = true
		}
	}
	for _, p := range lines("nix-store", "-q", "--references", app) {
		if p != app && !inRuntime[p] {
			libs = append(libs, p)
		}
	}
	if len(runtime) == 0 || len(libs) == 0 {
		t.Fatalf("no runtime (%d) or libraries (%d) in the corpus", len(runtime), len(libs))
	}
	work := t.TempDir()
	cli := filepath.Join(work, "cli")
	nix2aci := func(args ...string) {
		t.Helper()
		cmd := exec.Command(binary(t), append(args, "--no-link", "--no-cache", "--out", cli)...)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("nix2aci %s: %v\n%s", strings.Join(args, " "), err, b)
		}
	}
	nix2aci(append(append([]string{"build"}, runtime...), "--layer-group", "runtime", "--layer-prefix", "example.com/nix")...)
	rt, _ := filepath.Glob(filepath.Join(cli, "example.com_nix_runtime-*.aci"))
	nix2aci(append(append([]string{"build"}, libs...), "--layer-group", "libs", "--layer-prefix", "example.com/nix", "--base", rt[0])...)
	lb, _ := filepath.Glob(filepath.Join(cli, "example.com_nix_libs-*.aci"))
	nix2aci("build", app, "--layered", "--name", "example.com/app", "--base", lb[0])

	storeBin := staticInStore(t, work)
	list := func(ps []string) string {
		var b strings.Builder
		for _, p := range ps {
			b.WriteString(" (builtins.storePath " + p + ")")
		}
		return b.String()
	}
	expr := filepath.Join(work, "chain.nix")
	os.WriteFile(expr, []byte(`let
  n = import `+repo+`;
  nix2aci = builtins.storePath "`+storeBin+`";
  runtime = n.lib.buildLayer { inherit nix2aci; name = "runtime"; packages = [`+list(runtime)+` ]; prefix = "example.com/nix"; };
  libs = n.lib.buildLayer { inherit nix2aci; name = "libs"; packages = [`+list(libs)+` ]; prefix = "example.com/nix"; base = runtime; };
in [ runtime libs (n.lib.buildACI { inherit nix2aci; package = builtins.storePath `+app+`; kind = "layered"; name = "example.com/app"; base = libs; }) ]
`), 0o644)
	res, err := exec.Command("nix-build", "--no-out-link", expr).CombinedOutput()
	if err != nil {
		t.Fatalf("nix-build: %v\n%s", err, res)
	}
	outs := strings.Split(strings.TrimSpace(string(res)), "\n")
	outs = outs[len(outs)-3:]
	seen := map[string]string{}
	compared := 0
	for _, dir := range outs {
		files, _ := filepath.Glob(filepath.Join(dir, "*.aci"))
		for _, f := range files {
			want, err := os.ReadFile(filepath.Join(cli, filepath.Base(f)))
			got, _ := os.ReadFile(f)
			if err != nil || !bytes.Equal(want, got) {
				t.Errorf("%s differs between the CLI and the Nix functions (%v)", filepath.Base(f), err)
			}
			compared++
			if b, err := exec.Command(filepath.Join(toolDir(t), "actool"), "validate", f).CombinedOutput(); err != nil {
				t.Errorf("actool validate %s: %v\n%s", f, err, b)
			}
			for _, p := range lines("tar", "-tzf", f) {
				parts := strings.Split(p, "/")
				if len(parts) >= 4 && parts[0] == "rootfs" && parts[1] == "nix" && parts[2] == "store" && parts[3] != "" {
					if other, ok := seen[parts[3]]; ok && other != f {
						t.Errorf("%s is in %s and %s", parts[3], other, f)
					}
					seen[parts[3]] = f
				}
			}
		}
	}
	if compared != 3 {
		t.Fatalf("compared %d images, want 3", compared)
	}
	// Rendered on its chain as rkt renders it, the app runs.
	deps := t.TempDir()
	for _, dir := range outs[:2] {
		files, _ := filepath.Glob(filepath.Join(dir, "*.aci"))
		for _, f := range files {
			os.Symlink(f, filepath.Join(deps, filepath.Base(f)))
		}
	}
	appImage, _ := filepath.Glob(filepath.Join(outs[2], "app-*.aci"))
	if len(appImage) != 1 {
		t.Fatalf("no app image in %s", outs[2])
	}
	run, _ := filepath.Abs("../../scripts/bwrap-run")
	if b, err := exec.Command(run, "--deps", deps, appImage[0]).CombinedOutput(); err != nil || len(b) == 0 {
		t.Errorf("running the app on its chain: %v\n%s", err, b)
	} else {
		t.Logf("the app on its chain says: %s", strings.TrimSpace(string(b)))
	}
}
