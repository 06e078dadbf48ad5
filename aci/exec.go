package aci

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"

	"github.com/nix2aci/nix2aci/internal/safeio"
	"github.com/nix2aci/nix2aci/nixstore"
)

// ExecError reports an image whose app cannot start: its program, or
// the interpreter a "#!" line or an ELF header names, is not in the image.
type ExecError struct {
	Msg string
}

func (e *ExecError) Error() string { return e.Msg }

// CheckExec checks, before anything is written, that the app of img can
// start under rkt: the manifest's exec[0] resolves inside the image (the
// symlink farm, then the closure's store paths, following links as the
// container would: an absolute link target is looked up from the image's
// root, never the host's), is a regular executable file, and every
// interpreter it needs resolves in the image too: the program of a "#!"
// line (recursively, as the kernel does, at most four deep) and an ELF
// binary's PT_INTERP loader. A thin image's store paths are mounted from
// the host's store at run time, so they count as in the image.
//
// It does not check an ELF binary's shared libraries (DT_NEEDED): Nix
// links them by absolute store path, which the closure holds.
func CheckExec(img Image) error {
	if img.Manifest == nil || img.Manifest.App == nil || len(img.Manifest.App.Exec) == 0 {
		return nil
	}
	exe := img.Manifest.App.Exec[0]
	if !path.IsAbs(exe) {
		return nil // looked up in $PATH at run time; nothing to check here
	}
	fsys, err := newImageFS(img)
	if err != nil {
		return err
	}
	return fsys.checkProgram(exe, "", 0)
}

func newImageFS(img Image) (*imageFS, error) {
	farm, _, err := imageFarm(img)
	if err != nil {
		return nil, err
	}
	fsys := &imageFS{farm: map[string]farmEntry{}, closure: map[string]bool{}}
	for _, e := range farm {
		fsys.farm[e.rel] = e
	}
	for _, p := range img.Closure.Paths {
		fsys.closure[p.Base()] = true
	}
	return fsys, nil
}

// ImageFile is how a program reading the image's root finds the file at
// p: its contents (at most max bytes), and whether the image holds it as
// a regular file at that very path (links is false) or reaches it through
// symlinks. An error says it is not in the image.
func ImageFile(img Image, p string, max int64) (data []byte, links bool, err error) {
	fsys, err := newImageFS(img)
	if err != nil {
		return nil, false, err
	}
	rel := strings.Trim(path.Clean("/"+p), "/")
	if e, ok := fsys.farm[rel]; ok && e.file {
		return e.data, false, nil
	}
	host, err := fsys.resolve(p)
	if err != nil {
		return nil, false, err
	}
	if host == "" {
		for rel, e := range fsys.farm { // a generated file reached by a link
			if e.file && path.Clean("/"+rel) == path.Clean(p) {
				return e.data, true, nil
			}
		}
		return nil, false, fmt.Errorf("%s is not in the image", p)
	}
	data, err = safeio.ReadFile(host, max)
	return data, true, err
}

// maxInterpreterDepth is how many "#!" interpreters Linux follows.
const maxInterpreterDepth = 4

func (f *imageFS) checkProgram(p, neededBy string, depth int) error {
	why := "the app's exec[0]"
	if neededBy != "" {
		why = neededBy
	}
	host, err := f.resolve(p)
	if err != nil {
		return &ExecError{Msg: fmt.Sprintf("%s: %v; %s", why, err, f.fix(p))}
	}
	fh, err := os.Open(host)
	if err != nil {
		return fmt.Errorf("reading %s: %w", host, err)
	}
	defer fh.Close()
	fi, err := fh.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return &ExecError{Msg: fmt.Sprintf("%s: %s (%s) is not an executable file; point exec at a program", why, p, host)}
	}
	head := make([]byte, 256)
	n, _ := io.ReadFull(fh, head)
	head = head[:n]
	switch {
	case bytes.HasPrefix(head, []byte("#!")):
		if depth >= maxInterpreterDepth {
			return &ExecError{Msg: fmt.Sprintf("%s: %s runs through more than %d \"#!\" interpreters, which Linux refuses", why, p, maxInterpreterDepth)}
		}
		line, _, _ := bytes.Cut(head[2:], []byte("\n"))
		fields := strings.Fields(string(line))
		if len(fields) == 0 {
			return &ExecError{Msg: fmt.Sprintf("%s: %s starts with \"#!\" but names no interpreter", why, host)}
		}
		return f.checkProgram(fields[0], fmt.Sprintf("the interpreter %s (from the \"#!\" line of %s)", fields[0], host), depth+1)
	case bytes.HasPrefix(head, []byte(elf.ELFMAG)):
		ef, err := elf.NewFile(fh)
		if err != nil {
			return &ExecError{Msg: fmt.Sprintf("%s: %s is not a readable ELF file: %v", why, host, err)}
		}
		for _, prog := range ef.Progs {
			if prog.Type != elf.PT_INTERP {
				continue
			}
			b, err := io.ReadAll(io.LimitReader(prog.Open(), 4096))
			if err != nil {
				return fmt.Errorf("reading the ELF interpreter of %s: %w", host, err)
			}
			interp := string(bytes.TrimRight(b, "\x00"))
			ih, err := f.resolve(interp)
			if err != nil {
				return &ExecError{Msg: fmt.Sprintf("the ELF interpreter %s of %s: %v; the binary was not built for this closure: build it with Nix (or patchelf --set-interpreter to a loader in the closure), or add the package providing %s", interp, host, err, interp)}
			}
			if fi, err := os.Stat(ih); err != nil || !fi.Mode().IsRegular() {
				return &ExecError{Msg: fmt.Sprintf("the ELF interpreter %s of %s is not a regular file in the image", interp, host)}
			}
		}
	}
	return nil
}

