package aci

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/nix2aci/nix2aci/nixstore"
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

// Extras (the /etc skeleton) fill in only what packages leave: a path a
// package provides, or one below a link a package provides, stays theirs,
// and ImageFile says when a file is reached through links.
func TestExtrasYieldToPackages(t *testing.T) {
	pkg := nixtest.Build(t, `mk "etc-provider-1.0" "mkdir -p $out/etc $out/bin; echo 'app:x:5:5::/:/bin/false' > $out/etc/passwd; touch $out/bin/app"`)
	extras := []Extra{
		{Path: "etc/passwd", Mode: 0o644, Data: []byte("root:x:0:0::/:/bin/sh\n")},
		{Path: "etc/group", Mode: 0o644, Data: []byte("root:x:0:\n")},
		{Path: "bin/app/inside", Data: []byte("x")},
		{Path: "tmp", Dir: true, Mode: 0o1777},
	}
	img := Image{Packages: []string{pkg}, Closure: &nixstore.Graph{Paths: []nixstore.PathInfo{{Path: pkg}}}, Extra: extras}
	farm, _, err := imageFarm(img)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]farmEntry{}
	for _, e := range farm {
		got[e.rel] = e
	}
	if e := got["etc/passwd"]; e.file || e.target == "" {
		t.Errorf("the package's etc/passwd was replaced: %+v", e)
	}
	if e := got["etc/group"]; !e.file || string(e.data) != "root:x:0:\n" {
		t.Errorf("etc/group: %+v", e)
	}
	if _, ok := got["bin/app/inside"]; ok {
		t.Error("an extra was put below a package's file")
	}
	if e := got["tmp"]; e.mode != 0o1777 || e.target != "" {
		t.Errorf("tmp: %+v", e)
	}
	data, links, err := ImageFile(img, "/etc/passwd", 1<<10)
	if err != nil || !links || !strings.HasPrefix(string(data), "app:x:5") {
		t.Errorf("ImageFile(/etc/passwd) = %q, %v, %v", data, links, err)
	}
	data, links, err = ImageFile(img, "/etc/group", 1<<10)
	if err != nil || links || string(data) != "root:x:0:\n" {
		t.Errorf("ImageFile(/etc/group) = %q, %v, %v", data, links, err)
	}
}
