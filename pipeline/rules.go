package pipeline

import (
	"bufio"
	"bytes"
	"fmt"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/nix2aci/nix2aci/aci"
	"github.com/nix2aci/nix2aci/internal/safeio"
	"github.com/nix2aci/nix2aci/manifest"
)

// Path rules (a recipe's paths attribute) give paths in the image a type,
// a mode and an owner, applied as the archive is written:
//
//	paths = { "/var/lib/web" = { mode = "0700"; user = "web"; group = "web"; }; };
//
// A rule's path is absolute and canonical, outside /nix: the store is
// content-addressed and its files stay owned by root. Its type is
// "directory" (the default) or "file" (an empty regular file); its mode an
// octal string (default 0755, a file's 0644); its user and group a name
// the image's skeleton defines (root, nobody, the recipe's users and
// groups) or a number (default root). Names are resolved to numbers here,
// through the same users and groups the skeleton writes: tar headers, and
// rkt, carry numeric ids.
//
// A rule on a path of the skeleton (/tmp, /etc/passwd) sets its mode and
// owner; a directory rule on a directory of a package (e.g. /var when a
// package has var/) sets that directory's, which is the image's own (the
// symlink farm's directories are not in the store). A rule on a path a
// package provides as a link into the store, or below one, is refused
// when the image is assembled (package aci), naming the package. Missing
// parents are directories 0755 owned by root.
//
// Set-id bits: the sticky bit and setgid are allowed on directories
// (a shared directory like /tmp; new files taking the directory's group).
// Setuid is refused everywhere, and any of them on a file: a rule's file
// is empty, so the bits would buy nothing but a privileged file that a
// later write could fill.

var octalMode = regexp.MustCompile(`^[0-7]{3,4}$`)

// applyRules merges rules into the skeleton's extras, resolving names
// through known.
func applyRules(rules []manifest.PathRule, extra []aci.Extra, known ids) ([]aci.Extra, error) {
	if len(rules) == 0 {
		return extra, nil
	}
	rules = append([]manifest.PathRule(nil), rules...)
	sort.SliceStable(rules, func(i, j int) bool { return rules[i].Path < rules[j].Path })
	at := make(map[string]int, len(extra)+len(rules)) // rel -> index in extra
	for i, x := range extra {
		at[x.Path] = i
	}
	for i, r := range rules {
		q := safeio.Quote(r.Path)
		if i > 0 && rules[i-1].Path == r.Path {
			return nil, skelErr("paths: %s has two rules: keep one", q)
		}
		rel, err := rulePath(r.Path)
		if err != nil {
			return nil, err
		}
		x := aci.Extra{Path: rel, Rule: true}
		switch r.Type {
		case "", "directory":
			x.Dir, x.Mode = true, 0o755
		case "file":
			x.Mode = 0o644
		default:
			return nil, skelErr("paths: %s has type %s: a rule's type is \"directory\" (the default) or \"file\" (an empty file)", q, safeio.QuoteAlways(r.Type))
		}
		if r.Mode != "" {
			if x.Mode, err = ruleMode(q, r.Mode, x.Dir); err != nil {
				return nil, err
			}
		}
		if x.Uid, err = ruleID(q, "user", r.User, known.users, known.skeleton); err != nil {
			return nil, err
		}
		if x.Gid, err = ruleID(q, "group", r.Group, known.groups, known.skeleton); err != nil {
			return nil, err
		}
		if j, ok := at[rel]; ok {
			// A path of the skeleton: the rule sets its mode and owner.
			if extra[j].Dir != x.Dir {
				return nil, skelErr("paths: %s is a %s of the image's skeleton, but the rule makes it a %s: give the rule type = %q", q, kindName(extra[j].Dir), kindName(x.Dir), kindName(extra[j].Dir))
			}
			extra[j].Mode, extra[j].Uid, extra[j].Gid, extra[j].Rule = x.Mode, x.Uid, x.Gid, true
			continue
		}
		at[rel] = len(extra)
		extra = append(extra, x)
	}
	// Nothing may lie below a file: neither a rule nor the skeleton's.
	for _, x := range extra {
		if x.Dir {
			continue
		}
		for _, y := range extra {
			if strings.HasPrefix(y.Path, x.Path+"/") {
				return nil, skelErr("paths: /%s is a file, but /%s lies below it: make /%s a directory, or drop one of them", x.Path, y.Path, x.Path)
			}
		}
	}
	return extra, nil
}

func kindName(dir bool) string {
	if dir {
		return "directory"
	}
	return "file"
}

