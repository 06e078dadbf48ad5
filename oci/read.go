package oci

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nix2aci/nix2aci/internal/safeio"
)

// Bounds on what ReadLayout and ReadArchive read: the files they take
// whole are small (registries refuse manifests over 4 MiB), and no image
// has more layers or bigger blobs than these.
const (
	maxIndexFile   = 1 << 20
	maxManifest    = 4 << 20
	maxConfig      = 8 << 20
	maxLayerCount  = 1024
	MaxBlobSize    = 1 << 40
	maxSmallBlobs  = 64 << 20 // an archive's small blobs kept in memory, in all
	maxIndexImages = 1024
	maxArchiveBlob = 1 << 16 // blobs in an oci-archive
)

// Checked is an image read back from an OCI image layout or oci-archive
// and checked blob by blob: every blob the manifest names (its config and
// layers) is there, of the size and digest the manifest says.
type Checked struct {
	// Manifest is the manifest's exact bytes, whose digest a container
	// signature signs, and Digest that digest.
	Manifest []byte
	Digest   string
	// RefName is the manifest's org.opencontainers.image.ref.name in
	// index.json: a tag in a layout nix2aci writes, NAME:TAG in an
	// oci-archive; empty if none.
	RefName string
	Config  ocispec.Descriptor
	Layers  []ocispec.Descriptor
	// Size is the bytes of the manifest and every blob it names.
	Size int64
}

// InvalidError reports an image layout or archive that is not a valid
// one, or whose blobs are not what its manifest says.
type InvalidError struct {
	Path string
	Msg  string
}

func (e *InvalidError) Error() string {
	return fmt.Sprintf("%s: %s", safeio.Quote(e.Path), e.Msg)
}

// blobs is where ReadLayout and ReadArchive find blobs.
type blobs interface {
	// read returns the blob d, of size bytes, checked against d.
	read(d string, size, max int64) ([]byte, error)
	// check checks that the blob d is there, of size bytes, and has
	// digest d.
	check(d string, size int64) error
}

// ReadLayout reads the OCI image layout directory dir and checks it (see
// Checked). The image is the only one index.json names, or, if it names
// several, the one whose ref.name is one of names. Everything read is
// taken as hostile: index.json and the manifest are bounded, digests
// must be sha256 in lowercase hex, sizes are bounded, and files are
// opened inside dir only, without following a symlink out of it or
// blocking on a FIFO. A failure is an *InvalidError.
func ReadLayout(dir string, names ...string) (*Checked, error) {
	bad := func(format string, args ...any) error {
		return &InvalidError{Path: dir, Msg: fmt.Sprintf(format, args...)}
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, bad("%v", unwrapPath(err))
	}
	if !fi.IsDir() {
		return nil, bad("it is not a directory (an OCI image layout); an oci-archive is read with ReadArchive")
	}
	rt, err := os.OpenRoot(dir)
	if err != nil {
		return nil, bad("%v", unwrapPath(err))
	}
	defer rt.Close()
	if _, err := readInRoot(rt, ocispec.ImageLayoutFile, 4096); err != nil {
		return nil, bad("it is not an OCI image layout: reading %s: %v", ocispec.ImageLayoutFile, err)
	}
	index, err := readInRoot(rt, ocispec.ImageIndexFile, maxIndexFile)
	if err != nil {
		return nil, bad("reading %s: %v", ocispec.ImageIndexFile, err)
	}
	c, err := check(index, layoutBlobs{rt}, names)
	if err != nil {
		return nil, bad("%v", err)
	}
	return c, nil
}

