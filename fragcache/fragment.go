package fragcache

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/nix2aci/nix2aci/gzmember"
	"github.com/nix2aci/nix2aci/internal/safeio"
	"github.com/nix2aci/nix2aci/nixstore"
)

// A store path's entry during a build: a Fragment reads it, takes the
// members whose tags prove them, and writes a new entry unless the old one
// held exactly this build's members, all proven. An entry's layout is told
// at Cache: the members, their index (entryIndex), and a footer of the
// index's length and entryMagic.

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

// The most an entry may claim, derived from what the writer (aci.Write)
// emits for a store path of a given NAR size. Every entry of a store path
// is one tar entry: at most a 512-byte header, a PAX header of 512 bytes
// plus at most 8704 bytes of records (a path and a link target, each at
// most PATH_MAX = 4096 bytes, that the kernel lets aci.Write read), and
// the file's contents padded by at most 511 bytes: 10,239 bytes plus its
// contents. The NAR holds the
// same contents (padded to 8 bytes), and at least 168 bytes of framing for
// every entry below the root (a directory entry of "entry", "(", "name", a
// name, "node", ")" around an object of at least 72 bytes) and 96 for the
// root and the NAR's magic. So the tar fragment is at most 61 times the
// NAR size; 64 times, plus a chunk, bounds it.
const (
	tarPerNar = 64
	// maxChunkJSON bounds one chunk's record in the index as a Fragment
	// marshals it: {"u":1048576,"uc":4294967295,"c":1179648,
	// "cc":4294967295,"t":"<64 hex digits>"}, and a comma (129 bytes).
	maxChunkJSON = 160
)

// maxEntryChunks is the most chunks aci.Write cuts a store path of narSize
// bytes of NAR into.
func maxEntryChunks(narSize int64) int64 {
	if narSize <= 0 || narSize > 1<<50 {
		return 0
	}
	return (tarPerNar*narSize+gzmember.ChunkSize)/gzmember.ChunkSize + 1
}

// maxIndexLen is the longest index a Fragment writes for chunks chunks of the
// store path storePath (JSON escapes a character in at most 6 bytes).
func maxIndexLen(storePath string, chunks int64) int64 {
	return 64 + 6*int64(len(storePath)) + chunks*maxChunkJSON
}

