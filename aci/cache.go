package aci

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nix2aci/nix2aci/internal/safeio"
	"github.com/nix2aci/nix2aci/nixstore"
)

// Cache keeps each store path's compressed members between builds.
//
// An entry is one file, named by a hash of the fragment format version, the
// compression settings, the store path and its NAR hash:
//
//	member bytes of every chunk, in order
//	index: JSON {storePath, chunks: [{u, uc, c, cc, t}]} (uncompressed and
//	       compressed length and CRC-32 of each chunk, and its member's tag)
//	footer: index length (8 bytes, little endian) and the magic "N2ACIFR1"
//
// Nothing in an entry is trusted. A build regenerates each chunk's
// uncompressed bytes anyway (for the image ID), and takes a cached member
// only when that chunk's length and CRC-32 match the index, the member's
// own bytes match their CRC-32, and the member is proven to inflate to the
// chunk, in one of two ways:
//
//   - with a cache key (LoadKey), each member carries a tag, HMAC-SHA256
//     under the key of the entry's name, the chunk's index, length and
//     CRC-32 and the member's bytes. A tag that verifies proves that this
//     key's holder compressed that member from a chunk of that length and
//     CRC-32 for that store path, so the member is taken without being
//     inflated. Whoever can write the cache but cannot read the key can
//     forge no tag.
//   - otherwise (no key, no tag, a tag that does not verify), the member
//     is inflated and compared with the chunk byte for byte.
//
// A truncated, corrupt or mismatched entry is compressed afresh and
// rewritten; an entry proven by inflation alone is rewritten with tags
// when a key is loaded and it has none. Entries are written to a
// temporary file and renamed, so concurrent builds never see half an
// entry.
type Cache struct {
	dir string
	key []byte // nil: no tags made or trusted
}

// cacheTag marks a directory as a nix2aci cache: the standard
// CACHEDIR.TAG (backup tools skip the directory), with a line of ours.
const cacheTag = "Signature: 8a477f597d28d172789f06886806bc55\n# This directory is a cache of compressed Nix store paths made by nix2aci.\n# nix2aci cache gc removes its entries; see https://bford.info/cachedir/\n"

// OpenCache opens the cache in dir, creating it if needed. A directory
// becomes a cache only if nix2aci made it or it was empty (it then gets a
// CACHEDIR.TAG marker); one that holds other things is refused, so that
// neither builds nor cache gc ever touch files that are not theirs.
// (Caches of earlier versions, holding only entry directories, are
// adopted.)
func OpenCache(dir string) (*Cache, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating cache directory: %w", err)
	}
	tag := filepath.Join(dir, "CACHEDIR.TAG")
	if b, err := safeio.ReadFile(tag, 4096); err == nil {
		if string(b) != cacheTag {
			return nil, fmt.Errorf("%s has a CACHEDIR.TAG that nix2aci did not write: it is another program's cache; choose another --cache-dir", dir)
		}
		return &Cache{dir: dir}, nil
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("reading cache directory: %w", err)
	}
	for _, e := range ents {
		if !e.IsDir() || !isEntryDir(e.Name()) {
			return nil, fmt.Errorf("%s is not a nix2aci cache (no CACHEDIR.TAG, and it holds %s): refusing to use or clean it; choose an empty or new --cache-dir", dir, strconv.Quote(e.Name()))
		}
	}
	if err := os.WriteFile(tag, []byte(cacheTag), 0o644); err != nil {
		return nil, fmt.Errorf("marking the cache directory: %w", err)
	}
	return &Cache{dir: dir}, nil
}

// isEntryDir reports whether name is one of the cache's subdirectories:
// two lower-case hex digits.
func isEntryDir(name string) bool {
	return len(name) == 2 && isHex(name)
}

