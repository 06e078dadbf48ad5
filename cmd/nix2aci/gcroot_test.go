package main

import (
	"bytes"
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
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

// gcFixture are the packages of TestGCRootsHoldEveryPathOfTheBuild, all
// unique to the test run so that nothing but nix2aci's roots holds them:
// an app, a tool with two outputs, a library; three paths for a group,
// and an app referring to the first of them.
const gcFixture = `let
  mk = attrs: derivation ({ system = builtins.currentSystem; builder = "/bin/sh"; PATH = "/usr/bin:/bin"; nonce = "NONCE"; } // attrs);
in rec {
  app = mk { name = "gcall-1.0"; args = [ "-c" "mkdir -p $out/bin; echo > $out/bin/gcall; chmod +x $out/bin/gcall" ]; };
  tool = mk { name = "gcall-tool-1.0"; outputs = [ "bin" "out" ]; args = [ "-c" "mkdir -p $bin/bin $out/share; echo > $bin/bin/gcall-tool; echo doc > $out/share/doc" ]; };
  lib = mk { name = "gcall-lib-1.0"; args = [ "-c" "mkdir -p $out/lib; echo lib > $out/lib/data" ]; };
  grp = n: mk { name = "gcall-grp-${n}-1.0"; args = [ "-c" "mkdir -p $out/lib; echo ${n} > $out/lib/${n}" ]; };
  grpA = grp "a";
  grpB = grp "b";
  grpC = grp "c";
  on = mk { name = "gcall-on-1.0"; inherit grpA; args = [ "-c" "mkdir -p $out/bin; echo $grpA > $out/bin/gcall-on; chmod +x $out/bin/gcall-on" ]; };
}
`

// Every store path an image is built from has a GC root beside the
// image, whatever the kind: an app's packages (fat, thin, layered, on a
// base), a recipe's layer groups (layered), and every path named to
// --layer-group, not the first only. --json lists exactly the roots
// written, each points at one of those paths, and a rebuild from fewer
// paths takes the roots it no longer needs away. The roots are what keep
// the paths: without them, every one is collectable.
func TestGCRootsHoldEveryPathOfTheBuild(t *testing.T) {
	t.Parallel()
	bin := binary(t)
	dir := t.TempDir()
	nix2aci := func(args ...string) []byte {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "XDG_CACHE_HOME="+filepath.Join(dir, "cache"), "NIX_PATH=", "NIX_CONFIG=substituters =")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("nix2aci %s: %v\n%s", strings.Join(args, " "), err, stderr.Bytes())
		}
		return stdout.Bytes()
	}
	write := func(name, text string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("pkgs.nix", strings.ReplaceAll(gcFixture, "NONCE", dir))
	write("all.nix", `let p = import ./pkgs.nix; in { packages = [ p.app p.tool ]; layers = [ { name = "libs"; packages = [ p.lib ]; } ]; }`)
	write("app.nix", `let p = import ./pkgs.nix; in { packages = [ p.app ]; }`)
	write("on.nix", `let p = import ./pkgs.nix; in { packages = [ p.on ]; }`)
	// The paths the recipes name (tool's is its first output, bin),
	// evaluated, not built: nix2aci builds them.
	var pkg struct{ App, Tool, ToolOut, Lib, On string }
	eval := exec.Command("nix-instantiate", "--eval", "--strict", "--json", "--read-write-mode", "-E",
		`let p = import ./pkgs.nix; in { App = p.app.outPath; Tool = p.tool.outPath; ToolOut = p.tool.out.outPath; Lib = p.lib.outPath; On = p.on.outPath; }`)
	eval.Dir = dir
	out, err := eval.Output()
	if err != nil {
		t.Fatalf("nix-instantiate: %v", err)
	}
	if err := json.Unmarshal(out, &pkg); err != nil {
		t.Fatal(err)
	}
	// The group's paths, given to nix2aci as built store paths.
	build := exec.Command("nix-build", "--no-out-link", "pkgs.nix", "-A", "grpA", "-A", "grpB", "-A", "grpC")
	build.Dir = dir
	if out, err = build.Output(); err != nil {
		t.Fatalf("nix-build: %v", err)
	}
	group := strings.Fields(string(out))
	var all, referrers []string // every path the builds were made from
	defer func() {
		// The roots released, the paths are collectable again (and
		// collected).
		for _, r := range roots(t, dir) {
			os.Remove(filepath.Join(dir, r))
		}
		slices.Sort(all)
		all = slices.Compact(all)
		// Referrers first: nix-store --delete refuses a path that a path
		// it has not deleted yet refers to.
		for _, paths := range [][]string{referrers, all} {
			if len(paths) == 0 {
				continue
			}
			out, err := exec.Command("nix-store", append([]string{"--delete"}, paths...)...).CombinedOutput()
			if err != nil && !t.Failed() {
				t.Errorf("without the roots every path should be collectable: %v\n%s", err, out)
			}
		}
	}()

	cases := []struct {
		name string
		args []string
		want []string
	}{
		{"fat", []string{"build", "./all.nix", "--fat", "--out", "fat"}, []string{pkg.App, pkg.Tool}},
		{"thin", []string{"build", "./all.nix", "--thin", "--out", "thin"}, []string{pkg.App, pkg.Tool}},
		{"layered", []string{"build", "./all.nix", "--layered", "--name", "example.com/gcall", "--out", "layered"}, []string{pkg.App, pkg.Tool, pkg.Lib}},
		{"group of paths", append(append([]string{"build"}, group...), "--layer-group", "grp", "--layer-prefix", "example.com/nix", "--out", "group"), group},
	}
	for _, c := range cases {
		var res struct {
			GCRoots []string `json:"gcRoots"`
		}
		if err := json.Unmarshal(nix2aci(append(c.args, "--no-link", "--no-cache", "--json")...), &res); err != nil {
			t.Fatal(err)
		}
		checkRoots(t, c.name, dir, filepath.Join(dir, c.args[len(c.args)-1]), res.GCRoots, c.want)
		all = append(all, c.want...)
	}
	all = append(all, pkg.ToolOut) // built with tool, held by nothing

	// An app on a base of the group: its own package is rooted, and with
	// it the group path it refers to.
	bases, _ := filepath.Glob(filepath.Join(dir, "group", "example.com_nix_grp-*.aci"))
	if len(bases) != 1 {
		t.Fatalf("group images: %v", bases)
	}
	var res struct {
		GCRoots []string `json:"gcRoots"`
	}
	if err := json.Unmarshal(nix2aci("build", "./on.nix", "--fat", "--base", bases[0], "--out", "onbase", "--no-link", "--no-cache", "--json"), &res); err != nil {
		t.Fatal(err)
	}
	checkRoots(t, "on a base", dir, filepath.Join(dir, "onbase"), res.GCRoots, []string{pkg.On})
	referrers = append(referrers, pkg.On)

	// A rebuild of the fat app from one package: the second root goes,
	// and so does a root an older nix2aci made for a package's other
	// output (gcroot-2-bin).
	old := strings.TrimSuffix(filepath.Join(dir, roots(t, filepath.Join(dir, "fat"))[0]), ".gcroot") + ".gcroot-2-bin"
	if err := os.Symlink(pkg.Tool, old); err != nil {
		t.Fatal(err)
	}
	var again struct {
		GCRoots []string `json:"gcRoots"`
	}
	if err := json.Unmarshal(nix2aci("build", "./app.nix", "--fat", "--out", "fat", "--no-link", "--no-cache", "--json"), &again); err != nil {
		t.Fatal(err)
	}
	checkRoots(t, "fat, rebuilt from one package", dir, filepath.Join(dir, "fat"), again.GCRoots, []string{pkg.App})
}

