package aci

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/nix2aci/nix2aci/internal/safeio"
	"github.com/nix2aci/nix2aci/nixstore"
)

// A farmEntry is one entry of the symlink farm at the image root: a
// directory, or a symlink to a file or directory of a package.
type farmEntry struct {
	rel    string // path below rootfs, e.g. "bin/busybox"
	target string // symlink target; empty for a directory or a file
	pkg    string // the package that provides it; empty for an extra
	// Entries from Image.Extra: a regular file with data, or a
	// directory with mode (0 means 0755), owned by uid and gid.
	file     bool
	data     []byte
	mode     int64
	uid, gid int
}

// Extra is a file or directory an image gets at its root unless its
// packages provide that path (or a link above it): the /etc skeleton, and
// the recipe's path rules.
type Extra struct {
	Path string // below the root, e.g. "etc/passwd"
	Dir  bool
	Mode int64 // e.g. 0o644, 0o1777
	Data []byte
	// Uid and Gid own the entry (tar headers carry numeric ids, which is
	// what rkt applies); every other entry of an image is owned by 0.
	Uid, Gid int
	// Rule makes the path the image's own, whoever provides it: instead
	// of yielding to the packages, a rule on a directory a package
	// provides gives that directory Mode, Uid and Gid, and a rule on a
	// path a package provides as a link, on a file rule where a package
	// has a directory, below such a link, or under /nix, is an error.
	Rule bool
}

// imageFarm is the farm of img's packages with img.Extra merged in: an
// extra whose path a package provides, or that would sit below a link a
// package provides, is left out (the packages win), unless it is a Rule.
// Missing parents of an extra are directories 0755 owned by root.
func imageFarm(img Image) ([]farmEntry, []Conflict, error) {
	farm, conflicts, err := buildFarm(img.Packages)
	if err != nil || len(img.Extra) == 0 {
		return farm, conflicts, err
	}
	have := make(map[string]int, len(farm))
	for i := range farm {
		have[farm[i].rel] = i
	}
	// Parents first, so that an extra directory (a rule on /var) is in
	// place before a deeper extra (/var/tmp) would create it.
	type extra struct {
		rel string
		Extra
	}
	extras := make([]extra, len(img.Extra))
	for i, x := range img.Extra {
		extras[i] = extra{strings.Trim(path.Clean("/"+x.Path), "/"), x}
	}
	sort.SliceStable(extras, func(i, j int) bool { return pathLess(extras[i].rel, extras[j].rel) })
	for _, x := range extras {
		rel := x.rel
		if rel == "" || rel == "nix" || strings.HasPrefix(rel, "nix/") {
			if x.Rule {
				return nil, nil, fmt.Errorf("paths: %s is the image root or in /nix, whose modes and owners nix2aci sets itself; the store is content-addressed and stays root-owned: give the rule a path outside /nix", quotePath(rel))
			}
			continue
		}
		blocker := -1
		parts := strings.Split(rel, "/")
		for i := 1; i < len(parts) && blocker < 0; i++ {
			if j, ok := have[strings.Join(parts[:i], "/")]; ok && (farm[j].target != "" || farm[j].file) {
				blocker = j
			}
		}
		j, exists := have[rel]
		switch {
		case blocker >= 0 && x.Rule:
			return nil, nil, fmt.Errorf("paths: %s lies below %s, %s: a rule's path must be a directory or file of the image's own", quotePath(rel), quotePath(farm[blocker].rel), farm[blocker].what())
		case exists && x.Rule && farm[j].target == "" && !farm[j].file:
			if !x.Dir {
				return nil, nil, fmt.Errorf("paths: %s is %s, and the rule makes it a file: drop type = \"file\" to set the directory's mode and owner", quotePath(rel), farm[j].what())
			}
			farm[j].mode, farm[j].uid, farm[j].gid = x.Mode, x.Uid, x.Gid
			continue
		case exists && x.Rule:
			return nil, nil, fmt.Errorf("paths: %s is %s: a mode and owner are set only on the image's own files and directories, never on the store's (content-addressed, owned by root): pick a path no package provides", quotePath(rel), farm[j].what())
		case exists, blocker >= 0:
			continue
		}
		for i := 1; i < len(parts); i++ {
			dir := strings.Join(parts[:i], "/")
			if _, ok := have[dir]; !ok {
				farm = append(farm, farmEntry{rel: dir})
				have[dir] = len(farm) - 1
			}
		}
		e := farmEntry{rel: rel, mode: x.Mode, uid: x.Uid, gid: x.Gid}
		if !x.Dir {
			e.file, e.data = true, x.Data
		}
		farm = append(farm, e)
		have[rel] = len(farm) - 1
	}
	sort.Slice(farm, func(i, j int) bool { return pathLess(farm[i].rel, farm[j].rel) })
	return farm, conflicts, nil
}

