package pipeline

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nix2aci/nix2aci/aci"
	"github.com/nix2aci/nix2aci/fragcache"
	"github.com/nix2aci/nix2aci/gzmember"
	"github.com/nix2aci/nix2aci/internal/safeio"
	"github.com/nix2aci/nix2aci/nixstore"
	"github.com/nix2aci/nix2aci/oci"
)

// Reusing OCI layers from a blob store. An OCI build writes every layer
// of its image into a layout of its own. A caller that keeps the blobs of
// earlier builds in one directory named by their digests (nix2aci serve's
// blob store) names it in Request.ReuseBlobs: a layer that directory
// holds is then linked into the layout unread (hard-linked; copied where
// no link can be made) instead of being compressed and written again, so
// that a new app on shared layers writes only its own.
//
// What says which blob holds which layer is an index in that directory
// (blobIndexFile), as untrusted as anything there: whoever can write the
// directory can edit it. As in the ACI layer index (layers.go), each
// entry carries a tag under the cache key (fragcache.Cache.TagRecord)
// over everything it claims: what the layer is written from (its key,
// ociLayerInputs: its store paths with their NAR hashes, the layer
// format, the compressor, compression and level, the time of its
// entries not from the store), its digest, DiffID and size, and the blob
// file's stat data. A blob is reused only when its entry's tag verifies
// and the entry is for exactly the layer this build would write; it is
// linked unread when the file still has the stat data recorded (a file
// changed in any way has a new inode or ctime, which no user can set),
// and a link that turns out to be of another inode is undone. A file
// whose stat data changed is read once, linked, and reused only if its
// bytes have the entry's digest: a link made or removed changes a file's
// ctime, so a build running beside another that linked the blob, or
// after one that failed, reads it rather than writing the layer again.
// The index is read bounded, as strict
// JSON, and only entries keyed by 64 hex digits with well-formed
// SHA-256 digests are kept; a blob's file is named by the entry's
// digest, so no entry reaches a path outside the directory. Without a
// cache key nothing is reused or recorded.
//
// Only plain layers are reused: a shared image's (a popularity layer, a
// layer group), whose bytes are its store paths alone, not the app's.
// The version labels made from contents (contentVersion) and the image's
// config and manifest are made from the layers' DiffIDs and digests
// whatever wrote them: a build that reuses every layer writes the manifest
// a cold one writes.
//
// The build does not put its new layers into the directory: the caller
// does (serve's importOCI), then calls Result.RecordBlobs.

// BlobReuse names a blob store an OCI build reuses layers from.
type BlobReuse struct {
	// Dir holds blobs named by their SHA-256 in hex (an image layout's
	// blobs/sha256), and the index of the layers among them.
	Dir string
	// Hold, if set, is called with a blob's digest ("sha256:<hex>")
	// before the build looks at the blob, so that a collector leaves it
	// until the caller releases it, once the build's image is safe.
	Hold func(digest string)
}

// blobIndexFile is the index of the layers a blob store holds.
const blobIndexFile = ".nix2aci-oci-layers.json"

const (
	// maxBlobIndexSize bounds what is read of the index;
	// maxBlobIndexEntries what is kept in it (about 400 bytes each).
	maxBlobIndexSize    = 16 << 20
	maxBlobIndexEntries = 20000
	// maxBlobSize bounds the size an entry may claim.
	maxBlobSize = 1 << 40
)

// blobTagKind names the blob index's tags (fragcache.Cache.TagRecord),
// bound to the format of the layers it records.
const blobTagKind = aci.LayerFormatVersion + "\x00" + "OCI layer blob index"

type blobIndex struct {
	// Layers are by what they are written from (ociLayerInputs).
	Layers map[string]blobEntry `json:"layers"`
}

// blobEntry is what was true of a layer's blob file when a build
// recorded it.
type blobEntry struct {
	Digest string   `json:"digest"`
	DiffID string   `json:"diffID"`
	Size   int64    `json:"size"`
	File   fileStat `json:"file"`
	Tag    string   `json:"tag"` // hex HMAC under the cache key of the key and the rest
}

// message is what an entry's tag covers: its key and every field but the
// tag.
func (e blobEntry) message(inputs string) []byte {
	e.Tag = ""
	data, _ := json.Marshal(struct {
		Inputs string    `json:"i"`
		Entry  blobEntry `json:"e"`
	}{inputs, e})
	return data
}

// name is the entry's blob file name: its digest's 64 hex digits
// (checked by readBlobIndex).
func (e blobEntry) name() string { return strings.TrimPrefix(e.Digest, "sha256:") }

