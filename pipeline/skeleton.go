package pipeline

import (
	"bufio"
	"bytes"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/nix2aci/nix2aci/aci"
	"github.com/nix2aci/nix2aci/manifest"
)

// The skeleton every image gets (unless its recipe says skeleton = false)
// where its packages do not provide the path:
//
//	/etc/passwd         root, nobody, then the recipe's users
//	/etc/group          root, nobody, then the recipe's groups and users' groups
//	/etc/nsswitch.conf  files, then dns for hosts
//	/tmp, /var/tmp      mode 1777
//
// rkt provides the rest at run time: /etc/hosts (a stub when the image
// has none, or the host's or its own with --hosts-entry), /etc/resolv.conf
// (with --dns), and a tmpfs on /tmp under stage1-fly.

var userName = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)

const nobody = 65534

// SkeletonError is a recipe's users, groups or path rules that cannot be
// written.
type SkeletonError struct{ Msg string }

func (e *SkeletonError) Error() string { return e.Msg }

func skelErr(format string, args ...any) error {
	return &SkeletonError{Msg: fmt.Sprintf(format, args...)}
}

// Skeleton returns the files of spec's skeleton with spec's path rules
// applied (see rules.go), or an error naming a user or group that clashes or
// is malformed, or a rule that cannot be applied.
func Skeleton(spec manifest.Spec) ([]aci.Extra, error) {
	extra, known, err := skeleton(spec)
	if err != nil {
		return nil, err
	}
	return applyRules(spec.Paths, extra, known)
}

// ids are the users and groups an image defines, by name, as its
// skeleton writes them; skeleton is false when it has none.
type ids struct {
	users, groups map[string]int
	skeleton      bool
}