// rulePath checks a rule's path and returns it below the root.
func rulePath(p string) (string, error) {
	q := safeio.Quote(p)
	switch {
	case !strings.HasPrefix(p, "/"):
		return "", skelErr("paths: %s is not an absolute path: key each rule by its path in the image, such as \"/var/lib/web\"", q)
	case strings.ContainsFunc(p, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return "", skelErr("paths: %s holds a control character", q)
	case strings.Contains("/"+p+"/", "/../"):
		return "", skelErr("paths: %s has a \"..\" component: give the path as it is in the image, without \"..\"", q)
	case path.Clean(p) != p:
		return "", skelErr("paths: %s is not canonical: write it %s", q, safeio.Quote(path.Clean(p)))
	case p == "/":
		return "", skelErr("paths: the image root / keeps its mode and owner (0755, root): give the rule a directory below it")
	case p == "/nix" || strings.HasPrefix(p, "/nix/"):
		return "", skelErr("paths: %s is in /nix: the store is content-addressed, and the mode and owner of its files are not changed (they stay root's, as Nix made them); give the rule a path outside /nix, such as /var/lib/NAME", q)
	}
	return p[1:], nil
}

// ruleMode parses an octal mode and refuses set-id bits that a rule may
// not set (see above).
func ruleMode(q, s string, dir bool) (int64, error) {
	if !octalMode.MatchString(s) {
		return 0, skelErr("paths: %s has mode %s: give it as 3 or 4 octal digits in a string, such as \"0750\"", q, safeio.QuoteAlways(s))
	}
	m, _ := strconv.ParseInt(s, 8, 64)
	switch {
	case m == 0:
		return 0, skelErr("paths: %s has mode %s, which lets no one but root use it: give the owner at least, such as \"0700\"", q, s)
	case m&0o4000 != 0:
		return 0, skelErr("paths: %s has mode %s: setuid is not allowed in a rule (a rule's file is empty, and a directory ignores it)", q, s)
	case !dir && m&0o3000 != 0:
		return 0, skelErr("paths: %s has mode %s: setgid and the sticky bit are allowed on directories only (a rule's file is empty)", q, s)
	}
	return m, nil
}

// ruleID resolves a rule's user or group: empty is root, a number is
// itself, a name is one the skeleton defines.
func ruleID(q, what, s string, names map[string]int, haveSkeleton bool) (int, error) {
	if s == "" {
		return 0, nil
	}
	if s[0] >= '0' && s[0] <= '9' {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 || n > 1<<31-2 || strconv.Itoa(n) != s {
			return 0, skelErr("paths: %s has %s %s, which is not a name or a number from 0 to %d", q, what, safeio.QuoteAlways(s), 1<<31-2)
		}
		return n, nil
	}
	if id, ok := names[s]; ok {
		return id, nil
	}
	if !haveSkeleton {
		return 0, skelErr("paths: %s has %s %s, but the skeleton is off (skeleton = false), so the image's %ss are not nix2aci's to name: give a number", q, what, safeio.QuoteAlways(s), what)
	}
	var have []string
	for n := range names {
		have = append(have, n)
	}
	sort.Slice(have, func(i, j int) bool { return names[have[i]] < names[have[j]] })
	return 0, skelErr("paths: %s has %s %s, which the image does not define (it has %s): declare it in the recipe (%ss = [ { name = %q; ... } ]), or give a number", q, what, safeio.QuoteAlways(s), strings.Join(have, ", "), what, s)
}

// checkRuleAccess checks that the rules let the app reach its program and
// working directory: each rule directory on the way to exec[0], or to the
// working directory, must grant search (x) to the app's uid, gid or
// others, as the kernel decides. Root passes; a user or group given as a
// path (rkt takes that file's owner) is not checked. Only the paths as
// written are checked: links in the symlink farm lead into the store,
// which rules cannot touch.
func checkRuleAccess(img aci.Image, user, group string) error {
	var rules []aci.Extra
	for _, x := range img.Extra {
		if x.Rule && x.Dir {
			rules = append(rules, x)
		}
	}
	if len(rules) == 0 || img.Manifest == nil || img.Manifest.App == nil || len(img.Manifest.App.Exec) == 0 {
		return nil
	}
	uid, ok := appID(img, user, "/etc/passwd")
	if !ok || uid == 0 {
		return nil
	}
	gid, ok := appID(img, group, "/etc/group")
	if !ok {
		return nil
	}
	app := img.Manifest.App
	targets := []struct {
		what, path string
		self       bool // the path itself must be searchable too
	}{{"its program", app.Exec[0], false}}
	if app.WorkingDirectory != "" {
		targets = append(targets, struct {
			what, path string
			self       bool
		}{"its working directory", app.WorkingDirectory, true})
	}
	for _, t := range targets {
		p := strings.Trim(path.Clean("/"+t.path), "/")
		for _, x := range rules {
			if !strings.HasPrefix(p, x.Path+"/") && !(t.self && p == x.Path) {
				continue
			}
			bit := int64(0o001)
			switch {
			case uid == x.Uid:
				bit = 0o100
			case gid == x.Gid:
				bit = 0o010
			}
			if x.Mode&bit == 0 {
				return &aci.ExecError{Msg: fmt.Sprintf("the app runs as uid %d, gid %d, but the recipe's paths make /%s mode %04o, owner %d:%d, which it cannot enter to reach %s %s: give the app's user or group search (x) permission there, or run it as the directory's owner", uid, gid, x.Path, x.Mode, x.Uid, x.Gid, t.what, safeio.Quote(t.path))}
			}
		}
	}
	return nil
}

// appID is the number the app's user or group resolves to in the image,
// as rkt resolves it; false when it cannot be known here (a path).
func appID(img aci.Image, name, file string) (int, bool) {
	if name == "" {
		return 0, true
	}
	if n, err := strconv.Atoi(name); err == nil {
		return n, true
	}
	if strings.HasPrefix(name, "/") {
		return 0, false
	}
	data, _, err := aci.ImageFile(img, file, 4<<20)
	if err != nil {
		return 0, false
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Split(sc.Text(), ":")
		if len(f) >= 3 && f[0] == name {
			n, err := strconv.Atoi(f[2])
			return n, err == nil
		}
	}
	return 0, false
}