// layer is the entry as a layer of mediaType.
func (e blobEntry) layer(mediaType string) oci.Layer {
	return oci.Layer{Descriptor: ocispec.Descriptor{MediaType: mediaType, Digest: digest.Digest(e.Digest), Size: e.Size}, DiffID: digest.Digest(e.DiffID)}
}

// ociLayerInputs is the key of the layer of paths in the index: a digest
// of everything its bytes depend on, "" when that is not known (a path
// without a NAR hash).
func ociLayerInputs(c aci.Compression, level int, created time.Time, paths []nixstore.PathInfo) string {
	if len(paths) == 0 {
		return ""
	}
	if level == 0 {
		level = aci.DefaultLevel
	}
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%d\x00", aci.LayerFormatVersion, gzmember.Config{Compression: c, Level: level}.MemberFormat(), created.UnixNano())
	for _, p := range paths {
		if p.NarHash == "" {
			return ""
		}
		fmt.Fprintf(h, "%s\x00%s\x00%d\x00", p.Path, p.NarHash, p.NarSize)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// isHex64 reports whether s is 64 lower-case hex digits.
func isHex64(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range []byte(s) {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func isSHA256Digest(s string) bool {
	h, ok := strings.CutPrefix(s, "sha256:")
	return ok && isHex64(h)
}

// readBlobIndex reads dir's blob index; a missing, damaged or hostile one
// (too large, not strict JSON: unknown fields, trailing data) reads as
// empty, and an entry with a malformed key, digest, size or tag is left
// out. Whether a tag verifies is for proven to say.
func readBlobIndex(dir string) *blobIndex {
	idx := &blobIndex{Layers: map[string]blobEntry{}}
	data, err := safeio.ReadFile(filepath.Join(dir, blobIndexFile), maxBlobIndexSize)
	if err != nil {
		return idx
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var got blobIndex
	if dec.Decode(&got) != nil || dec.Decode(new(json.RawMessage)) != io.EOF {
		return idx
	}
	for k, e := range got.Layers {
		if len(idx.Layers) >= maxBlobIndexEntries {
			break
		}
		if isHex64(k) && isSHA256Digest(e.Digest) && isSHA256Digest(e.DiffID) && e.Size > 0 && e.Size <= maxBlobSize && e.File.Size == e.Size && isHex64(e.Tag) {
			idx.Layers[k] = e
		}
	}
	return idx
}

// tagged returns the entry of the layer written from inputs when its tag
// verifies under cache's key: what it says of the layer is true, and of
// the blob file, was true when it was recorded.
func (idx *blobIndex) tagged(inputs string, cache *fragcache.Cache) (blobEntry, bool) {
	e, ok := idx.Layers[inputs]
	if !ok {
		return e, false
	}
	if !cache.RecordTagged(blobTagKind, e.message(inputs), e.Tag) {
		return e, false
	}
	return e, true
}

// proven returns the entry of the layer written from inputs when its tag
// verifies and dir's blob file is as recorded.
func (idx *blobIndex) proven(dir, inputs string, cache *fragcache.Cache) (blobEntry, bool) {
	e, ok := idx.tagged(inputs, cache)
	if !ok {
		return e, false
	}
	if st, ok := statOf(filepath.Join(dir, e.name())); !ok || st != e.File {
		return e, false
	}
	return e, true
}

// blobReuse is a build's use of its request's blob store.
type blobReuse struct {
	once  sync.Once
	index *blobIndex
	// made are the layers the build wrote or linked that the index may
	// record (RecordBlobs).
	mu   sync.Mutex
	made []madeLayer
}

// madeLayer is a plain layer of the build's layout.
type madeLayer struct {
	inputs   string
	layer    oci.Layer
	dev, ino uint64 // its file in the layout
}

// blobReuse is the build's use of its blob store, made on first use.
func (b *build) blobReuse() *blobReuse {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.reuse == nil {
		b.reuse = &blobReuse{}
	}
	return b.reuse
}

// reusableInputs is the index key of im's layer, or "" when the build
// reuses no blob for it: no blob store, no cache key, or not a plain
// layer.
func (b *build) reusableInputs(im *PlanImage, created time.Time, paths []nixstore.PathInfo) string {
	if b.ReuseBlobs == nil || b.ReuseBlobs.Dir == "" || !im.Shared || len(im.Content.Packages) > 0 || len(im.Content.Extra) > 0 || im.Content.Thin {
		return ""
	}
	if _, ok := b.cache.TagRecord(blobTagKind, nil); !ok {
		return ""
	}
	return ociLayerInputs(b.Compression, b.Level, created, paths)
}

// reuseLayer links the blob of the layer written from inputs into the
// build's layout when the blob store holds it, and returns it. A blob
// whose entry's tag verifies is linked unread when its file is as
// recorded; when only its stat data changed (another build linked it
// meanwhile, which changes its ctime), it is linked, then read once: it
// is reused if its bytes have the entry's digest.
func (b *build) reuseLayer(inputs string) (oci.Layer, bool) {
	if inputs == "" {
		return oci.Layer{}, false
	}
	r := b.blobReuse()
	dir := b.ReuseBlobs.Dir
	r.once.Do(func() { r.index = readBlobIndex(dir) })
	e, ok := r.index.Layers[inputs]
	if !ok {
		return oci.Layer{}, false
	}
	if b.ReuseBlobs.Hold != nil {
		b.ReuseBlobs.Hold(e.Digest)
	}
	if e, ok = r.index.tagged(inputs, b.cache); !ok {
		return oci.Layer{}, false
	}
	mt, err := oci.LayerMediaType(b.Compression)
	if err != nil {
		return oci.Layer{}, false
	}
	from, to := filepath.Join(dir, e.name()), filepath.Join(b.layout.Dir(), "blobs", "sha256", e.name())
	st, ok := statOf(from)
	if !ok || st.Size != e.Size {
		return oci.Layer{}, false
	}
	if err := linkBlob(from, to, e, st == e.File); err != nil {
		return oci.Layer{}, false
	}
	return e.layer(mt), true
}

// madeLayer notes a plain layer the build wrote or linked, for
// RecordBlobs.
func (b *build) madeLayer(inputs string, l oci.Layer) {
	if inputs == "" {
		return
	}
	st, ok := statOf(filepath.Join(b.layout.Dir(), "blobs", "sha256", l.Digest.Encoded()))
	if !ok {
		return
	}
	r := b.blobReuse()
	r.mu.Lock()
	r.made = append(r.made, madeLayer{inputs: inputs, layer: l, dev: st.Dev, ino: st.Ino})
	r.mu.Unlock()
}

// linkBlob puts the blob file from of e at to: hard-linked, or copied
// where no link can be made. Unread, the link must be of the inode e
// recorded (from was not replaced meanwhile), a copy of a file with the
// stat data e recorded; otherwise what was linked or copied must have e's
// digest and size. Anything else is undone.
func linkBlob(from, to string, e blobEntry, unread bool) error {
	err := os.Link(from, to)
	if err == nil {
		if unread {
			if st, ok := statOf(to); ok && st.Dev == e.File.Dev && st.Ino == e.File.Ino && st.Size == e.Size {
				return nil
			}
		} else if _, ok := hasDigest(to, e.Digest, e.Size); ok {
			return nil
		}
		os.Remove(to)
		return errors.New("the blob is not the one recorded")
	}
	if errors.Is(err, fs.ErrExist) || errors.Is(err, fs.ErrNotExist) {
		return err
	}
	in, err := os.OpenFile(from, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return err
	}
	defer in.Close()
	before, ok := fstatOf(in)
	if !ok || (unread && before != e.File) {
		return errors.New("the blob is not the one recorded")
	}
	// Read anyway: checked as it is copied.
	return safeio.WriteAtomic(to, 0o644, func(w io.Writer) error {
		h := sha256.New()
		n, err := io.Copy(io.MultiWriter(w, h), io.LimitReader(in, e.Size+1))
		if after, ok := fstatOf(in); err == nil && (n != e.Size || "sha256:"+hex.EncodeToString(h.Sum(nil)) != e.Digest || !ok || after != before) {
			err = errors.New("the blob is not the one recorded")
		}
		return err
	})
}

// blobsRead counts the blob files read to check their digest (tests).
var blobsRead atomic.Int64

// hasDigest reads the file p (not a link) and returns its stat data when
// it has digest d and size bytes and did not change as it was read.
func hasDigest(p, d string, size int64) (fileStat, bool) {
	blobsRead.Add(1)
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return fileStat{}, false
	}
	defer f.Close()
	before, ok := fstatOf(f)
	if !ok || before.Size != size {
		return fileStat{}, false
	}
	h := sha256.New()
	n, err := io.Copy(h, io.LimitReader(f, size+1))
	if err != nil || n != size || "sha256:"+hex.EncodeToString(h.Sum(nil)) != d {
		return fileStat{}, false
	}
	if after, ok := fstatOf(f); !ok || after != before {
		return fileStat{}, false
	}
	return before, true
}

// fstatOf is the stat data of an open regular file.
func fstatOf(f *os.File) (fileStat, bool) {
	fi, err := f.Stat()
	if err != nil {
		return fileStat{}, false
	}
	return statFrom(fi)
}

// blobRecords are what Result.RecordBlobs records.
type blobRecords struct {
	dir   string
	cache *fragcache.Cache
	made  []madeLayer
}

// records is what the build leaves for Result.RecordBlobs: nil without
// a blob store or a cache key.
func (b *build) records() *blobRecords {
	if b.ReuseBlobs == nil || b.ReuseBlobs.Dir == "" || b.reuse == nil {
		return nil
	}
	if _, ok := b.cache.TagRecord(blobTagKind, nil); !ok {
		return nil
	}
	b.reuse.mu.Lock()
	defer b.reuse.mu.Unlock()
	return &blobRecords{dir: b.ReuseBlobs.Dir, cache: b.cache, made: append([]madeLayer(nil), b.reuse.made...)}
}

// blobIndexMu orders the index's updates within the process (RecordBlobs
// re-reads it, adds, and replaces it); another process's update at the
// same time may lose entries, which only makes a later build write those
// layers again.
var blobIndexMu sync.Mutex

// RecordBlobs records, in the index of the request's ReuseBlobs.Dir, the
// plain layers of this OCI build that the directory holds, so that later
// builds link them instead of writing them. Call it once the build's
// blobs are there (moved there, or found there already) and its output
// is removed: linking a blob, and removing the link, changes its ctime,
// and an entry holds the stat data the file has when it is recorded.
//
// A layer is recorded only when the directory's file is the very file
// the build wrote or linked (the same inode), or an entry proves it
// already, or its bytes have the layer's digest (read once). Files gone
// from the directory are forgotten. Without a blob store or a cache
// key, it does nothing.
func (r *Result) RecordBlobs() error {
	rec := r.blobs
	if rec == nil || len(rec.made) == 0 {
		return nil
	}
	blobIndexMu.Lock()
	defer blobIndexMu.Unlock()
	idx := readBlobIndex(rec.dir)
	recorded := map[string]bool{}
	for _, m := range rec.made {
		recorded[m.inputs] = true
		if e, ok := idx.proven(rec.dir, m.inputs, rec.cache); ok && e.Digest == m.layer.Digest.String() && e.DiffID == m.layer.DiffID.String() && e.Size == m.layer.Size {
			continue
		}
		st, ok := m.check(rec.dir)
		if !ok {
			delete(idx.Layers, m.inputs)
			continue
		}
		e := blobEntry{Digest: m.layer.Digest.String(), DiffID: m.layer.DiffID.String(), Size: m.layer.Size, File: st}
		tag, _ := rec.cache.TagRecord(blobTagKind, e.message(m.inputs))
		e.Tag = hex.EncodeToString(tag)
		idx.Layers[m.inputs] = e
	}
	keys := make([]string, 0, len(idx.Layers))
	for k, e := range idx.Layers {
		if _, err := os.Lstat(filepath.Join(rec.dir, e.name())); errors.Is(err, fs.ErrNotExist) {
			delete(idx.Layers, k)
			continue
		}
		if !recorded[k] {
			keys = append(keys, k)
		}
	}
	// Past the bound, older entries go, in no particular order (the
	// index keeps no time of use).
	sort.Strings(keys)
	for i := 0; len(idx.Layers) > maxBlobIndexEntries && i < len(keys); i++ {
		delete(idx.Layers, keys[i])
	}
	data, err := json.Marshal(idx)
	if err != nil {
		return err
	}
	return safeio.WriteFileAtomic(filepath.Join(rec.dir, blobIndexFile), data, 0o644)
}

// check returns the stat data of dir's blob file of m's layer when it is
// the layer: the file the build made (the same inode), or one whose bytes
// have the layer's digest and size.
func (m madeLayer) check(dir string) (fileStat, bool) {
	p := filepath.Join(dir, m.layer.Digest.Encoded())
	st, ok := statOf(p)
	if !ok || st.Size != m.layer.Size {
		return fileStat{}, false
	}
	if st.Dev == m.dev && st.Ino == m.ino {
		return st, true
	}
	return hasDigest(p, m.layer.Digest.String(), m.layer.Size)
}