// ReadArchive reads the oci-archive (an OCI image layout as a tar file) at
// file and checks it as ReadLayout does, in one pass over the file: each
// blob's digest and size are computed as it goes by, and only the small
// ones (a manifest, a config) are kept.
func ReadArchive(file string, names ...string) (*Checked, error) {
	bad := func(format string, args ...any) error {
		return &InvalidError{Path: file, Msg: fmt.Sprintf(format, args...)}
	}
	f, err := safeio.OpenRegular(file)
	if err != nil {
		return nil, bad("%v", unwrapPath(err))
	}
	defer f.Close()
	ab := archiveBlobs{seen: map[string]archiveBlob{}}
	var index []byte
	layout := false
	kept := int64(0)
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, bad("it is not a readable tar file: %v", err)
		}
		name := strings.TrimPrefix(path.Clean("/"+h.Name), "/")
		if h.Typeflag == tar.TypeDir {
			continue
		}
		if name != ocispec.ImageLayoutFile && name != ocispec.ImageIndexFile && !strings.HasPrefix(name, "blobs/") {
			continue
		}
		if h.Typeflag != tar.TypeReg {
			return nil, bad("%s in it is not a regular file", safeio.QuoteAlways(name))
		}
		switch {
		case name == ocispec.ImageLayoutFile:
			layout = true
		case name == ocispec.ImageIndexFile:
			if index != nil {
				return nil, bad("it holds %s twice", name)
			}
			if index, err = readAll(tr, maxIndexFile); err != nil {
				return nil, bad("reading %s: %v", name, err)
			}
		default:
			hx, ok := strings.CutPrefix(name, "blobs/sha256/")
			if !ok || !isSHA256Hex(hx) {
				return nil, bad("%s in it is not blobs/sha256/<64 lowercase hex digits>", safeio.QuoteAlways(name))
			}
			d := "sha256:" + hx
			if _, dup := ab.seen[d]; dup {
				return nil, bad("it holds %s twice", safeio.QuoteAlways(name))
			}
			if len(ab.seen) == maxArchiveBlob {
				return nil, bad("it holds more than %d blobs", maxArchiveBlob)
			}
			if h.Size > MaxBlobSize {
				return nil, bad("blob %s is %d bytes, more than the %d allowed", d, h.Size, int64(MaxBlobSize))
			}
			hash := sha256.New()
			var small bytes.Buffer
			w := io.Writer(hash)
			if h.Size <= maxConfig && kept+h.Size <= maxSmallBlobs {
				w = io.MultiWriter(hash, &small)
				kept += h.Size
			}
			n, err := io.Copy(w, tr)
			if err != nil {
				return nil, bad("reading blob %s: %v", d, err)
			}
			b := archiveBlob{size: n, digest: "sha256:" + hex.EncodeToString(hash.Sum(nil))}
			if small.Len() > 0 || n == 0 {
				b.data = small.Bytes()
			}
			ab.seen[d] = b
		}
	}
	if !layout {
		return nil, bad("it is not an oci-archive: it has no %s file", ocispec.ImageLayoutFile)
	}
	if index == nil {
		return nil, bad("it is not an oci-archive: it has no %s", ocispec.ImageIndexFile)
	}
	c, err := check(index, ab, names)
	if err != nil {
		return nil, bad("%v", err)
	}
	return c, nil
}

