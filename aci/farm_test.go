package aci

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/nix2aci/nix2aci/nixstore/nixtest"
)

func TestPathLess(t *testing.T) {
	got := []string{"a-b", "a/c", "a", "b", "a/b/c", "a.b", "nix", "nix/store", "bin/sh", "bin"}
	sort.Slice(got, func(i, j int) bool { return pathLess(got[i], got[j]) })
	want := []string{"a", "a/b/c", "a/c", "a-b", "a.b", "b", "bin", "bin/sh", "nix", "nix/store"}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
}

// A store path may be a symlink to a directory of the build host; the
// farm must not take that directory's entry names into the image. A link
// to another store path is followed.
func TestFarmStaysInTheStore(t *testing.T) {
	host := t.TempDir()
	os.MkdirAll(filepath.Join(host, "bin"), 0o755)
	os.WriteFile(filepath.Join(host, "bin", "host-secret"), nil, 0o755)
	out := nixtest.Build(t, `mk "farm-to-host-1.0" "ln -s `+host+` $out"`)
	farm, _, err := buildFarm([]string{out})
	if err != nil {
		t.Fatal(err)
	}
	if len(farm) != 0 {
		t.Errorf("a link to the host's %s put %v into the farm", host, farm)
	}
	toStore := nixtest.Build(t, `let
  real = mk "farm-real-1.0" "mkdir -p $out/bin; touch $out/bin/tool";
in mk "farm-to-store-1.0" "ln -s ${real} $out"`)
	farm, _, err = buildFarm([]string{toStore})
	if err != nil {
		t.Fatal(err)
	}
	if len(farm) != 2 || farm[1].rel != "bin/tool" || !strings.HasPrefix(farm[1].target, "/nix/store/") {
		t.Errorf("a link to another store path gave the farm %v", farm)
	}
}
