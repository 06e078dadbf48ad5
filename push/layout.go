package push

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nix2aci/nix2aci/internal/safeio"
)

// Bounds on what a layout may hold. A manifest is a few kilobytes (a
// registry takes at most 4 MiB), a config tens of kilobytes.
const (
	maxIndex    = 1 << 20
	maxManifest = 4 << 20
	maxConfig   = 8 << 20
	maxLayers   = 1000
)

// LayoutError reports a layout that is not one push takes: not an OCI
// image layout, or one whose files disagree with each other.
type LayoutError struct {
	Dir string
	Msg string
}

func (e *LayoutError) Error() string {
	return fmt.Sprintf("OCI image layout %s: %s", safeio.Quote(e.Dir), e.Msg)
}

// Layer media types push uploads: those of OCI and Docker layers that
// are distributed (not foreign or non-distributable ones).
var layerTypes = map[string]bool{
	ocispec.MediaTypeImageLayer:                    true,
	ocispec.MediaTypeImageLayerGzip:                true,
	ocispec.MediaTypeImageLayerZstd:                true,
	string(types.DockerLayer):                      true,
	"application/vnd.docker.image.rootfs.diff.tar": true,
}

// Image is the image of a layout, checked, as push uploads it: a
// go-containerregistry image whose manifest and config are the layout's
// bytes and whose layers are read from the layout's blob files.
type Image struct {
	dir      string
	root     *os.Root // the layout's blobs/sha256
	manifest []byte
	config   []byte
	// Digest is the manifest's digest: the image's name in a registry.
	Digest    string
	mediaType types.MediaType
	// Blobs are the config and the layers, once each (two layers of the
	// same blob are one blob), the config first.
	Blobs []ocispec.Descriptor
	// RefName is index.json's org.opencontainers.image.ref.name for the
	// image: the tag the layout has it under (empty if none).
	RefName string
}

// Manifest returns the manifest's bytes.
func (im *Image) Manifest() []byte { return im.manifest }

// Close releases the layout's directory.
func (im *Image) Close() error { return im.root.Close() }

