package aci

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"

	appcaci "github.com/appc/spec/aci"
	"github.com/appc/spec/schema"
	"github.com/xi2/xz"

	"github.com/nix2aci/nix2aci/gzmember"
	"github.com/nix2aci/nix2aci/internal/safeio"
	"github.com/nix2aci/nix2aci/manifest"
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

// Limits on what Inspect reads, whatever the file claims.
const (
	// MaxManifestSize is the largest manifest Inspect reads, checked from
	// its tar header before a byte of it is read: manifest.MaxSize, the
	// largest that Write (manifest.Marshal) writes.
	MaxManifestSize = manifest.MaxSize
	// maxNameBytes and maxEntries bound the names Inspect remembers to
	// find duplicates and entries written through links.
	maxNameBytes = 64 << 20
	maxEntries   = 1 << 20
	// maxXzDict is the largest xz dictionary Inspect allocates; Write's
	// xz members use 8 MiB.
	maxXzDict = 64 << 20
)

// InvalidError reports an archive that is not a valid ACI.
type InvalidError struct {
	Reason string
}

func (e *InvalidError) Error() string { return "not a valid ACI: " + e.Reason }

func invalid(format string, args ...any) error {
	return &InvalidError{Reason: fmt.Sprintf(format, args...)}
}

// quote shows a name from an archive in an error: quoted, so that control
// characters cannot reach a terminal, and cut to a few hundred bytes.
var quote = safeio.QuoteAlways

// InspectFile is Inspect on the file at path, which must be a regular
// file (it is opened without blocking, so a FIFO is an error at once).
func InspectFile(p string) (*Info, error) {
	f, err := safeio.OpenRegular(p)
	if err != nil {
		var nr *safeio.NotRegularError
		if errors.As(err, &nr) {
			return nil, invalid("%v", err)
		}
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
// detecting gzip, bzip2, xz or no compression by magic bytes (the four the
// appc spec allows), and the name of the compression found. gzip is read
// exactly as compress/gzip reads it (see gzmember.NewReader); xz with a dictionary of
// at most 64 MiB. Close the reader to stop decompressing ahead.
func Decompress(r io.Reader) (io.ReadCloser, string, error) {
	return decompress(r, false)
}

// decompress is Decompress; sequential reads gzip with compress/gzip
// itself, one member after another with nothing inflated ahead (for a
// reader that stops early).
func decompress(r io.Reader, sequential bool) (io.ReadCloser, string, error) {
	br := bufio.NewReaderSize(r, 1<<16)
	magic, err := br.Peek(6)
	if len(magic) == 0 {
		if err != nil && err != io.EOF {
			return nil, "", err
		}
		return nil, "", invalid("the file is empty")
	}
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}) && sequential:
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, "", invalid("bad gzip header: %v", err)
		}
		return zr, "gzip", nil
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		zr, err := gzmember.NewReader(br)
		if err != nil {
			return nil, "", invalid("bad gzip header: %v", err)
		}
		return zr, "gzip", nil
	case bytes.HasPrefix(magic, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		zr, err := xz.NewReader(br, maxXzDict)
		if err != nil {
			return nil, "", invalid("bad xz header: %v", err)
		}
		return io.NopCloser(zr), "xz", nil
	case bytes.HasPrefix(magic, []byte{'B', 'Z', 'h'}):
		return io.NopCloser(bzip2.NewReader(br)), "bzip2", nil
	case bytes.HasPrefix(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return nil, "", invalid("unsupported compression: zstd (an ACI is a tar file, plain or compressed with gzip, bzip2 or xz)")
	}
	return io.NopCloser(br), "none", nil
}

// Inspect reads a whole ACI from r and returns its manifest, image ID
// (sha512 of the uncompressed tar) and entry counts, or an
// *InvalidError. It is InspectLimited with no limit on the uncompressed
// size.
func Inspect(r io.Reader) (*Info, error) { return InspectLimited(r, 0) }

// InspectLimited reads a whole ACI from r, checks it with appc's
// reference validator (appc/spec/aci.ValidateArchive) and rules of its own
// (see the package doc), and returns its manifest, image ID and counts.
// An uncompressed stream of more than maxSize bytes (when maxSize > 0) is
// refused. Memory stays bounded whatever the input.
func InspectLimited(r io.Reader, maxSize int64) (*Info, error) {
	d, comp, err := decompress(r, false)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	src := limited(d, maxSize)
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
	tee := io.TeeReader(src, io.MultiWriter(hashing, validating))
	info := &Info{Compression: comp}
	consumed := &countingReader{r: tee}
	tr := tar.NewReader(consumed)
	ck := newEntryChecker()
	var manifest []byte
	var dataEnd int64 // where the last entry's data (padded) ends
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			abort(err)
			return nil, readError("reading tar", err, maxSize)
		}
		size := hdr.Size
		if isHeaderOnly(hdr.Typeflag) {
			size = 0
		}
		dataEnd = consumed.n + (size+511)&^511
		if err := ck.check(hdr); err != nil {
			abort(err)
			return nil, err
		}
		info.Entries++
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
		if hdr.Name == "manifest" {
			if hdr.Size > MaxManifestSize {
				err := invalid("the manifest is %d bytes, more than the %d an ACI's manifest may be", hdr.Size, MaxManifestSize)
				abort(err)
				return nil, err
			}
			if manifest, err = io.ReadAll(tr); err != nil {
				abort(err)
				return nil, readError("reading manifest", err, maxSize)
			}
		}
		if rest, ok := strings.CutPrefix(strings.TrimSuffix(hdr.Name, "/"), "rootfs/nix/store/"); ok && !strings.Contains(rest, "/") {
			info.StorePaths++
		}
	}
	// The tar stream must end with its end-of-archive marker, two zero
	// blocks right after the last entry: a stream cut at an entry
	// boundary is a truncated file, not a smaller image.
	if consumed.n != dataEnd+1024 {
		err := invalid("truncated: the tar stream has no end-of-archive marker after its last entry")
		abort(err)
		return nil, err
	}
	if _, err := io.Copy(io.Discard, tee); err != nil {
		abort(err)
		return nil, readError("reading archive", err, maxSize)
	}
	validating.Close()
	pw.Close()
	hashing.Close()
	if err := <-validated; err != nil {
		return nil, invalid("%v", err)
	}
	if manifest == nil {
		return nil, invalid("no manifest entry")
	}
	var im schema.ImageManifest
	if err := im.UnmarshalJSON(manifest); err != nil {
		return nil, invalid("manifest: %v", err)
	}
	info.Manifest = &im
	info.Size = counted.n
	info.ImageID = "sha512-" + hex.EncodeToString(h.Sum(nil))
	return info, nil
}

