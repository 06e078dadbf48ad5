package pipeline

import (
	"context"
	"runtime"
	"strings"
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

// Rules resolve names through the users and groups the skeleton writes,
// take their defaults, override the skeleton's own paths, and refuse what
// cannot be applied with the fix.
func TestPathRules(t *testing.T) {
	users := []manifest.User{{Name: "web", UID: 1000}, {Name: "job", UID: 1001, Group: "web"}}
	groups := []manifest.Group{{Name: "audit", GID: 2000}}
	extra, err := Skeleton(manifest.Spec{Users: users, Groups: groups, Paths: []manifest.PathRule{
		{Path: "/var/lib/web", Mode: "0700", User: "web", Group: "web"},
		{Path: "/var/log/job", User: "job", Group: "audit"},
		{Path: "/etc/job.conf", Type: "file", Group: "2000"},
		{Path: "/tmp", Mode: "1770", Group: "web"},
		{Path: "/etc/passwd", Type: "file", Mode: "0640", User: "nobody"},
		{Path: "/srv", Mode: "2775", User: "65000"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]aci.Extra{}
	for _, x := range extra {
		got[x.Path] = x
	}
	for _, w := range []aci.Extra{
		{Path: "var/lib/web", Dir: true, Mode: 0o700, Uid: 1000, Gid: 1000, Rule: true},
		{Path: "var/log/job", Dir: true, Mode: 0o755, Uid: 1001, Gid: 2000, Rule: true},
		{Path: "etc/job.conf", Mode: 0o644, Gid: 2000, Rule: true},
		{Path: "tmp", Dir: true, Mode: 0o1770, Gid: 1000, Rule: true},
		{Path: "etc/passwd", Mode: 0o640, Uid: 65534, Rule: true},
		{Path: "srv", Dir: true, Mode: 0o2775, Uid: 65000, Rule: true},
		{Path: "var/tmp", Dir: true, Mode: 0o1777},
	} {
		g := got[w.Path]
		if g.Dir != w.Dir || g.Mode != w.Mode || g.Uid != w.Uid || g.Gid != w.Gid || g.Rule != w.Rule {
			t.Errorf("%s: got %+v, want %+v", w.Path, g, w)
		}
	}
	if p := got["etc/passwd"]; !strings.Contains(string(p.Data), "web:x:1000:1000:") {
		t.Errorf("a rule on /etc/passwd lost its contents: %q", p.Data)
	}
	if len(extra) != 9 {
		t.Errorf("%d extras, want the skeleton's 5 and 4 rules: %+v", len(extra), extra)
	}

	for _, tc := range []struct {
		name  string
		rules []manifest.PathRule
		off   bool
		want  string
	}{
		{"relative", []manifest.PathRule{{Path: "var/lib"}}, false, "paths: var/lib is not an absolute path"},
		{"dotdot", []manifest.PathRule{{Path: "/var/../etc"}}, false, `has a ".." component`},
		{"unclean", []manifest.PathRule{{Path: "/var//lib/"}}, false, `paths: /var//lib/ is not canonical: write it /var/lib`},
		{"root", []manifest.PathRule{{Path: "/"}}, false, "the image root / keeps its mode and owner"},
		{"nix", []manifest.PathRule{{Path: "/nix"}}, false, "paths: /nix is in /nix: the store is content-addressed"},
		{"store", []manifest.PathRule{{Path: "/nix/store/abc-x/etc"}}, false, "the mode and owner of its files are not changed"},
		{"control", []manifest.PathRule{{Path: "/var/a\nb"}}, false, "holds a control character"},
		{"twice", []manifest.PathRule{{Path: "/a"}, {Path: "/a", Mode: "0700"}}, false, "paths: /a has two rules"},
		{"type", []manifest.PathRule{{Path: "/a", Type: "dir"}}, false, `paths: /a has type "dir": a rule's type is "directory"`},
		{"mode digits", []manifest.PathRule{{Path: "/a", Mode: "0o755"}}, false, `has mode "0o755": give it as 3 or 4 octal digits`},
		{"mode 8", []manifest.PathRule{{Path: "/a", Mode: "0758"}}, false, "3 or 4 octal digits"},
		{"mode 0", []manifest.PathRule{{Path: "/a", Mode: "000"}}, false, "lets no one but root use it"},
		{"setuid", []manifest.PathRule{{Path: "/a", Mode: "4755"}}, false, "setuid is not allowed"},
		{"setgid file", []manifest.PathRule{{Path: "/a", Type: "file", Mode: "2644"}}, false, "allowed on directories only"},
		{"sticky file", []manifest.PathRule{{Path: "/a", Type: "file", Mode: "1644"}}, false, "allowed on directories only"},
		{"unknown user", []manifest.PathRule{{Path: "/a", User: "wbe"}}, false, `paths: /a has user "wbe", which the image does not define (it has root, web, job, nobody): declare it in the recipe (users = [ { name = "wbe"; ... } ])`},
		{"unknown group", []manifest.PathRule{{Path: "/a", Group: "job"}}, false, `paths: /a has group "job", which the image does not define (it has root, web, audit, nobody)`},
		{"big id", []manifest.PathRule{{Path: "/a", User: "4294967295"}}, false, "not a name or a number from 0 to"},
		{"id form", []manifest.PathRule{{Path: "/a", User: "01000"}}, false, "not a name or a number"},
		{"no skeleton", []manifest.PathRule{{Path: "/a", User: "nobody"}}, true, "the skeleton is off (skeleton = false)"},
		{"file over skeleton dir", []manifest.PathRule{{Path: "/tmp", Type: "file"}}, false, `paths: /tmp is a directory of the image's skeleton, but the rule makes it a file`},
		{"dir over skeleton file", []manifest.PathRule{{Path: "/etc/group"}}, false, "is a file of the image's skeleton, but the rule makes it a directory"},
		{"below a skeleton file", []manifest.PathRule{{Path: "/etc/passwd/x"}}, false, "paths: /etc/passwd is a file, but /etc/passwd/x lies below it"},
		{"file above the skeleton", []manifest.PathRule{{Path: "/etc", Type: "file"}}, false, "paths: /etc is a file, but /etc/"},
	} {
		spec := manifest.Spec{Users: users, Groups: groups, Paths: tc.rules, NoSkeleton: tc.off}
		if tc.off {
			spec.Users, spec.Groups = nil, nil
		}
		_, err := Skeleton(spec)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v; want %q", tc.name, err, tc.want)
		}
	}
	// Without the skeleton, numbers and root still resolve.
	extra, err = Skeleton(manifest.Spec{NoSkeleton: true, Paths: []manifest.PathRule{{Path: "/data", User: "root", Group: "1000"}}})
	if err != nil || len(extra) != 1 || extra[0].Gid != 1000 {
		t.Errorf("rules without the skeleton: %+v, %v", extra, err)
	}
}

// The exec check follows the rules: the app's uid, gid or others must be
// able to enter each rule directory on the way to its program and working
// directory.
func TestRuleAccess(t *testing.T) {
	pkg := nixtest.Build(t, `mk "rules-access-1.0" "mkdir -p $out/bin; echo '#!/bin/sh' > $out/bin/tool; chmod 755 $out/bin/tool"`)
	rules := []manifest.PathRule{
		{Path: "/bin", Mode: "0710", Group: "50"},
		{Path: "/srv", Mode: "0750", User: "1000"},
		{Path: "/srv/data", Mode: "0701"},
	}
	for _, tc := range []struct {
		user, group, wd string
		want            string
	}{
		{"1000", "50", "/srv/data", ""}, // group may enter /bin, owner /srv, others /srv/data
		{"0", "0", "/srv/data", ""},     // root may enter anything
		{"1000", "1", "", "cannot enter to reach its program /bin/tool"},
		{"1001", "50", "/srv/data", "the app runs as uid 1001, gid 50, but the recipe's paths make /srv mode 0750, owner 1000:0, which it cannot enter to reach its working directory /srv/data"},
		{"1000", "50", "/srv", ""},
	} {
		spec := manifest.Spec{Name: "example.com/access", System: "x86_64-linux", Exec: []string{"/bin/tool"}, User: tc.user, Group: tc.group, WorkingDirectory: tc.wd, Paths: rules}
		im, err := manifest.New(spec)
		if err != nil {
			t.Fatal(err)
		}
		extra, err := Skeleton(spec)
		if err != nil {
			t.Fatal(err)
		}
		img := aci.Image{Manifest: im, Closure: &nixstore.Graph{Roots: []string{pkg}, Paths: []nixstore.PathInfo{{Path: pkg}}}, Packages: []string{pkg}, Extra: extra}
		err = checkUserGroup(img, tc.user, tc.group)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("user %s group %s wd %q: %v; want %q", tc.user, tc.group, tc.wd, err, tc.want)
		}
	}
}