// OpenLayout reads the OCI image layout dir (what nix2aci build --format
// oci writes), which must hold one image, and checks its index.json,
// manifest and config against their digests and bounds; layer blobs are
// checked when read. Every error is a *LayoutError.
func OpenLayout(dir string) (*Image, error) {
	bad := func(format string, args ...any) (*Image, error) {
		return nil, &LayoutError{Dir: dir, Msg: fmt.Sprintf(format, args...)}
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return bad("%v", errors.Unwrap(err))
	}
	if !fi.IsDir() {
		return bad("it is not a directory: push takes the image layout directory nix2aci build --format oci writes (an .oci directory, or ./result.oci)")
	}
	top, err := os.OpenRoot(dir)
	if err != nil {
		return bad("%v", err)
	}
	defer top.Close()
	layout, err := readInRoot(top, ocispec.ImageLayoutFile, 4<<10)
	if err != nil {
		return bad("%v: it is not an OCI image layout (nix2aci build --format oci writes one)", err)
	}
	var lv ocispec.ImageLayout
	if err := json.Unmarshal(layout, &lv); err != nil || lv.Version != ocispec.ImageLayoutVersion {
		return bad("its oci-layout file does not say imageLayoutVersion %q", ocispec.ImageLayoutVersion)
	}
	idxData, err := readInRoot(top, ocispec.ImageIndexFile, maxIndex)
	if err != nil {
		return bad("%v", err)
	}
	var idx ocispec.Index
	if err := json.Unmarshal(idxData, &idx); err != nil {
		return bad("index.json is not an OCI image index: %v", err)
	}
	if len(idx.Manifests) != 1 {
		return bad("index.json names %d images; push takes a layout of one image, as nix2aci build writes", len(idx.Manifests))
	}
	md := idx.Manifests[0]
	if err := checkDescriptor(md); err != nil {
		return bad("index.json: %v", err)
	}
	var mt types.MediaType
	switch md.MediaType {
	case ocispec.MediaTypeImageManifest, string(types.DockerManifestSchema2):
		mt = types.MediaType(md.MediaType)
	case ocispec.MediaTypeImageIndex, string(types.DockerManifestList):
		return bad("index.json names an image index (several platforms); push takes a single image")
	default:
		return bad("index.json names a manifest of media type %s, not an image manifest", safeio.QuoteAlways(md.MediaType))
	}
	if md.Size > maxManifest {
		return bad("the manifest is %d bytes, more than the %d a registry takes", md.Size, maxManifest)
	}
	root, err := top.OpenRoot(filepath.Join("blobs", "sha256"))
	if err != nil {
		return bad("%v", err)
	}
	im := &Image{dir: dir, root: root, Digest: md.Digest.String(), mediaType: mt, RefName: md.Annotations[ocispec.AnnotationRefName]}
	ok := false
	defer func() {
		if !ok {
			root.Close()
		}
	}()
	if im.manifest, err = readBlob(root, md); err != nil {
		return bad("the manifest: %v", err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(im.manifest, &m); err != nil {
		return bad("the manifest %s is not an image manifest: %v", md.Digest, err)
	}
	if m.SchemaVersion != 2 || m.MediaType != "" && m.MediaType != md.MediaType {
		return bad("the manifest %s is not a schema 2 image manifest of media type %s", md.Digest, md.MediaType)
	}
	if err := checkDescriptor(m.Config); err != nil {
		return bad("the manifest's config: %v", err)
	}
	if m.Config.Size > maxConfig {
		return bad("the config is %d bytes, more than the %d pushed", m.Config.Size, maxConfig)
	}
	if im.config, err = readBlob(root, m.Config); err != nil {
		return bad("the config: %v", err)
	}
	var cfg ocispec.Image
	if err := json.Unmarshal(im.config, &cfg); err != nil {
		return bad("the config %s is not an image config: %v", m.Config.Digest, err)
	}
	if len(m.Layers) == 0 || len(m.Layers) > maxLayers {
		return bad("the manifest has %d layers; an image has 1 to %d", len(m.Layers), maxLayers)
	}
	im.Blobs = append(im.Blobs, m.Config)
	seen := map[string]bool{m.Config.Digest.String(): true}
	for i, l := range m.Layers {
		if err := checkDescriptor(l); err != nil {
			return bad("layer %d: %v", i+1, err)
		}
		if !layerTypes[l.MediaType] {
			return bad("layer %d is of media type %s, which push does not upload", i+1, safeio.QuoteAlways(l.MediaType))
		}
		if seen[l.Digest.String()] {
			continue
		}
		seen[l.Digest.String()] = true
		if _, err := blobSize(root, l); err != nil {
			return bad("layer %d: %v", i+1, err)
		}
		im.Blobs = append(im.Blobs, l)
	}
	ok = true
	return im, nil
}

// checkDescriptor checks that d names a blob by a SHA-256 digest, with a
// size.
func checkDescriptor(d ocispec.Descriptor) error {
	if err := d.Digest.Validate(); err != nil || d.Digest.Algorithm().String() != "sha256" {
		return fmt.Errorf("the digest %s is not sha256:<64 lowercase hex digits>", safeio.QuoteAlways(d.Digest.String()))
	}
	if d.Size < 0 {
		return fmt.Errorf("blob %s has the size %d", d.Digest, d.Size)
	}
	return nil
}

// readInRoot reads the regular file name in rt, of at most max bytes,
// without blocking on a FIFO.
func readInRoot(rt *os.Root, name string, max int64) ([]byte, error) {
	f, err := openRegular(rt, name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s is more than %d bytes", name, max)
	}
	return b, nil
}

// openRegular opens the regular file name in rt (no symlink out of it).
func openRegular(rt *os.Root, name string) (*os.File, error) {
	f, _, err := safeio.OpenRegularIn(rt, name)
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return nil, fmt.Errorf("%s: %w", name, pe.Err)
	}
	return f, err
}

// blobSize checks that d's blob file is a regular file of d.Size bytes.
func blobSize(rt *os.Root, d ocispec.Descriptor) (int64, error) {
	f, err := openRegular(rt, d.Digest.Encoded())
	if err != nil {
		return 0, fmt.Errorf("blob %s: %w", d.Digest, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if fi.Size() != d.Size {
		return 0, fmt.Errorf("blob %s is %d bytes, but the manifest says %d", d.Digest, fi.Size(), d.Size)
	}
	return fi.Size(), nil
}

// readBlob reads d's blob whole and checks it against d.
func readBlob(rt *os.Root, d ocispec.Descriptor) ([]byte, error) {
	b, err := readInRoot(rt, d.Digest.Encoded(), d.Size)
	if err != nil {
		return nil, fmt.Errorf("blob %s: %w", d.Digest, err)
	}
	sum := sha256.Sum256(b)
	if int64(len(b)) != d.Size || hex.EncodeToString(sum[:]) != d.Digest.Encoded() {
		return nil, fmt.Errorf("blob %s does not match its digest and size (%d bytes): it was changed after it was written", d.Digest, d.Size)
	}
	return b, nil
}

// openLayer opens d's blob for reading, checked against d as it is read.
func (im *Image) openLayer(d ocispec.Descriptor) (io.ReadCloser, error) {
	if _, err := blobSize(im.root, d); err != nil {
		return nil, &LayoutError{Dir: im.dir, Msg: err.Error()}
	}
	f, err := openRegular(im.root, d.Digest.Encoded())
	if err != nil {
		return nil, &LayoutError{Dir: im.dir, Msg: err.Error()}
	}
	return &checkedReader{f: f, h: sha256.New(), d: d, dir: im.dir}, nil
}

// checkedReader reads a blob file and fails the read that reaches its
// size, rather than returning its last bytes, if the bytes do not match
// the digest, so that an upload of a changed blob never completes.
type checkedReader struct {
	f   *os.File
	h   hash.Hash
	d   ocispec.Descriptor
	n   int64
	dir string
}

func (r *checkedReader) Read(p []byte) (int, error) {
	if rest := r.d.Size - r.n; int64(len(p)) > rest {
		p = p[:rest]
	}
	if len(p) == 0 {
		if r.n < r.d.Size {
			return 0, nil
		}
		return 0, io.EOF
	}
	n, err := r.f.Read(p)
	r.h.Write(p[:n])
	r.n += int64(n)
	if r.n == r.d.Size {
		if !bytes.Equal(r.h.Sum(nil), mustHex(r.d.Digest.Encoded())) {
			return 0, &LayoutError{Dir: r.dir, Msg: fmt.Sprintf("blob %s does not match its digest: it was changed after it was written; build the image again", r.d.Digest)}
		}
		return n, nil
	}
	if err == io.EOF {
		return n, &LayoutError{Dir: r.dir, Msg: fmt.Sprintf("blob %s ended after %d of its %d bytes", r.d.Digest, r.n, r.d.Size)}
	}
	return n, err
}

func (r *checkedReader) Close() error { return r.f.Close() }

func mustHex(s string) []byte {
	b, _ := hex.DecodeString(s)
	return b
}

// The go-containerregistry image of im: its manifest and config as read,
// its layers from the blob files.

func (im *Image) RawManifest() ([]byte, error)        { return im.manifest, nil }
func (im *Image) RawConfigFile() ([]byte, error)      { return im.config, nil }
func (im *Image) MediaType() (types.MediaType, error) { return im.mediaType, nil }

// LayerByDigest returns the layer of blob h.
func (im *Image) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	for _, d := range im.Blobs[1:] {
		if d.Digest.String() == h.String() {
			return &layer{im: im, d: d}, nil
		}
	}
	if h.String() == im.Blobs[0].Digest.String() {
		return &layer{im: im, d: im.Blobs[0]}, nil
	}
	return nil, fmt.Errorf("the image has no blob %s", h)
}

type layer struct {
	im *Image
	d  ocispec.Descriptor
}

func (l *layer) Digest() (v1.Hash, error)            { return v1.NewHash(l.d.Digest.String()) }
func (l *layer) Size() (int64, error)                { return l.d.Size, nil }
func (l *layer) MediaType() (types.MediaType, error) { return types.MediaType(l.d.MediaType), nil }
func (l *layer) Compressed() (io.ReadCloser, error)  { return l.im.openLayer(l.d) }