// roots lists the GC roots (*.gcroot*) in dir and the directories in it,
// relative to dir.
func roots(t *testing.T, dir string) []string {
	t.Helper()
	var found []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.Contains(d.Name(), ".gcroot") {
			rel, _ := filepath.Rel(dir, p)
			found = append(found, rel)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// checkRoots checks that listed, the roots --json listed (relative to
// dir), are the roots in out, that they point at the paths of want and
// no others, and that each of those paths is kept alive.
func checkRoots(t *testing.T, what, dir, out string, listed, want []string) {
	t.Helper()
	var got []string
	for _, r := range roots(t, out) {
		rel, _ := filepath.Rel(dir, filepath.Join(out, r))
		got = append(got, rel)
	}
	sort.Strings(got)
	listed = slices.Sorted(slices.Values(listed))
	if !slices.Equal(got, listed) {
		t.Errorf("%s: --json lists the roots %q; the output directory has %q", what, listed, got)
	}
	var targets []string
	for _, r := range got {
		p, err := os.Readlink(filepath.Join(dir, r))
		if err != nil {
			t.Errorf("%s: %v", what, err)
		}
		targets = append(targets, p)
	}
	sort.Strings(targets)
	if w := slices.Sorted(slices.Values(want)); !slices.Equal(targets, w) {
		t.Errorf("%s: the roots point at\n  %s\nwant\n  %s", what, strings.Join(targets, "\n  "), strings.Join(w, "\n  "))
	}
	for _, p := range want {
		out, err := exec.Command("nix-store", "--delete", p).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "still alive") {
			t.Errorf("%s: nix-store --delete %s: %v\n%s; want it refused while the roots exist", what, p, err, out)
		}
	}
}