func isHex(s string) bool {
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// isEntry reports whether dir/name is provably a cache entry: named by a
// key, a regular file, ending in the entry magic.
func isEntry(dir string, d fs.DirEntry) bool {
	name := d.Name()
	key, ok := strings.CutSuffix(name, ".frag")
	if !ok || len(key) != 64 || !isHex(key) || !d.Type().IsRegular() || !strings.HasPrefix(key, filepath.Base(dir)) {
		return false
	}
	f, err := safeio.OpenRegular(filepath.Join(dir, name))
	if err != nil {
		return false
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || fi.Size() < 16 {
		return false
	}
	var magic [8]byte
	_, err = f.ReadAt(magic[:], fi.Size()-8)
	return err == nil && string(magic[:]) == entryMagic
}

// Dir returns the cache's directory.
func (c *Cache) Dir() string { return c.dir }

const entryMagic = "N2ACIFR1"

type chunkIndex struct {
	U   int    `json:"u"`
	UC  uint32 `json:"uc"`
	C   int    `json:"c"`
	CC  uint32 `json:"cc"`
	T   string `json:"t,omitempty"` // the member's tag, hex; "" when written without a key
	off int64
}

type entryIndex struct {
	StorePath string       `json:"storePath"`
	Chunks    []chunkIndex `json:"chunks"`
}

func (c *Cache) path(cfg config, p nixstore.PathInfo) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%d\x00%d\x00%s\x00%s", formatVersion, cfg.compression, cfg.level, ChunkSize, p.Path, p.NarHash)
	key := hex.EncodeToString(h.Sum(nil))
	return filepath.Join(c.dir, key[:2], key+".frag")
}

// fragment is the cache state of one store path during a build.
type fragment struct {
	path     string
	file     string // the entry's name; "" when not caching
	old      *os.File
	idx      *entryIndex
	matched  bool // producer: every chunk so far matched idx
	dirty    atomic.Bool
	w        *entryWriter
	chunks   int   // set by the producer at the end
	narSize  int64 // for progress
	cacheHit bool
	readBuf  []byte
	key      []byte      // the cache's key, nil for none
	retag    atomic.Bool // a member had no tag: rewrite the entry with tags
	// proven is, for each chunk the sink has recorded, whether its member
	// came proven from the old entry, and its tag then: a rewrite copies
	// only those members, and only if they still have that tag (the old
	// file may have changed since they were proven).
	proven []provenMember
	gaveUp bool // writing a new entry failed: no more tries this build
}

type provenMember struct {
	ok  bool
	tag []byte
}

func (b *builder) openFragment(p nixstore.PathInfo) *fragment {
	f := &fragment{path: p.Path, narSize: p.NarSize}
	if b.cfg.cache == nil {
		return f
	}
	f.file = b.cfg.cache.path(b.cfg, p)
	f.key = b.cfg.cache.key
	f.old, f.idx = readEntry(f.file, p.Path)
	f.matched = f.idx != nil
	return f
}

// readEntry opens a cache entry and its index, or returns nils for a
// missing or malformed one.
func readEntry(file, storePath string) (*os.File, *entryIndex) {
	fh, err := safeio.OpenRegular(file) // never blocks on a FIFO
	if err != nil {
		return nil, nil
	}
	fi, err := fh.Stat()
	if err != nil {
		fh.Close()
		return nil, nil
	}
	idx, err := parseEntry(fh, fi.Size(), storePath)
	if err != nil {
		fh.Close()
		return nil, nil
	}
	return fh, idx
}

// parseEntry reads and checks the index of an entry of size bytes.
func parseEntry(fh io.ReaderAt, size int64, storePath string) (*entryIndex, error) {
	if size < 16 {
		return nil, errors.New("short")
	}
	var foot [16]byte
	if _, err := fh.ReadAt(foot[:], size-16); err != nil {
		return nil, err
	}
	if string(foot[8:]) != entryMagic {
		return nil, errors.New("bad magic")
	}
	n := int64(binary.LittleEndian.Uint64(foot[:8]))
	if n <= 0 || n > size-16 || n > 64<<20 {
		return nil, errors.New("bad index length")
	}
	raw := make([]byte, n)
	if _, err := fh.ReadAt(raw, size-16-n); err != nil {
		return nil, err
	}
	var idx entryIndex
	if err := json.Unmarshal(raw, &idx); err != nil {
		return nil, err
	}
	if idx.StorePath != storePath {
		return nil, errors.New("entry for another path")
	}
	var off int64
	for i := range idx.Chunks {
		if idx.Chunks[i].C <= 0 || idx.Chunks[i].U <= 0 || idx.Chunks[i].U > ChunkSize {
			return nil, errors.New("bad chunk")
		}
		idx.Chunks[i].off = off
		off += int64(idx.Chunks[i].C)
	}
	if off != size-16-n {
		return nil, errors.New("truncated")
	}
	return &idx, nil
}

// match is called by the producer for each chunk: it returns the cached
// chunk to use, or nil to compress.
func (f *fragment) match(i, ulen int, ucrc uint32) *chunkIndex {
	if !f.matched {
		return nil
	}
	if i >= len(f.idx.Chunks) || f.idx.Chunks[i].U != ulen || f.idx.Chunks[i].UC != ucrc {
		f.matched = false
		return nil
	}
	return &f.idx.Chunks[i]
}

// readCached reads chunk i's member from the old entry into out and
// reports whether it is proven to stand for data (whose length and CRC-32
// match the index: see match). Its bytes must match the index's CRC-32 (a
// cheap first check), its header must claim its own length and its
// trailer the chunk's CRC-32 and size; then
// either its tag verifies under the cache's key, or it is exactly one gzip
// member that inflates, with matching CRC-32 and size, to data byte for
// byte (scratch holds the inflated bytes). It returns the member's tag
// when the cache has a key. Called from the compression workers,
// concurrently for several chunks.
func (f *fragment) readCached(i int, data []byte, out *bytes.Buffer, scratch []byte) (tag []byte, ok bool) {
	ci := f.idx.Chunks[i]
	if ci.C > maxMember {
		return nil, false
	}
	out.Grow(ci.C)
	buf := out.AvailableBuffer()[:ci.C]
	if _, err := f.old.ReadAt(buf, ci.off); err != nil || crc(buf) != ci.CC || memberLength(buf) != len(buf) {
		return nil, false
	}
	// The gzip trailer must name the chunk: its CRC-32 and size.
	if len(buf) < 8 || binary.LittleEndian.Uint32(buf[len(buf)-8:]) != ci.UC || binary.LittleEndian.Uint32(buf[len(buf)-4:]) != uint32(ci.U) {
		return nil, false
	}
	if f.key != nil {
		tag = f.tag(i, ci.U, ci.UC, buf)
		if got, err := hex.DecodeString(ci.T); err == nil && len(ci.T) == 2*sha256.Size && hmac.Equal(got, tag) {
			out.Write(buf)
			return tag, true
		}
	}
	inflateProofs.Add(1)
	got, err := inflateMember(buf, scratch)
	if err != nil || !bytes.Equal(got, data) {
		return nil, false
	}
	if f.key != nil && ci.T == "" {
		f.retag.Store(true)
	}
	out.Write(buf)
	return tag, true
}

// inflateProofs counts the members proven by inflating them (for tests).
var inflateProofs atomic.Int64

// tag is the tag of chunk i's member, of a chunk of u bytes with CRC-32
// uc: HMAC-SHA256 under the cache's key, bound to this entry's name (the
// format, compression, store path and NAR hash) and the chunk's place.
func (f *fragment) tag(i, u int, uc uint32, member []byte) []byte {
	m := hmac.New(sha256.New, f.key)
	var head [20]byte
	binary.LittleEndian.PutUint64(head[0:], uint64(i))
	binary.LittleEndian.PutUint64(head[8:], uint64(u))
	binary.LittleEndian.PutUint32(head[16:], uc)
	io.WriteString(m, "nix2aci cache member 1\x00")
	io.WriteString(m, filepath.Base(f.file))
	m.Write(head[:])
	m.Write(member)
	return m.Sum(nil)
}

// readOld returns chunk i's member bytes from the old entry, to copy into
// a rewritten entry; the caller checks they are the bytes it proved.
func (f *fragment) readOld(i int) ([]byte, bool) {
	ci := f.idx.Chunks[i]
	if ci.C > maxMember {
		return nil, false
	}
	if cap(f.readBuf) < ci.C {
		f.readBuf = make([]byte, ci.C)
	}
	buf := f.readBuf[:ci.C]
	if _, err := f.old.ReadAt(buf, ci.off); err != nil || crc(buf) != ci.CC {
		return nil, false
	}
	return buf, true
}

// record is called by the sink with each chunk it wrote; it writes a new
// entry unless the whole fragment comes intact from the old one.
func (b *builder) record(c *chunk, payload []byte, fromCache bool) {
	f := c.frag
	if f.file == "" || f.gaveUp {
		return
	}
	if len(f.proven) == c.index {
		f.proven = append(f.proven, provenMember{ok: fromCache, tag: c.tag})
	}
	if f.w == nil && fromCache && !f.dirty.Load() {
		return
	}
	if f.w == nil {
		// Chunks before this one came proven from the old entry.
		f.rewrite(c.index)
	}
	if f.w != nil {
		f.w.add(c.ulen, c.ucrc, payload, c.tag)
	}
}

// rewrite starts a new entry holding the old entry's first n chunks, which
// this build took from it proven; on any failure the fragment is not
// cached this build. The members are read again, so each must still have
// the tag it had when proven: without a key there are no tags, and the new
// entry's members will be proven by inflation as any untagged member is.
func (f *fragment) rewrite(n int) {
	if n > len(f.proven) {
		f.gaveUp = true
		return
	}
	if f.w = newEntryWriter(f.file, f.path); f.w == nil {
		f.gaveUp = true
		return
	}
	for j := 0; j < n; j++ {
		old, ok := f.readOld(j)
		ci := f.idx.Chunks[j]
		var tag []byte
		if ok && f.key != nil {
			tag = f.tag(j, ci.U, ci.UC, old)
			ok = hmac.Equal(tag, f.proven[j].tag)
		}
		if !ok || !f.proven[j].ok {
			f.w.abort()
			f.w = nil
			f.gaveUp = true
			return
		}
		f.w.add(ci.U, ci.UC, old, tag)
	}
}

// end is called by the sink after a fragment's last chunk.
func (f *fragment) end() {
	if f.file == "" {
		return
	}
	if f.w == nil && f.idx != nil && f.matched && f.chunks == len(f.idx.Chunks) && !f.dirty.Load() {
		f.cacheHit = true
		if f.retag.Load() {
			f.rewrite(f.chunks) // with tags, the next build inflates nothing
		} else {
			now := time.Now()
			os.Chtimes(f.file, now, now) // for least-recently-used collection
		}
	} else if f.w == nil && f.idx != nil && f.matched && !f.dirty.Load() {
		// The old entry is longer than the fragment now is; rewrite it.
		f.rewrite(f.chunks)
	}
	if f.w != nil {
		f.w.finish()
		f.w = nil
	}
	f.closeOld()
	f.readBuf, f.proven = nil, nil // Write keeps its fragments until it returns
}

func (f *fragment) closeOld() {
	if f.old != nil {
		f.old.Close()
		f.old = nil
	}
}

// entryWriter writes a new cache entry; failures only lose the entry.
type entryWriter struct {
	final string
	tmp   *os.File
	idx   entryIndex
	err   error
}

func newEntryWriter(final, storePath string) *entryWriter {
	if err := os.MkdirAll(filepath.Dir(final), 0o755); err != nil {
		return nil
	}
	tmp, err := os.CreateTemp(filepath.Dir(final), ".tmp-*")
	if err != nil {
		return nil
	}
	return &entryWriter{final: final, tmp: tmp, idx: entryIndex{StorePath: storePath}}
}

func (w *entryWriter) add(u int, uc uint32, member, tag []byte) {
	if w.err != nil {
		return
	}
	if _, w.err = w.tmp.Write(member); w.err == nil {
		w.idx.Chunks = append(w.idx.Chunks, chunkIndex{U: u, UC: uc, C: len(member), CC: crc(member), T: hex.EncodeToString(tag)})
	}
}

func (w *entryWriter) abort() {
	w.tmp.Close()
	os.Remove(w.tmp.Name())
}

func (w *entryWriter) finish() {
	if w.err == nil {
		var raw []byte
		if raw, w.err = json.Marshal(w.idx); w.err == nil {
			var foot [16]byte
			binary.LittleEndian.PutUint64(foot[:8], uint64(len(raw)))
			copy(foot[8:], entryMagic)
			if _, w.err = w.tmp.Write(append(raw, foot[:]...)); w.err == nil {
				w.err = w.tmp.Close()
				if w.err == nil {
					w.err = os.Rename(w.tmp.Name(), w.final)
				}
				if w.err == nil {
					return
				}
			}
		}
	}
	w.abort()
}

// GCResult says what GC removed.
type GCResult struct {
	Entries    int   `json:"entries"`
	Bytes      int64 `json:"bytes"`
	Removed    int   `json:"removed"`
	FreedBytes int64 `json:"freedBytes"`
}

// GC removes the least recently used entries until the cache holds at most
// maxBytes, and leftovers of interrupted writes older than an hour. It
// removes only what is provably the cache's own: regular files in the
// two-hex-digit subdirectories, named by a key and ending in the entry
// magic, or named as its temporary files; never anything else, never
// through a symlink.
func (c *Cache) GC(maxBytes int64) (GCResult, error) {
	type ent struct {
		path string
		size int64
		used time.Time
	}
	var ents []ent
	var res GCResult
	if _, err := OpenCache(c.dir); err != nil {
		return res, err
	}
	subs, err := os.ReadDir(c.dir)
	if err != nil {
		return res, fmt.Errorf("reading cache %s: %w", c.dir, err)
	}
	for _, s := range subs {
		if !s.IsDir() || !isEntryDir(s.Name()) {
			continue
		}
		dir := filepath.Join(c.dir, s.Name())
		files, err := os.ReadDir(dir)
		if err != nil {
			return res, fmt.Errorf("reading cache %s: %w", c.dir, err)
		}
		for _, d := range files {
			fi, err := d.Info()
			if err != nil || !d.Type().IsRegular() {
				continue
			}
			p := filepath.Join(dir, d.Name())
			switch {
			case strings.HasPrefix(d.Name(), ".tmp-"):
				if time.Since(fi.ModTime()) > time.Hour {
					os.Remove(p)
				}
			case isEntry(dir, d):
				ents = append(ents, ent{p, fi.Size(), fi.ModTime()})
				res.Bytes += fi.Size()
			}
		}
	}
	res.Entries = len(ents)
	sort.Slice(ents, func(i, j int) bool { return ents[i].used.Before(ents[j].used) })
	for _, e := range ents {
		if res.Bytes <= maxBytes {
			break
		}
		if err := os.Remove(e.path); err == nil {
			res.Bytes -= e.size
			res.FreedBytes += e.size
			res.Removed++
			res.Entries--
		}
	}
	return res, nil
}