// Fragment is the cache state of one store path during a build: the
// gzmember.Store of the store path's segment.
type Fragment struct {
	path     string
	file     string // the entry's name
	old      *os.File
	idx      *entryIndex
	matched  bool // producer: every chunk so far matched idx
	dirty    atomic.Bool
	w        *entryWriter
	chunks   int // set by the sink at the end
	cacheHit bool
	readBuf  []byte
	key      []byte // the cache's key
	// maxChunks is the most chunks a writer cuts this store path into: no
	// entry that claims more is read, none is written.
	maxChunks int64
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

// Fragment opens the cache state of store path p for a build whose
// members are made in format: everything besides the store path's
// contents that its members depend on (the writer's version of the
// fragment it makes of a store path, and gzmember.Config.MemberFormat).
// It returns nil when p is not cached: the cache has no key (no cached
// member could be proven to be the one the build would write, short of
// compressing the chunk again, and untagged entries would serve no later
// build), or p has no NAR size to bound its entry by. Close it when the
// build is done.
func (c *Cache) Fragment(format string, p nixstore.PathInfo) *Fragment {
	if c == nil || c.key == nil {
		return nil
	}
	f := &Fragment{path: p.Path}
	if f.maxChunks = maxEntryChunks(p.NarSize); f.maxChunks == 0 {
		return nil
	}
	f.file = c.path(format, p)
	f.key = c.key
	f.old, f.idx = readEntry(f.file, p.Path, f.maxChunks)
	f.matched = f.idx != nil
	return f
}

// readEntry opens a cache entry and its index, or returns nils for a
// missing, malformed or oversized one.
func readEntry(file, storePath string, maxChunks int64) (*os.File, *entryIndex) {
	fh, err := safeio.OpenRegular(file) // never blocks on a FIFO
	if err != nil {
		return nil, nil
	}
	fi, err := fh.Stat()
	if err != nil {
		fh.Close()
		return nil, nil
	}
	idx, err := parseEntry(fh, fi.Size(), storePath, maxChunks)
	if err != nil {
		fh.Close()
		return nil, nil
	}
	return fh, idx
}

// parseEntry reads and checks the index of an entry of size bytes, which
// may hold at most maxChunks chunks. Sizes are checked before anything is
// read: the entry's against the most maxChunks members and their index
// take, the index's against the most maxChunks records take.
func parseEntry(fh io.ReaderAt, size int64, storePath string, maxChunks int64) (*entryIndex, error) {
	maxIndex := maxIndexLen(storePath, maxChunks)
	if size < 16 || size > 16+maxIndex+maxChunks*gzmember.MaxMember {
		return nil, errors.New("bad size")
	}
	var foot [16]byte
	if _, err := fh.ReadAt(foot[:], size-16); err != nil {
		return nil, err
	}
	if string(foot[8:]) != entryMagic {
		return nil, errors.New("bad magic")
	}
	n := binary.LittleEndian.Uint64(foot[:8])
	if n == 0 || n > uint64(size-16) || n > uint64(maxIndex) {
		return nil, errors.New("bad index length")
	}
	raw := make([]byte, n)
	if _, err := fh.ReadAt(raw, size-16-int64(n)); err != nil {
		return nil, err
	}
	var idx entryIndex
	if err := json.Unmarshal(raw, &idx); err != nil {
		return nil, err
	}
	if idx.StorePath != storePath {
		return nil, errors.New("entry for another path")
	}
	if int64(len(idx.Chunks)) > maxChunks {
		return nil, errors.New("too many chunks")
	}
	var off int64
	for i := range idx.Chunks {
		ci := &idx.Chunks[i]
		// A writer cuts a segment into full chunks and a last, shorter one.
		if ci.C <= 0 || ci.C > gzmember.MaxMember || ci.U <= 0 || ci.U > gzmember.ChunkSize || ci.U != gzmember.ChunkSize && i != len(idx.Chunks)-1 {
			return nil, errors.New("bad chunk")
		}
		ci.off = off
		off += int64(ci.C)
	}
	if off != size-16-int64(n) {
		return nil, errors.New("truncated")
	}
	return &idx, nil
}

// Lookup is called by the producer for each chunk, in order: whether the
// old entry holds a chunk of the same length and CRC-32 in its place, and
// all before it did too.
func (f *Fragment) Lookup(c gzmember.Chunk) bool {
	if !f.matched {
		return false
	}
	if c.Index >= len(f.idx.Chunks) || f.idx.Chunks[c.Index].U != c.Len || f.idx.Chunks[c.Index].UC != c.CRC {
		f.matched = false
		return false
	}
	return true
}

// Take reads chunk c's member from the old entry into out and reports
// whether it is proven to be the member this build would write for the
// chunk (whose length and CRC-32 match the index: see Lookup): its tag
// verifies under the cache's key. It returns the tag. Called from the
// compression workers, concurrently for several chunks.
func (f *Fragment) Take(c gzmember.Chunk, out *bytes.Buffer) (tag []byte, ok bool) {
	tag, ok = f.take(c.Index, out)
	if !ok {
		f.dirty.Store(true)
	}
	return tag, ok
}

func (f *Fragment) take(i int, out *bytes.Buffer) (tag []byte, ok bool) {
	ci := f.idx.Chunks[i]
	got, err := hex.DecodeString(ci.T)
	if err != nil || len(got) != sha256.Size {
		return nil, false // no tag (or no tag of ours): not even read
	}
	out.Grow(ci.C)
	buf := out.AvailableBuffer()[:ci.C]
	if _, err := f.old.ReadAt(buf, ci.off); err != nil || crc(buf) != ci.CC {
		return nil, false
	}
	tag = f.tag(i, ci.U, ci.UC, buf)
	if !hmac.Equal(got, tag) {
		return nil, false
	}
	out.Write(buf)
	return tag, true
}

// Tag is the tag of the member this build compressed for chunk c.
func (f *Fragment) Tag(c gzmember.Chunk, member []byte) []byte {
	return f.tag(c.Index, c.Len, c.CRC, member)
}

// tag is the tag of chunk i's member, of a chunk of u bytes with CRC-32
// uc: HMAC-SHA256 under the cache's key, bound to this entry's name (the
// format, the compressor, the compression and its level, the store path
// and its NAR hash) and the chunk's place.
func (f *Fragment) tag(i, u int, uc uint32, member []byte) []byte {
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
func (f *Fragment) readOld(i int) ([]byte, bool) {
	ci := f.idx.Chunks[i]
	if cap(f.readBuf) < ci.C {
		f.readBuf = make([]byte, ci.C)
	}
	buf := f.readBuf[:ci.C]
	if _, err := f.old.ReadAt(buf, ci.off); err != nil || crc(buf) != ci.CC {
		return nil, false
	}
	return buf, true
}

// Put is called by the sink with each chunk's member it wrote, and its
// tag; it writes a new entry unless the whole fragment comes intact from
// the old one.
func (f *Fragment) Put(c gzmember.Chunk, member, tag []byte, fromCache bool) {
	if f.gaveUp {
		return
	}
	if int64(c.Index) >= f.maxChunks {
		// More chunks than aci.Write can cut this store path into (see
		// maxEntryChunks): an entry no build would read.
		f.giveUp()
		return
	}
	if len(f.proven) == c.Index {
		f.proven = append(f.proven, provenMember{ok: fromCache, tag: tag})
	}
	if f.w == nil && fromCache && !f.dirty.Load() {
		return
	}
	if f.w == nil {
		// Chunks before this one came proven from the old entry.
		f.rewrite(c.Index)
	}
	if f.w != nil {
		f.w.add(c.Len, c.CRC, member, tag)
	}
}

// giveUp drops the new entry, if one was begun: the fragment is not
// cached this build.
func (f *Fragment) giveUp() {
	if f.w != nil {
		f.w.abort()
		f.w = nil
	}
	f.gaveUp = true
}

// rewrite starts a new entry holding the old entry's first n chunks, which
// this build took from it by their tags; on any failure the fragment is
// not cached this build. The members are read again, so each must still
// have the tag it had when taken.
func (f *Fragment) rewrite(n int) {
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
		if ok {
			ok = f.proven[j].ok && hmac.Equal(f.tag(j, ci.U, ci.UC, old), f.proven[j].tag)
		}
		if !ok {
			f.giveUp()
			return
		}
		f.w.add(ci.U, ci.UC, old, f.proven[j].tag)
	}
}

// End is called by the sink after a fragment's last chunk, with the
// number of its chunks.
func (f *Fragment) End(chunks int) {
	f.chunks = chunks
	if f.w == nil && !f.gaveUp && f.idx != nil && f.matched && f.chunks == len(f.idx.Chunks) && !f.dirty.Load() {
		f.cacheHit = true
		now := time.Now()
		os.Chtimes(f.file, now, now) // for least-recently-used collection
	} else if f.w == nil && !f.gaveUp && f.idx != nil && f.matched && !f.dirty.Load() {
		// The old entry is longer than the fragment now is; rewrite it.
		f.rewrite(f.chunks)
	}
	if f.w != nil {
		f.w.finish()
		f.w = nil
	}
	f.closeOld()
	// A build keeps its fragments until it ends: what an entry held
	// goes now.
	f.idx, f.readBuf, f.proven = nil, nil, nil
}

// Hit reports, once the store path's segment has ended, whether every
// member came proven from the cache and its entry was kept as it was.
func (f *Fragment) Hit() bool { return f.cacheHit }

// Close closes what a failed build left open: the old entry, and a new
// one half written.
func (f *Fragment) Close() {
	if f.w != nil {
		f.w.abort()
		f.w = nil
	}
	f.closeOld()
}

func (f *Fragment) closeOld() {
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

// crc is the checksum of members in an entry.
func crc(b []byte) uint32 { return crc32.ChecksumIEEE(b) }