// readError explains a failure to read the stream.
func readError(doing string, err error, maxSize int64) error {
	var me *gzmember.MemberError
	switch {
	case errors.Is(err, errTooLarge):
		return invalid("the uncompressed archive is larger than the %d bytes allowed", maxSize)
	case errors.As(err, &me):
		return invalid("%v", err)
	}
	return invalid("%s: %v", doing, err)
}

// isHeaderOnly reports whether entries of type t have no data in the
// stream, as archive/tar treats them.
func isHeaderOnly(t byte) bool {
	switch t {
	case tar.TypeLink, tar.TypeSymlink, tar.TypeChar, tar.TypeBlock, tar.TypeDir, tar.TypeFifo:
		return true
	}
	return false
}

// entryChecker holds what Inspect remembers of the entries it has read,
// to judge the next: what kind each path is, within a budget.
type entryChecker struct {
	kinds     map[string]byte // cleaned path -> typeflag
	nameBytes int
	manifest  bool
}

func newEntryChecker() *entryChecker {
	return &entryChecker{kinds: map[string]byte{}}
}

// check applies the rules every entry must follow, so that every
// extractor (rkt's, GNU tar, appc's) makes the same tree of it, inside
// the image: one manifest, named exactly "manifest", a regular file (rkt
// reads the first such entry, so a second could be shown to one reader
// and not another); every other entry below rootfs/; canonical relative
// names, no "..", each name once; nothing written through a symlink or a
// file; hard links to files already in the image; only the entry types an
// image can hold.
func (c *entryChecker) check(hdr *tar.Header) error {
	name := hdr.Name
	clean := strings.TrimSuffix(name, "/")
	switch {
	case len(c.kinds) >= maxEntries:
		return invalid("more than %d entries", maxEntries)
	case c.nameBytes+len(name) > maxNameBytes:
		return invalid("more than %d bytes of entry names", maxNameBytes)
	case clean == "" || path.IsAbs(name):
		return invalid("entry %s has an absolute or empty name", quote(name))
	case path.Clean(clean) != clean || clean == ".." || strings.HasPrefix(clean, "../"):
		return invalid("entry %s is not a plain relative name (no \"..\", \".\" or doubled \"/\")", quote(name))
	}
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeDir, tar.TypeSymlink, tar.TypeLink, tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
	default:
		return invalid("entry %s has type %q, which an image cannot hold", quote(name), hdr.Typeflag)
	}
	if clean == "manifest" {
		switch {
		case c.manifest:
			return invalid("a second manifest entry: readers that take the first and readers that take the last would see different images")
		case hdr.Typeflag != tar.TypeReg || name != "manifest":
			return invalid("the manifest entry is not a regular file named \"manifest\"")
		}
		c.manifest = true
	} else if clean != "rootfs" && !strings.HasPrefix(clean, "rootfs/") {
		return invalid("entry %s is outside rootfs/ (an image holds a manifest and a rootfs only)", quote(name))
	}
	if _, dup := c.kinds[clean]; dup {
		return invalid("entry %s appears twice: extractors disagree on which one wins", quote(name))
	}
	// No entry goes through a symlink or a file: with "rootfs/a" a link
	// to /etc, "rootfs/a/passwd" would be written on the host.
	for dir := path.Dir(clean); dir != "."; dir = path.Dir(dir) {
		if k, ok := c.kinds[dir]; ok && k != tar.TypeDir {
			return invalid("entry %s is written through %s, which is not a directory", quote(name), quote(dir))
		}
	}
	if hdr.Typeflag == tar.TypeLink {
		target := hdr.Linkname
		if k, ok := c.kinds[target]; path.Clean(target) != target || !ok || k != tar.TypeReg {
			return invalid("hard link %s points to %s, which is not a file earlier in the image", quote(name), quote(target))
		}
	}
	c.kinds[clean] = hdr.Typeflag
	c.nameBytes += len(name)
	return nil
}

type countingWriter struct{ n int64 }

func (c *countingWriter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return len(p), nil
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

var errTooLarge = errors.New("over the size limit")

// limited is r failing past maxSize bytes (r itself when maxSize <= 0).
func limited(r io.Reader, maxSize int64) io.Reader {
	if maxSize <= 0 {
		return r
	}
	return &limitReader{r: r, left: maxSize}
}

// limitReader fails, rather than ending, past its limit.
type limitReader struct {
	r    io.Reader
	left int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.left <= 0 {
		var one [1]byte
		if n, _ := l.r.Read(one[:]); n > 0 {
			return 0, errTooLarge
		}
		return l.r.Read(p)
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	return n, err
}

// IsInvalid reports whether err says an archive is not a valid ACI.
func IsInvalid(err error) bool {
	var ie *InvalidError
	return errors.As(err, &ie)
}
