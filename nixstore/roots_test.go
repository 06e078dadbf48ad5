package nixstore_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nix2aci/nix2aci/nixstore"
	"github.com/nix2aci/nix2aci/nixstore/nixtest"
)

// AddRoots puts one root on each path, a path given twice once, names
// them as nix-store does and says so, and the roots keep the paths.
func TestAddRoots(t *testing.T) {
	dir := t.TempDir()
	a := nixtest.Build(t, `mk "roots-a-1.0" "echo `+dir+` > $out"`)
	b := nixtest.Build(t, `mk "roots-b-1.0" "echo `+dir+` > $out"`)
	t.Chdir(dir)
	made, err := nixstore.AddRoots(context.Background(), filepath.Join("out", "x.gcroot"), []string{a, b, a})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"out/x.gcroot", "out/x.gcroot-2"}
	if !slices.Equal(made, want) {
		t.Fatalf("roots %q, want %q", made, want)
	}
	for i, p := range []string{a, b} {
		if target, err := os.Readlink(made[i]); err != nil || target != p {
			t.Errorf("%s points at %q (%v), want %s", made[i], target, err, p)
		}
		out, err := exec.Command("nix-store", "--delete", p).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "still alive") {
			t.Errorf("nix-store --delete %s: %v\n%s; want it refused while the root exists", p, err, out)
		}
	}
	ents, _ := os.ReadDir("out")
	if len(ents) != 2 {
		t.Errorf("out holds %d files, want the 2 roots", len(ents))
	}
	for _, r := range made {
		os.Remove(r)
	}
	if out, err := exec.Command("nix-store", "--delete", a, b).CombinedOutput(); err != nil {
		t.Errorf("without the roots the paths should be collectable: %v\n%s", err, out)
	}
}

func TestAddRootsRefusesWhatIsNoStorePath(t *testing.T) {
	dir := t.TempDir()
	_, err := nixstore.AddRoots(context.Background(), filepath.Join(dir, "x.gcroot"), []string{"/etc"})
	if err == nil || !strings.Contains(err.Error(), "not \"/etc\"") {
		t.Fatalf("err = %v, want a refusal naming /etc", err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "x.gcroot")); err == nil {
		t.Error("a root was made")
	}
}
