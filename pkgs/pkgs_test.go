package pkgs_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nix2aci/nix2aci/pkgs"
)

func TestParseName(t *testing.T) {
	tests := []struct{ in, name, version string }{
		{"hello-2.12.1", "hello", "2.12.1"},
		{"busybox-static-1.35.0", "busybox-static", "1.35.0"},
		{"python3.11-requests-2.31.0", "python3.11-requests", "2.31.0"},
		{"Foo_Bar+baz-1.0", "Foo_Bar+baz", "1.0"},
		{"source", "source", ""},
		{"gcc-wrapper-12.2.0-lib", "gcc-wrapper", "12.2.0-lib"},
	}
	for _, tt := range tests {
		name, version := pkgs.ParseName(tt.in)
		if name != tt.name || version != tt.version {
			t.Errorf("ParseName(%q) = %q, %q; want %q, %q", tt.in, name, version, tt.name, tt.version)
		}
	}
}

func TestList(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "busybox.nix"), []byte("# Mine.\n{ pkgs }: { packages = [ pkgs.busybox ]; }\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "extra.nix"), []byte("{ pkgs }: { packages = [ ]; }\n"), 0o644)
	list, err := pkgs.List(pkgs.WithUserRecipes(dir))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]pkgs.Recipe{}
	for _, r := range list {
		got[r.Name] = r
	}
	for _, want := range []string{"busybox", "busybox-static", "bash", "generic", "extra"} {
		if _, ok := got[want]; !ok {
			t.Errorf("recipe %s not listed", want)
		}
	}
	if r := got["busybox"]; r.Source != filepath.Join(dir, "busybox.nix") || r.Summary != "Mine." {
		t.Errorf("user busybox recipe does not override the built-in one: %+v", r)
	}
	if r := got["bash"]; r.Source != "built-in" || r.Summary == "" {
		t.Errorf("bash: %+v", r)
	}
}

func TestResolveRejects(t *testing.T) {
	ctx := context.Background()
	var nf *pkgs.NotFoundError
	for _, target := range []string{"", "has spaces", "./nothing.nix", "-x"} {
		if _, err := pkgs.Resolve(ctx, target); !errors.As(err, &nf) {
			t.Errorf("Resolve(%q): got %v, want a NotFoundError", target, err)
		} else if !strings.Contains(err.Error(), target) {
			t.Errorf("Resolve(%q): error does not name the target: %v", target, err)
		}
	}
}

// TestBuildSystems: the systems Nix builds for are this host's, its
// extra-platforms and its remote builders', from a machines file too.
func TestBuildSystems(t *testing.T) {
	machines := filepath.Join(t.TempDir(), "machines")
	if err := os.WriteFile(machines, []byte("# a farm\nssh://arm.example aarch64-linux,armv7l-linux - 4\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("NIX_CONFIG", os.Getenv("NIX_CONFIG")+"\nextra-platforms = powerpc64le-linux\nbuilders = @"+machines+" ; ssh://s390.example s390x-linux")
	got, err := pkgs.BuildSystems(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got[0] != pkgs.HostSystem() {
		t.Fatalf("systems %v: the host's first", got)
	}
	for _, want := range []string{"powerpc64le-linux", "aarch64-linux", "armv7l-linux", "s390x-linux"} {
		if !slices.Contains(got, want) {
			t.Errorf("systems %v lack %s", got, want)
		}
	}
}

// TestEvaluate: a file called as a recipe is, with the package set
// recipes get (here the offline set), evaluates to its JSON; output past
// the bound and an evaluation error are refused, naming the file.
func TestEvaluate(t *testing.T) {
	t.Setenv("NIX_PATH", "")
	dir := t.TempDir()
	names := filepath.Join(dir, "names.nix")
	os.WriteFile(names, []byte("{ pkgs }: builtins.attrNames pkgs\n"), 0o644)
	out, err := pkgs.Evaluate(context.Background(), names, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), `"busybox"`) || !strings.HasPrefix(string(out), "[") {
		t.Fatalf("the offline set's names: %s", out)
	}
	var nf *pkgs.NotFoundError
	if _, err := pkgs.Evaluate(context.Background(), names, 10); !errors.As(err, &nf) || !strings.Contains(err.Error(), "over 10 bytes") || !strings.Contains(err.Error(), names) {
		t.Errorf("past the bound: %v, want a NotFoundError naming the file and the bound", err)
	}
	bad := filepath.Join(dir, "bad.nix")
	os.WriteFile(bad, []byte(`{ pkgs }: throw "no names here"`), 0o644)
	if _, err := pkgs.Evaluate(context.Background(), bad, 1<<20); !errors.As(err, &nf) || !strings.Contains(err.Error(), "no names here") {
		t.Errorf("a failing evaluation: %v, want a NotFoundError with Nix's message", err)
	}
	if _, err := pkgs.Evaluate(context.Background(), "names.nix", 1<<20); err == nil {
		t.Error("a relative path was evaluated")
	}
}
