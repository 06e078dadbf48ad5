package aci_test

import (
	"archive/tar"
	"bytes"
	"io"
	"strings"
	"testing"

	"github.com/nix2aci/nix2aci/aci"
	"github.com/nix2aci/nix2aci/nixstore/nixtest"
)

// Extras carry their owner into the tar headers as numbers, with no user
// or group names; a rule (Extra.Rule) on a directory of a package gives
// that directory its mode and owner; everything else stays root's.
func TestExtraOwnersInTheArchive(t *testing.T) {
	pkg := nixtest.Build(t, `mk "owner-pkg-1.0" "mkdir -p $out/bin $out/var/www; echo '#!/bin/sh' > $out/bin/hello; chmod 755 $out/bin/hello; echo hi > $out/var/www/index.html"`)
	img := image(t, pkg, false)
	img.Extra = []aci.Extra{
		{Path: "var/tmp", Dir: true, Mode: 0o1777},                        // the skeleton's
		{Path: "var", Dir: true, Mode: 0o750, Uid: 7, Gid: 8, Rule: true}, // a package's directory, after a child
		{Path: "var/lib/web", Dir: true, Mode: 0o700, Uid: 1000, Gid: 1000, Rule: true},
		{Path: "etc/web.conf", Mode: 0o640, Gid: 1000, Rule: true},
		{Path: "bin", Dir: true, Mode: 0o700}, // not a rule: the package's bin/ stays as it is
	}
	b, _ := write(t, img, aci.WithCompression(aci.None, 0))
	type hdr struct {
		mode     int64
		uid, gid int
	}
	want := map[string]hdr{
		"rootfs/var/":               {0o750, 7, 8},
		"rootfs/var/tmp/":           {0o1777, 0, 0},
		"rootfs/var/lib/":           {0o755, 0, 0},
		"rootfs/var/lib/web/":       {0o700, 1000, 1000},
		"rootfs/var/www/":           {0o755, 0, 0},
		"rootfs/etc/":               {0o755, 0, 0},
		"rootfs/etc/web.conf":       {0o640, 0, 1000},
		"rootfs/bin/":               {0o755, 0, 0},
		"rootfs/var/www/index.html": {0o777, 0, 0},
	}
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Uname != "" || h.Gname != "" || len(h.PAXRecords) != 0 {
			t.Errorf("%s: names %q/%q, PAX records %v; want none", h.Name, h.Uname, h.Gname, h.PAXRecords)
		}
		w, ok := want[h.Name]
		if !ok {
			if h.Uid != 0 || h.Gid != 0 {
				t.Errorf("%s: owner %d:%d, want 0:0", h.Name, h.Uid, h.Gid)
			}
			continue
		}
		delete(want, h.Name)
		if h.Typeflag == tar.TypeSymlink {
			w.mode = 0o777
		}
		if h.Mode != w.mode || h.Uid != w.uid || h.Gid != w.gid {
			t.Errorf("%s: mode %o owner %d:%d, want mode %o owner %d:%d", h.Name, h.Mode, h.Uid, h.Gid, w.mode, w.uid, w.gid)
		}
	}
	for n := range want {
		t.Errorf("%s is not in the archive", n)
	}
}

// A rule is refused, by CheckExtra and by Write alike, on a path a package
// provides as a link, below one, as a file where a package has a
// directory, and in /nix; the error names the package.
func TestRulesRefusePackagePaths(t *testing.T) {
	pkg := nixtest.Build(t, `mk "owner-refuse-1.0" "mkdir -p $out/bin $out/share; echo '#!/bin/sh' > $out/bin/hello; chmod 755 $out/bin/hello; ln -s /nix/store $out/share/link"`)
	for _, tc := range []struct {
		x    aci.Extra
		want string
	}{
		{aci.Extra{Path: "bin/hello", Rule: true}, "paths: /bin/hello is a link into package " + pkg + " in the image's symlink farm"},
		{aci.Extra{Path: "bin/hello/x", Dir: true, Rule: true}, "paths: /bin/hello/x lies below /bin/hello, a link into package " + pkg},
		{aci.Extra{Path: "share/link/y", Dir: true, Rule: true}, "lies below /share/link, a link into package"},
		{aci.Extra{Path: "share", Rule: true}, "paths: /share is a directory of package " + pkg + ", and the rule makes it a file"},
		{aci.Extra{Path: "nix/store/x", Dir: true, Rule: true}, "the store is content-addressed and stays root-owned"},
		{aci.Extra{Path: "etc/conf/x", Dir: true, Rule: true}, "paths: /etc/conf/x lies below /etc/conf, a file of the image's skeleton or rules"},
	} {
		img := image(t, pkg, false)
		img.Extra = []aci.Extra{tc.x, {Path: "etc/conf", Data: []byte("x")}}
		err := aci.CheckExtra(img)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: CheckExtra: %v; want %q", tc.x.Path, err, tc.want)
		}
		if _, err := aci.Write(t.Context(), io.Discard, img); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Write: %v; want %q", tc.x.Path, err, tc.want)
		}
		// Not a rule: the packages win, silently, as for the skeleton.
		tc.x.Rule = false
		img.Extra[0] = tc.x
		if err := aci.CheckExtra(img); err != nil {
			t.Errorf("%s without Rule: %v", tc.x.Path, err)
		}
	}
}