// check reads index.json's image and checks its manifest and blobs.
func check(indexJSON []byte, bs blobs, names []string) (*Checked, error) {
	var index ocispec.Index
	if err := json.Unmarshal(indexJSON, &index); err != nil {
		return nil, fmt.Errorf("%s is not valid JSON: %v", ocispec.ImageIndexFile, err)
	}
	if index.SchemaVersion != 2 {
		return nil, fmt.Errorf("%s has schemaVersion %d, not 2", ocispec.ImageIndexFile, index.SchemaVersion)
	}
	if len(index.Manifests) == 0 {
		return nil, fmt.Errorf("%s names no image", ocispec.ImageIndexFile)
	}
	if len(index.Manifests) > maxIndexImages {
		return nil, fmt.Errorf("%s names %d images, more than the %d read", ocispec.ImageIndexFile, len(index.Manifests), maxIndexImages)
	}
	desc := index.Manifests[0]
	if len(index.Manifests) > 1 {
		found := false
		var have []string
		for _, m := range index.Manifests {
			ref := m.Annotations[ocispec.AnnotationRefName]
			have = append(have, safeio.QuoteAlways(ref))
			for _, n := range names {
				if n != "" && ref == n && !found {
					desc, found = m, true
				}
			}
		}
		if !found {
			return nil, fmt.Errorf("%s names %d images (%s) and none is %s", ocispec.ImageIndexFile, len(index.Manifests), strings.Join(have, ", "), strings.Join(quoteAll(names), " or "))
		}
	}
	if desc.MediaType != ocispec.MediaTypeImageManifest {
		return nil, fmt.Errorf("the image in %s is a %s, not an image manifest (%s)", ocispec.ImageIndexFile, safeio.QuoteAlways(desc.MediaType), ocispec.MediaTypeImageManifest)
	}
	if err := checkDescriptor(desc.Digest.String(), desc.Size, maxManifest); err != nil {
		return nil, fmt.Errorf("the manifest's %v", err)
	}
	mdata, err := bs.read(desc.Digest.String(), desc.Size, maxManifest)
	if err != nil {
		return nil, fmt.Errorf("the manifest: %v", err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(mdata, &m); err != nil {
		return nil, fmt.Errorf("the manifest is not valid JSON: %v", err)
	}
	if m.SchemaVersion != 2 || m.MediaType != "" && m.MediaType != ocispec.MediaTypeImageManifest {
		return nil, fmt.Errorf("the manifest is not an OCI image manifest (schemaVersion %d, mediaType %s)", m.SchemaVersion, safeio.QuoteAlways(m.MediaType))
	}
	if len(m.Layers) > maxLayerCount {
		return nil, fmt.Errorf("the manifest names %d layers, more than the %d read", len(m.Layers), maxLayerCount)
	}
	c := &Checked{Manifest: mdata, Digest: desc.Digest.String(), RefName: desc.Annotations[ocispec.AnnotationRefName], Config: m.Config, Layers: m.Layers, Size: int64(len(mdata))}
	if err := checkDescriptor(m.Config.Digest.String(), m.Config.Size, maxConfig); err != nil {
		return nil, fmt.Errorf("the config's %v", err)
	}
	if err := bs.check(m.Config.Digest.String(), m.Config.Size); err != nil {
		return nil, fmt.Errorf("the config: %v", err)
	}
	c.Size += m.Config.Size
	for i, l := range m.Layers {
		if err := checkDescriptor(l.Digest.String(), l.Size, MaxBlobSize); err != nil {
			return nil, fmt.Errorf("layer %d's %v", i+1, err)
		}
		if err := bs.check(l.Digest.String(), l.Size); err != nil {
			return nil, fmt.Errorf("layer %d: %v", i+1, err)
		}
		c.Size += l.Size
	}
	return c, nil
}

func quoteAll(ss []string) []string {
	out := make([]string, 0, len(ss))
	for _, s := range ss {
		out = append(out, safeio.QuoteAlways(s))
	}
	return out
}

// checkDescriptor checks a descriptor's digest and size before anything
// is opened by them.
func checkDescriptor(d string, size, max int64) error {
	hx, ok := strings.CutPrefix(d, "sha256:")
	if !ok || !isSHA256Hex(hx) {
		return fmt.Errorf("digest %s is not sha256:<64 lowercase hex digits>", safeio.QuoteAlways(d))
	}
	if size < 0 || size > max {
		return fmt.Errorf("size %d is not between 0 and %d", size, max)
	}
	return nil
}

func isSHA256Hex(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// layoutBlobs reads blobs from a layout directory.
type layoutBlobs struct{ rt *os.Root }

func (l layoutBlobs) open(d string) (*os.File, int64, error) {
	name := "blobs/sha256/" + strings.TrimPrefix(d, "sha256:")
	f, fi, err := safeio.OpenRegularIn(l.rt, name)
	var nr *safeio.NotRegularError
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, 0, fmt.Errorf("blob %s is missing", d)
	case errors.As(err, &nr):
		return nil, 0, fmt.Errorf("blob %s is not a regular file", d)
	case err != nil:
		return nil, 0, fmt.Errorf("blob %s: %v", d, unwrapPath(err))
	}
	return f, fi.Size(), nil
}

func (l layoutBlobs) read(d string, size, max int64) ([]byte, error) {
	f, n, err := l.open(d)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if n != size {
		return nil, fmt.Errorf("blob %s is %d bytes, not the %d its descriptor says", d, n, size)
	}
	b, err := readAll(f, max)
	if err != nil {
		return nil, fmt.Errorf("blob %s: %v", d, err)
	}
	return b, matches(d, size, int64(len(b)), sha256.Sum256(b))
}

func (l layoutBlobs) check(d string, size int64) error {
	f, n, err := l.open(d)
	if err != nil {
		return err
	}
	defer f.Close()
	if n != size {
		return fmt.Errorf("blob %s is %d bytes, not the %d its descriptor says", d, n, size)
	}
	h := sha256.New()
	got, err := io.Copy(h, io.LimitReader(f, size+1))
	if err != nil {
		return fmt.Errorf("reading blob %s: %v", d, err)
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return matches(d, size, got, sum)
}

// matches says whether a blob read as got bytes hashing to sum is the
// blob d of size bytes.
func matches(d string, size, got int64, sum [32]byte) error {
	if got != size {
		return fmt.Errorf("blob %s is %d bytes, not the %d its descriptor says", d, got, size)
	}
	if actual := "sha256:" + hex.EncodeToString(sum[:]); actual != d {
		return fmt.Errorf("blob %s has the digest %s: it was altered", d, actual)
	}
	return nil
}

// archiveBlob is what ReadArchive saw of a blob.
type archiveBlob struct {
	size   int64
	digest string // the digest of its contents
	data   []byte // its contents, if small; nil otherwise
}

type archiveBlobs struct{ seen map[string]archiveBlob }

func (a archiveBlobs) check(d string, size int64) error {
	b, ok := a.seen[d]
	if !ok {
		return fmt.Errorf("blob %s is missing", d)
	}
	if b.size != size {
		return fmt.Errorf("blob %s is %d bytes, not the %d its descriptor says", d, b.size, size)
	}
	if b.digest != d {
		return fmt.Errorf("blob %s has the digest %s: it was altered", d, b.digest)
	}
	return nil
}

func (a archiveBlobs) read(d string, size, max int64) ([]byte, error) {
	if err := a.check(d, size); err != nil {
		return nil, err
	}
	b := a.seen[d]
	if b.data == nil && b.size > 0 || b.size > max {
		return nil, fmt.Errorf("blob %s is too big to read (%d bytes)", d, b.size)
	}
	return b.data, nil
}

// readInRoot reads the regular file name in rt, of at most max bytes,
// without blocking on a FIFO.
func readInRoot(rt *os.Root, name string, max int64) ([]byte, error) {
	f, _, err := safeio.OpenRegularIn(rt, name)
	var nr *safeio.NotRegularError
	if errors.As(err, &nr) {
		return nil, errors.New("it is not a regular file")
	}
	if err != nil {
		return nil, unwrapPath(err)
	}
	defer f.Close()
	return readAll(f, max)
}

// readAll reads r whole, refusing more than max bytes.
func readAll(r io.Reader, max int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("it is more than %d bytes", max)
	}
	return b, nil
}

// unwrapPath drops an *fs.PathError's path, which the caller names.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