// CheckExtra returns the error Write would return for img's extras (a
// rule on a path a package provides), without writing anything.
func CheckExtra(img Image) error {
	_, _, err := imageFarm(img)
	return err
}

// what says what a farm entry is, for errors.
func (e farmEntry) what() string {
	switch {
	case e.target != "":
		return fmt.Sprintf("a link into package %s in the image's symlink farm", e.pkg)
	case e.file:
		return "a file of the image's skeleton or rules"
	case e.pkg != "":
		return fmt.Sprintf("a directory of package %s", e.pkg)
	}
	return "a directory the image's skeleton or rules create"
}

func quotePath(rel string) string { return safeio.Quote("/" + rel) }

// Conflict is a farm path two packages both provide; the first package
// listed wins, as in Nix's buildEnv with default priorities.
type Conflict struct {
	Path string `json:"path"`
	Kept string `json:"kept"`
	Lost string `json:"lost"`
}

func (c Conflict) String() string {
	return fmt.Sprintf("/%s: kept %s, ignored %s", c.Path, c.Kept, c.Lost)
}

// buildFarm merges the top levels of packages into one tree of real
// directories holding symlinks to the packages' files, like buildEnv. The
// store's own directory (nix/) and nix-support/ are never linked.
func buildFarm(packages []string) ([]farmEntry, []Conflict, error) {
	type node struct {
		target string // "" for a directory
		owner  string
	}
	tree := map[string]node{}
	var conflicts []Conflict
	var walk func(pkg, dir, rel string) error
	walk = func(pkg, dir, rel string) error {
		ents, err := os.ReadDir(dir)
		if err != nil {
			return fmt.Errorf("reading package %s: %w", pkg, err)
		}
		for _, e := range ents {
			name := e.Name()
			if rel == "" && (name == "nix" || name == "nix-support") {
				continue
			}
			r := filepath.Join(rel, name)
			src := filepath.Join(dir, name)
			isDir := e.IsDir()
			prev, exists := tree[r]
			switch {
			case !exists && isDir:
				tree[r] = node{owner: pkg}
				if err := walk(pkg, src, r); err != nil {
					return err
				}
			case !exists:
				tree[r] = node{target: src, owner: pkg}
			case isDir && prev.target == "":
				// Both directories: merge.
				if err := walk(pkg, src, r); err != nil {
					return err
				}
			default:
				conflicts = append(conflicts, Conflict{Path: r, Kept: prev.owner, Lost: pkg})
			}
		}
		return nil
	}
	for _, p := range packages {
		dir, ok, err := farmRoot(p)
		if err != nil {
			return nil, nil, err
		}
		if !ok {
			// A single-file store path, or a link that leaves the store,
			// has nothing to link into /bin and friends; it is still in
			// the closure.
			continue
		}
		if err := walk(p, dir, ""); err != nil {
			return nil, nil, err
		}
	}
	out := make([]farmEntry, 0, len(tree))
	for rel, n := range tree {
		out = append(out, farmEntry{rel: rel, target: n.target, pkg: n.owner})
	}
	sort.Slice(out, func(i, j int) bool { return pathLess(out[i].rel, out[j].rel) })
	return out, conflicts, nil
}

// farmRoot returns the directory whose entries package p contributes to
// the farm. A store path may itself be a symlink (legal in Nix); it is
// followed only while it stays inside the Nix store, so that an image never
// takes entry names from the build host. Links inside packages are never
// followed: they become farm links as they are.
func farmRoot(p string) (string, bool, error) {
	fi, err := os.Lstat(p)
	if err != nil {
		return "", false, fmt.Errorf("package %s: %w", p, err)
	}
	dir := p
	if fi.Mode()&os.ModeSymlink != 0 {
		if dir, err = filepath.EvalSymlinks(p); err != nil {
			return "", false, nil // dangling: nothing to link
		}
		rest, ok := strings.CutPrefix(dir, nixstore.StoreDir+"/")
		if !ok || rest == "" {
			return "", false, nil
		}
		if fi, err = os.Stat(dir); err != nil {
			return "", false, nil
		}
	}
	return dir, fi.IsDir(), nil
}

// pathLess orders paths depth-first, each directory's children sorted by
// name: compare component by component, so "a/b" < "a-b" ("a" < "a-b").
func pathLess(a, b string) bool {
	for {
		ai, bi := strings.IndexByte(a, '/'), strings.IndexByte(b, '/')
		ah, bh := a, b
		if ai >= 0 {
			ah = a[:ai]
		}
		if bi >= 0 {
			bh = b[:bi]
		}
		if ah != bh {
			return ah < bh
		}
		if ai < 0 || bi < 0 {
			return ai < 0 && bi >= 0
		}
		a, b = a[ai+1:], b[bi+1:]
	}
}
