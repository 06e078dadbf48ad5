package ocisign

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strconv"
	"syscall"

	"github.com/nix2aci/nix2aci/internal/safeio"
)

// MaxLookasideSignatures bounds the signatures read or written for one
// image.
const MaxLookasideSignatures = 64

// LookasideDir is the directory, relative to a lookaside tree's root,
// that holds the signatures of the manifest with digest in the
// repository repo (a Reference's Path: the repository's path on its
// registry, without host): repo@sha256=<hex>, as containers/image names
// it (registries.d's lookaside: file:///ROOT). repo and digest are
// checked, so the result never leaves the tree.
func LookasideDir(repo, digest string) (string, error) {
	if !validPath(repo) || len(repo) > maxNameLength {
		return "", &ReferenceError{Ref: repo, Msg: "it is not a repository path (lowercase components of letters and digits, joined by '/')"}
	}
	algo, hex, err := parseDigest(digest)
	if err != nil {
		return "", fmt.Errorf("manifest digest %w", err)
	}
	return repo + "@" + algo + "=" + hex, nil
}

// WriteLookaside stores sigs as the signatures of the image whose
// manifest has digest, under ref's repository, in the lookaside tree at
// root: root/<path>@sha256=<hex>/signature-1, signature-2, ... (the tree
// podman and skopeo read with registries.d's lookaside: file:///ROOT,
// and serve over HTTP as is). root is made if missing. Each file is
// written whole through a temporary file and renamed into place; the
// image's signatures that were there before are replaced, and any beyond
// the new ones removed, the first of them first, so that a reader, which
// stops at the first missing index, never reads old ones past new ones.
// Each signature must be a signed message (see Sign).
func WriteLookaside(root, ref, digest string, sigs ...[]byte) error {
	r, err := ParseReference(ref)
	if err != nil {
		return err
	}
	dir, err := LookasideDir(r.Path, digest)
	if err != nil {
		return err
	}
	if len(sigs) == 0 {
		return errors.New("no signatures to write")
	}
	if len(sigs) > MaxLookasideSignatures {
		return fmt.Errorf("%d signatures for one image; at most %d are kept", len(sigs), MaxLookasideSignatures)
	}
	for i, s := range sigs {
		if _, err := readSignedMessage(s); err != nil {
			return fmt.Errorf("signature %d: %w", i+1, err)
		}
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return err
	}
	rt, err := os.OpenRoot(root)
	if err != nil {
		return err
	}
	defer rt.Close()
	if err := rt.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("making %s in %s: %w", dir, safeio.Quote(root), err)
	}
	for i, s := range sigs {
		if err := writeInRoot(rt, path.Join(dir, "signature-"+strconv.Itoa(i+1)), s); err != nil {
			return fmt.Errorf("writing signature %d in %s: %w", i+1, safeio.Quote(root), err)
		}
	}
	for n := len(sigs) + 1; ; n++ {
		err := rt.Remove(path.Join(dir, "signature-"+strconv.Itoa(n)))
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("removing an old signature in %s: %w", safeio.Quote(root), err)
		}
	}
}

// writeInRoot writes name in rt through a temporary file in the same
// directory, renamed into place.
func writeInRoot(rt *os.Root, name string, data []byte) error {
	var rnd [8]byte
	rand.Read(rnd[:])
	tmp := path.Join(path.Dir(name), "."+path.Base(name)+".tmp-"+hex.EncodeToString(rnd[:]))
	f, err := rt.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = rt.Rename(tmp, name)
	}
	if err != nil {
		rt.Remove(tmp)
	}
	return err
}

// ReadLookaside returns the signatures stored in the lookaside tree at
// root for the image whose manifest has digest, under ref's repository:
// signature-1, signature-2, ... up to the first missing one; none if
// there are none. See ReadLookasideRepo.
func ReadLookaside(root, ref, digest string) ([][]byte, error) {
	r, err := ParseReference(ref)
	if err != nil {
		return nil, err
	}
	return ReadLookasideRepo(root, r.Path, digest)
}

// ReadLookasideRepo is ReadLookaside for the repository path repo as a
// registry's API names it (/v2/<repo>/...), which is checked like one.
// Files are opened inside root only (a symlink leading out of it is an
// error), without blocking, and must be regular files of at most 64 KiB,
// at most MaxLookasideSignatures of them; their contents are not checked.
func ReadLookasideRepo(root, repo, digest string) ([][]byte, error) {
	dir, err := LookasideDir(repo, digest)
	if err != nil {
		return nil, err
	}
	rt, err := os.OpenRoot(root)
	if err != nil {
		return nil, err
	}
	defer rt.Close()
	var sigs [][]byte
	for n := 1; ; n++ {
		name := path.Join(dir, "signature-"+strconv.Itoa(n))
		b, err := readInRoot(rt, name)
		if errors.Is(err, fs.ErrNotExist) {
			return sigs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("reading %s in %s: %w", name, safeio.Quote(root), err)
		}
		if n > MaxLookasideSignatures {
			return nil, fmt.Errorf("%s in %s holds more than %d signatures", dir, safeio.Quote(root), MaxLookasideSignatures)
		}
		sigs = append(sigs, b)
	}
}

// readInRoot reads the regular file name in rt, of at most maxSignature
// bytes, without blocking on a FIFO.
func readInRoot(rt *os.Root, name string) ([]byte, error) {
	f, err := rt.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) && errors.Is(pe.Err, fs.ErrNotExist) {
			return nil, fs.ErrNotExist
		}
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, &safeio.NotRegularError{Path: name, Mode: fi.Mode()}
	}
	b, err := io.ReadAll(io.LimitReader(f, maxSignature+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxSignature {
		return nil, fmt.Errorf("it is more than %d bytes; a signature is about a kilobyte", maxSignature)
	}
	return b, nil
}
