package aci

import (
	"archive/tar"
	"bufio"
	"bytes"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	appcaci "github.com/appc/spec/aci"
	"github.com/appc/spec/schema"
	"github.com/ulikunitz/xz"
)

// Info describes an ACI read back by Inspect.
type Info struct {
	Manifest    *schema.ImageManifest `json:"-"`
	ImageID     string                `json:"imageID"`
	Compression string                `json:"compression"`
	Entries     int                   `json:"entries"`
	Files       int                   `json:"files"`
	Dirs        int                   `json:"dirs"`
	Symlinks    int                   `json:"symlinks"`
	HardLinks   int                   `json:"hardLinks"`
	StorePaths  int                   `json:"storePaths"`
	Size        int64                 `json:"uncompressedSize"`
}

// InvalidError reports an archive that is not a valid ACI.
type InvalidError struct {
	Reason string
}

func (e *InvalidError) Error() string { return "not a valid ACI: " + e.Reason }

// InspectFile is Inspect on the file at path.
func InspectFile(p string) (*Info, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	info, err := Inspect(f)
	if err != nil {
		return nil, fmt.Errorf("inspecting %s: %w", p, err)
	}
	return info, nil
}

// Decompress returns the uncompressed tar stream of an ACI read from r,
// detecting gzip, xz or no compression by magic bytes, and the name of the
// compression found. Close the reader to stop decompressing ahead.
func Decompress(r io.Reader) (io.ReadCloser, string, error) {
	br := bufio.NewReaderSize(r, 1<<16)
	magic, _ := br.Peek(6)
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		zr, err := gunzip(br)
		if err != nil {
			return nil, "", &InvalidError{Reason: "bad gzip header: " + err.Error()}
		}
		return zr, "gzip", nil
	case bytes.HasPrefix(magic, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		zr, err := xz.NewReader(br)
		if err != nil {
			return nil, "", &InvalidError{Reason: "bad xz header: " + err.Error()}
		}
		return io.NopCloser(zr), "xz", nil
	case bytes.HasPrefix(magic, []byte{'B', 'Z', 'h'}):
		return nil, "", &InvalidError{Reason: "bzip2 ACIs are not supported; rebuild with --compression gzip"}
	}
	return io.NopCloser(br), "none", nil
}

// Inspect reads a whole ACI from r, checks it with appc's reference
// validator (appc/spec/aci.ValidateArchive) and returns its manifest, image
// ID (sha512 of the uncompressed tar) and entry counts. Any archive that is
// not a valid ACI yields an *InvalidError.
func Inspect(r io.Reader) (*Info, error) {
	d, comp, err := Decompress(r)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	h := sha512.New()
	pr, pw := io.Pipe()
	validated := make(chan error, 1)
	go func() {
		err := appcaci.ValidateArchive(tar.NewReader(pr))
		io.Copy(io.Discard, pr) // let the writer finish whatever the validator left
		validated <- err
	}()
	counted := &countingWriter{}
	// The image ID hash and appc's validator each run on their own
	// goroutine, beside decompression and this loop.
	hashing := NewAsyncWriter(io.MultiWriter(h, counted), 16)
	validating := NewAsyncWriter(pw, 16)
	abort := func(err error) {
		pw.CloseWithError(err)
		validating.Close()
		hashing.Close()
		<-validated
	}
	tee := io.TeeReader(d, io.MultiWriter(hashing, validating))
	info := &Info{Compression: comp}
	var manifest []byte
	tr := tar.NewReader(tee)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			abort(err)
			return nil, &InvalidError{Reason: "reading tar: " + err.Error()}
		}
		info.Entries++
		name := path.Clean(hdr.Name)
		switch hdr.Typeflag {
		case tar.TypeDir:
			info.Dirs++
		case tar.TypeSymlink:
			info.Symlinks++
		case tar.TypeLink:
			info.HardLinks++
		case tar.TypeReg:
			info.Files++
		}
		if name == "manifest" {
			if manifest, err = io.ReadAll(tr); err != nil {
				abort(err)
				return nil, &InvalidError{Reason: "reading manifest: " + err.Error()}
			}
		}
		if rest, ok := strings.CutPrefix(name, "rootfs/nix/store/"); ok && !strings.Contains(rest, "/") {
			info.StorePaths++
		}
	}
	if _, err := io.Copy(io.Discard, tee); err != nil {
		abort(err)
		return nil, &InvalidError{Reason: "reading archive: " + err.Error()}
	}
	validating.Close()
	pw.Close()
	hashing.Close()
	if err := <-validated; err != nil {
		return nil, &InvalidError{Reason: err.Error()}
	}
	if manifest == nil {
		return nil, &InvalidError{Reason: "no manifest entry"}
	}
	var im schema.ImageManifest
	if err := im.UnmarshalJSON(manifest); err != nil {
		return nil, &InvalidError{Reason: "manifest: " + err.Error()}
	}
	info.Manifest = &im
	info.Size = counted.n
	info.ImageID = "sha512-" + hex.EncodeToString(h.Sum(nil))
	return info, nil
}

type countingWriter struct{ n int64 }

func (c *countingWriter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return len(p), nil
}

// IsInvalid reports whether err says an archive is not a valid ACI.
func IsInvalid(err error) bool {
	var ie *InvalidError
	return errors.As(err, &ie)
}