// fix suggests how a missing program could be supplied.
func (f *imageFS) fix(p string) string {
	if rest, ok := strings.CutPrefix(p, nixstore.StoreDir+"/"); ok {
		base, _, _ := strings.Cut(rest, "/")
		return fmt.Sprintf("the store path %s is not in the image's closure: add it to the recipe's packages", nixstore.StoreDir+"/"+base)
	}
	return fmt.Sprintf("add a package that provides %s to the recipe's packages (for /bin/sh: busybox), or fix exec; --no-exec-check builds anyway", strings.TrimPrefix(p, "/"))
}

// imageFS resolves paths as the image's root file system will hold them:
// the symlink farm at the top, the closure's store paths below
// /nix/store, read from the host's store.
type imageFS struct {
	farm    map[string]farmEntry // by path below the root
	closure map[string]bool      // store path base names
}

type kind int

const (
	missing kind = iota
	dir
	file
	link
)

// lstat looks up one image path without following a final symlink.
func (f *imageFS) lstat(p string) (k kind, target, host string) {
	rel := strings.TrimPrefix(p, "/")
	switch {
	case p == "/", rel == "nix", rel == "nix/store":
		return dir, "", ""
	case strings.HasPrefix(rel, "nix/store/"):
		base, _, _ := strings.Cut(strings.TrimPrefix(rel, "nix/store/"), "/")
		if !f.closure[base] {
			return missing, "", ""
		}
		fi, err := os.Lstat(p)
		switch {
		case err != nil:
			return missing, "", ""
		case fi.Mode()&fs.ModeSymlink != 0:
			t, err := os.Readlink(p)
			if err != nil {
				return missing, "", ""
			}
			return link, t, p
		case fi.IsDir():
			return dir, "", p
		}
		return file, "", p
	}
	e, ok := f.farm[rel]
	switch {
	case !ok:
		return missing, "", ""
	case e.file:
		return file, "", ""
	case e.target == "":
		return dir, "", ""
	}
	return link, e.target, ""
}

// resolve follows p through the image to the host path of the file it
// names, following at most 40 links as Linux does.
func (f *imageFS) resolve(p string) (string, error) {
	for hops := 0; hops <= 40; hops++ {
		comps := strings.Split(strings.Trim(path.Clean("/"+p), "/"), "/")
		done := "/"
		restart := false
		for i, c := range comps {
			if c == "" {
				continue
			}
			next := path.Join(done, c)
			k, target, host := f.lstat(next)
			switch k {
			case missing:
				return "", fmt.Errorf("%s is not in the image", next)
			case link:
				if !path.IsAbs(target) {
					target = path.Join(done, target)
				}
				p = path.Join(append([]string{target}, comps[i+1:]...)...)
				restart = true
			case file:
				if i < len(comps)-1 {
					return "", fmt.Errorf("%s is a file, not a directory", next)
				}
				return host, nil
			case dir:
				if i == len(comps)-1 {
					return "", fmt.Errorf("%s is a directory", next)
				}
			}
			if restart {
				break
			}
			done = next
		}
		if !restart {
			return "", errors.New(p + " is a directory")
		}
	}
	return "", fmt.Errorf("%s: too many levels of symbolic links", p)
}
