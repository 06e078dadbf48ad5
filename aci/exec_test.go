package aci_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/nix2aci/nix2aci/aci"
	"github.com/nix2aci/nix2aci/manifest"
	"github.com/nix2aci/nix2aci/nixstore"
	"github.com/nix2aci/nix2aci/nixstore/nixtest"
)

// execImage is an image of packages (the first one names it) running exec.
func execImage(t *testing.T, exec string, packages ...string) aci.Image {
	t.Helper()
	g, err := nixstore.Closure(context.Background(), packages)
	if err != nil {
		t.Fatal(err)
	}
	im, err := manifest.New(manifest.Spec{Name: "example.com/exec", System: "x86_64-linux", Exec: []string{exec}})
	if err != nil {
		t.Fatal(err)
	}
	return aci.Image{Manifest: im, Closure: g, Packages: packages}
}

// The commonest way a Nix-built image fails at run time, caught at build
// time: a script whose "#!" interpreter, or a binary whose ELF loader, is
// not in the image.
func TestCheckExec(t *testing.T) {
	busybox := nixtest.Build(t, `mk "exec-busybox-1.0" "mkdir -p $out/bin; cp /bin/busybox $out/bin/busybox; ln -s busybox $out/bin/sh"`)
	script := nixtest.Build(t, `mk "exec-script-1.0" "mkdir -p $out/bin; printf '#!/bin/sh\necho hi\n' > $out/bin/app; chmod +x $out/bin/app"`)
	storeScript := nixtest.Build(t, `let bb = mk "exec-busybox-1.0" "mkdir -p $out/bin; cp /bin/busybox $out/bin/busybox; ln -s busybox $out/bin/sh"; in
  mk "exec-store-script-1.0" "mkdir -p $out/bin; printf '#!${bb}/bin/sh\necho hi\n' > $out/bin/app; chmod +x $out/bin/app"`)
	hostELF := nixtest.Build(t, `mk "exec-host-elf-1.0" "mkdir -p $out/bin; cp /usr/bin/true $out/bin/true"`)
	notExec := nixtest.Build(t, `mk "exec-not-exec-1.0" "mkdir -p $out/bin; echo data > $out/bin/app"`)
	loop := nixtest.Build(t, `mk "exec-loop-1.0" "mkdir -p $out/bin; ln -s /bin/app $out/bin/app"`)
	for _, tc := range []struct {
		name     string
		img      aci.Image
		err      string
		mentions []string
	}{
		{"static busybox", execImage(t, "/bin/busybox", busybox), "", nil},
		{"script with its shell in the farm", execImage(t, "/bin/app", script, busybox), "", nil},
		{"script whose #! names a store path of the closure", execImage(t, "/bin/app", storeScript), "", nil},
		{"exec through a store path", execImage(t, storeScript+"/bin/app", storeScript), "", nil},
		{"script without /bin/sh", execImage(t, "/bin/app", script), "/bin/sh is not in the image", []string{"interpreter /bin/sh", script + "/bin/app", "busybox"}},
		{"host binary", execImage(t, "/bin/true", hostELF), "ELF interpreter /lib64/ld-linux-x86-64.so.2", []string{"is not in the image", "patchelf"}},
		{"missing program", execImage(t, "/bin/nothing", busybox), "/bin/nothing is not in the image", []string{"exec[0]"}},
		{"not executable", execImage(t, "/bin/app", notExec), "is not an executable file", nil},
		{"a directory", execImage(t, "/bin", busybox), "/bin is a directory", nil},
		{"link loop", execImage(t, "/bin/app", loop), "too many levels of symbolic links", nil},
	} {
		err := aci.CheckExec(tc.img)
		if tc.err == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
			continue
		}
		var ee *aci.ExecError
		if !errors.As(err, &ee) || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: got %v, want an ExecError containing %q", tc.name, err, tc.err)
			continue
		}
		for _, m := range tc.mentions {
			if !strings.Contains(err.Error(), m) {
				t.Errorf("%s: %q does not mention %q", tc.name, err, m)
			}
		}
	}
}
