package pipeline

import (
	"context"
	"runtime"
	"testing"

	"github.com/nix2aci/nix2aci/aci"
	"github.com/nix2aci/nix2aci/manifest"
	"github.com/nix2aci/nix2aci/nixstore"
	"github.com/nix2aci/nix2aci/nixstore/nixtest"
)

// An image without path rules has the bytes it had before rules existed:
// its image ID is the one recorded from the commit before them. The
// fixture's store path depends only on its expression and the system
// (its builder is named, not hashed), so the ID is the same on every
// x86_64-linux machine.
func TestImageWithoutRulesUnchanged(t *testing.T) {
	if runtime.GOOS != "linux" || runtime.GOARCH != "amd64" {
		t.Skip("the recorded image ID is x86_64-linux's")
	}
	pkg := nixtest.Build(t, `mk "rules-golden-1.0" "mkdir -p $out/bin $out/var/lib; echo '#!/bin/sh' > $out/bin/tool; chmod 755 $out/bin/tool; ln -s tool $out/bin/alias"`)
	spec := manifest.Spec{Name: "example.com/golden", Version: "1", System: "x86_64-linux", Exec: []string{"/bin/tool"},
		Users: []manifest.User{{Name: "web", UID: 1000}}}
	im, err := manifest.New(spec)
	if err != nil {
		t.Fatal(err)
	}
	extra, err := Skeleton(spec)
	if err != nil {
		t.Fatal(err)
	}
	img := aci.Image{Manifest: im, Closure: &nixstore.Graph{Roots: []string{pkg}, Paths: []nixstore.PathInfo{{Path: pkg}}}, Packages: []string{pkg}, Extra: extra}
	res, err := aci.Write(context.Background(), discard{}, img, aci.WithCompression(aci.None, 0))
	if err != nil {
		t.Fatal(err)
	}
	const want = "sha512-1e0361086fefce6f91883fef6d61aa867a6dea76c15d10b3c0eb0451222b3477c79826221e6669ce66423548d08dc4e24b1dc5568a38af6a41107057237a8689"
	if res.ImageID != want {
		t.Errorf("image ID %s, want %s (recorded before path rules): the bytes of an image without rules changed", res.ImageID, want)
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