func skeleton(spec manifest.Spec) ([]aci.Extra, ids, error) {
	if spec.NoSkeleton {
		if len(spec.Users) > 0 || len(spec.Groups) > 0 {
			return nil, ids{}, skelErr("the recipe declares users or groups but turns the skeleton off (skeleton = false): /etc/passwd and /etc/group are the skeleton's; keep it, or provide them in a package")
		}
		return nil, ids{users: map[string]int{"root": 0}, groups: map[string]int{"root": 0}}, nil
	}
	type group struct {
		name    string
		gid     int
		members []string
	}
	groups := []*group{{"root", 0, nil}, {"nobody", nobody, nil}}
	byName := map[string]*group{"root": groups[0], "nobody": groups[1]}
	byGID := map[int]string{0: "root", nobody: "nobody"}
	addGroup := func(name string, gid int, members []string) error {
		if !userName.MatchString(name) {
			return skelErr("group name %q is not a valid name (lower case, digits, _ and -, at most 32, not starting with a digit)", name)
		}
		if gid < 0 || gid > 1<<31-2 {
			return skelErr("group %s: gid %d is out of range", name, gid)
		}
		if g, ok := byName[name]; ok {
			if g.gid != gid {
				return skelErr("group %s is declared twice, with gids %d and %d", name, g.gid, gid)
			}
			g.members = append(g.members, members...)
			return nil
		}
		if other, ok := byGID[gid]; ok {
			return skelErr("groups %s and %s both have gid %d: give each its own", other, name, gid)
		}
		g := &group{name, gid, members}
		groups = append(groups, g)
		byName[name], byGID[gid] = g, name
		return nil
	}
	for _, g := range spec.Groups {
		if err := addGroup(g.Name, g.GID, g.Members); err != nil {
			return nil, ids{}, err
		}
	}
	var passwd bytes.Buffer
	passwd.WriteString("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
	users := map[string]bool{"root": true, "nobody": true}
	uids := map[int]string{0: "root", nobody: "nobody"}
	for _, u := range spec.Users {
		if !userName.MatchString(u.Name) {
			return nil, ids{}, skelErr("user name %q is not a valid name (lower case, digits, _ and -, at most 32, not starting with a digit)", u.Name)
		}
		if users[u.Name] {
			return nil, ids{}, skelErr("user %s is declared twice (or is root or nobody, which every image has)", u.Name)
		}
		if u.UID < 0 || u.UID > 1<<31-2 {
			return nil, ids{}, skelErr("user %s: uid %d is out of range", u.Name, u.UID)
		}
		if other, ok := uids[u.UID]; ok {
			return nil, ids{}, skelErr("users %s and %s both have uid %d: give each its own", other, u.Name, u.UID)
		}
		users[u.Name], uids[u.UID] = true, u.Name
		gname := u.Group
		if gname == "" {
			gname = u.Name
		}
		gid := u.UID
		if g, ok := byName[gname]; ok {
			gid = g.gid
		}
		if u.GID != nil {
			gid = *u.GID
		}
		if err := addGroup(gname, gid, nil); err != nil {
			return nil, ids{}, fmt.Errorf("user %s: %w", u.Name, err)
		}
		home, shell := u.Home, u.Shell
		if home == "" {
			home = "/var/empty"
		}
		if shell == "" {
			shell = "/bin/false"
		}
		for _, f := range []string{home, shell} {
			if !strings.HasPrefix(f, "/") || strings.ContainsAny(f, ":\n") {
				return nil, ids{}, skelErr("user %s: %q is not an absolute path without ':'", u.Name, f)
			}
		}
		fmt.Fprintf(&passwd, "%s:x:%d:%d::%s:%s\n", u.Name, u.UID, gid, home, shell)
	}
	var grp bytes.Buffer
	known := ids{users: map[string]int{}, groups: map[string]int{}, skeleton: true}
	for _, g := range groups {
		fmt.Fprintf(&grp, "%s:x:%d:%s\n", g.name, g.gid, strings.Join(g.members, ","))
		known.groups[g.name] = g.gid
	}
	for uid, name := range uids {
		known.users[name] = uid
	}
	return []aci.Extra{
		{Path: "etc/passwd", Mode: 0o644, Data: passwd.Bytes()},
		{Path: "etc/group", Mode: 0o644, Data: grp.Bytes()},
		{Path: "etc/nsswitch.conf", Mode: 0o644, Data: []byte("passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\nprotocols: files\nservices: files\n")},
		{Path: "tmp", Dir: true, Mode: 0o1777},
		{Path: "var/tmp", Dir: true, Mode: 0o1777},
	}, known, nil
}

// checkUserGroup checks that the app's user and group resolve in the
// image as rkt resolves them (stage1's ParseUserGroup): a number as it
// is; a path by the owner of that file; a name through the rendered
// root's etc/passwd or etc/group, which stage1 reads from the host's side
// of the mount, so the file must be a regular file there, not a link into
// /nix/store that only resolves inside the container.
//
// It also checks the recipe's path rules against the image's packages
// and the app (see checkRuleAccess).
func checkUserGroup(img aci.Image, user, group string) error {
	if err := aci.CheckExtra(img); err != nil {
		return err
	}
	for _, c := range []struct{ what, name, file, flag string }{
		{"user", user, "/etc/passwd", "users"},
		{"group", group, "/etc/group", "groups"},
	} {
		if c.name == "" || strings.HasPrefix(c.name, "/") {
			continue
		}
		if _, err := strconv.Atoi(c.name); err == nil {
			continue
		}
		data, links, err := aci.ImageFile(img, c.file, 4<<20)
		if err != nil {
			return &aci.ExecError{Msg: fmt.Sprintf("the app runs as %s %q, which rkt looks up in the image's %s, but %v: declare it in the recipe (%s = [ { name = %q; ... } ]), or give a number (--%s)", c.what, c.name, c.file, err, c.flag, c.name, c.what)}
		}
		if links {
			return &aci.ExecError{Msg: fmt.Sprintf("the app runs as %s %q, but the image's %s is a link (a package provides it); rkt reads that file from outside the container, where a link into /nix/store does not resolve: declare the %s in the recipe so that nix2aci writes %s, or give a number", c.what, c.name, c.file, c.what, c.file)}
		}
		found := false
		var names []string
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			n, _, _ := strings.Cut(sc.Text(), ":")
			names = append(names, n)
			if n == c.name {
				found = true
			}
		}
		if !found {
			return &aci.ExecError{Msg: fmt.Sprintf("the app runs as %s %q, which the image's %s does not define (it has %s): declare it in the recipe (%s = [ { name = %q; ... } ]), or give a number", c.what, c.name, c.file, strings.Join(names, ", "), c.flag, c.name)}
		}
	}
	return checkRuleAccess(img, user, group)
}
