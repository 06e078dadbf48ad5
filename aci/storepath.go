package aci

import (
	"archive/tar"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/nix2aci/nix2aci/nixstore"
)

// A store path's entries in an archive: all of it, its bytes depending
// on its contents alone (writeTree), or, in a thin image, the one empty
// entry its volume is mounted on (writeMountTarget).

// writeTree writes store path p and everything below it, depth first,
// children sorted by name.
//
// The bytes depend on the store path's contents alone, never on how its
// files happen to be linked on disk (nix-store --optimise, or
// auto-optimise-store, hard-links identical files across the store): a
// regular file whose contents and mode equal those of a file earlier in
// the walk is written as a hard link to that file, whatever the inodes
// say; every other file is written whole. Links never leave the store
// path, so its bytes never depend on any other.
func writeTree(tw countingTar, root, p string, copyBuf []byte) error {
	ents, err := walkStorePath(root, p)
	if err != nil {
		return err
	}
	same, err := identicalFiles(ents)
	if err != nil {
		return err
	}
	for i, e := range ents {
		hdr := &tar.Header{
			Name:    e.name,
			Mode:    tarMode(e.fi),
			ModTime: e.fi.ModTime().Truncate(time.Second),
			Format:  tar.FormatPAX,
		}
		switch {
		case e.fi.IsDir():
			hdr.Typeflag = tar.TypeDir
			hdr.Name += "/"
			if err := tw.WriteHeader(hdr); err != nil {
				return err
			}
		case e.fi.Mode()&os.ModeSymlink != 0:
			hdr.Typeflag = tar.TypeSymlink
			if hdr.Linkname, err = os.Readlink(e.src); err != nil {
				return fmt.Errorf("reading store: %w", err)
			}
			if err := tw.WriteHeader(hdr); err != nil {
				return err
			}
		case same[i] >= 0:
			hdr.Typeflag = tar.TypeLink
			hdr.Linkname = ents[same[i]].name
			if err := tw.WriteHeader(hdr); err != nil {
				return err
			}
		default:
			if err := writeFile(tw, hdr, e, copyBuf); err != nil {
				return err
			}
		}
	}
	return nil
}

// storeEntry is one file, directory or symlink of a store path.
type storeEntry struct {
	src, name string // path on disk, name in the archive
	fi        os.FileInfo
}

// walkStorePath lists p and everything below it in archive order, named
// with root before the path (less its leading "/").
func walkStorePath(root, p string) ([]storeEntry, error) {
	var out []storeEntry
	var walk func(src, name string) error
	walk = func(src, name string) error {
		fi, err := os.Lstat(src)
		if err != nil {
			return fmt.Errorf("reading store: %w", err)
		}
		switch {
		case fi.IsDir(), fi.Mode()&os.ModeSymlink != 0, fi.Mode().IsRegular():
		default:
			return fmt.Errorf("%s is a %s, which a Nix store path cannot hold", src, fi.Mode().Type())
		}
		out = append(out, storeEntry{src: src, name: name, fi: fi})
		if !fi.IsDir() {
			return nil
		}
		children, err := os.ReadDir(src) // sorted by name
		if err != nil {
			return fmt.Errorf("reading store: %w", err)
		}
		for _, c := range children {
			if err := walk(src+"/"+c.Name(), name+"/"+c.Name()); err != nil {
				return err
			}
		}
		return nil
	}
	return out, walk(p, root+p[1:])
}

// identicalFiles returns, for each entry, the index of the first earlier
// regular file with the same mode, size and contents, or -1. Only files
// that share a size and mode with another are read to compare.
func identicalFiles(ents []storeEntry) ([]int, error) {
	same := make([]int, len(ents))
	type shape struct {
		size int64
		mode int64
	}
	groups := map[shape][]int{}
	for i, e := range ents {
		same[i] = -1
		if e.fi.Mode().IsRegular() && e.fi.Size() > 0 {
			k := shape{e.fi.Size(), tarMode(e.fi)}
			groups[k] = append(groups[k], i)
		}
	}
	for _, idx := range groups { // each group is decided alone: order does not matter
		if len(idx) < 2 {
			continue
		}
		first := map[[sha256.Size]byte]int{}
		for _, i := range idx { // in walk order
			sum, err := hashFile(ents[i].src)
			if err != nil {
				return nil, err
			}
			if j, ok := first[sum]; ok {
				same[i] = j
			} else {
				first[sum] = i
			}
		}
	}
	return same, nil
}

func hashFile(p string) ([sha256.Size]byte, error) {
	var sum [sha256.Size]byte
	f, err := os.Open(p)
	if err != nil {
		return sum, fmt.Errorf("reading store: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return sum, fmt.Errorf("reading %s: %w", p, err)
	}
	copy(sum[:], h.Sum(nil))
	return sum, nil
}

// tarMode is the mode a store entry is written with: permissions and the
// setuid, setgid and sticky bits.
func tarMode(fi os.FileInfo) int64 {
	m := int64(fi.Mode().Perm())
	if fi.Mode()&os.ModeSetuid != 0 {
		m |= 0o4000
	}
	if fi.Mode()&os.ModeSetgid != 0 {
		m |= 0o2000
	}
	if fi.Mode()&os.ModeSticky != 0 {
		m |= 0o1000
	}
	return m
}

// writeFile writes a regular file's header and contents.
func writeFile(tw countingTar, hdr *tar.Header, e storeEntry, copyBuf []byte) error {
	hdr.Typeflag = tar.TypeReg
	hdr.Size = e.fi.Size()
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	f, err := os.Open(e.src)
	if err != nil {
		return fmt.Errorf("reading store: %w", err)
	}
	defer f.Close()
	// One buffer for every file (io.CopyN would allocate one each); the
	// struct hides tar.Writer's ReadFrom, which would too.
	n, err := io.CopyBuffer(struct{ io.Writer }{tw}, io.LimitReader(f, e.fi.Size()), copyBuf)
	if err == nil && n != e.fi.Size() {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return fmt.Errorf("reading %s: %w", e.src, err)
	}
	return nil
}

// writeMountTarget writes the empty entry a thin image's volume is mounted
// on: a directory for a directory, an empty file for anything else (rkt
// refuses to bind a file onto a directory). Symlinks count as what they
// point to, since the bind mount follows them.
func writeMountTarget(tw countingTar, root, p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return &nixstore.InvalidPathError{Path: p, Reason: err.Error()}
	}
	name := root + p[1:]
	if fi.IsDir() {
		return tw.WriteHeader(&tar.Header{Name: name + "/", Typeflag: tar.TypeDir, Mode: 0o555, ModTime: time.Unix(1, 0), Format: tar.FormatPAX})
	}
	return tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o444, ModTime: time.Unix(1, 0), Format: tar.FormatPAX})
}
