package aci

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/appc/spec/schema"
	"github.com/klauspost/compress/gzip"
	"github.com/ulikunitz/xz"

	"github.com/nix2aci/nix2aci/manifest"
	"github.com/nix2aci/nix2aci/nixstore"
)

// Compression is how an archive is compressed.
type Compression string

// The compressions Write can produce; the ACI spec also allows bzip2, which
// nothing is gained by writing.
const (
	Gzip Compression = "gzip"
	Xz   Compression = "xz"
	None Compression = "none"
)

// ParseCompression checks a compression name given by a user.
func ParseCompression(s string) (Compression, error) {
	switch c := Compression(s); c {
	case Gzip, Xz, None:
		return c, nil
	}
	return "", fmt.Errorf("unknown compression %q: use gzip, xz or none", s)
}

// DefaultLevel is the gzip level used unless WithCompression says
// otherwise. klauspost/compress's level 6 gives archives within 5% of the
// size of pigz's default level 6 in well under half its time; level 7
// comes within 3% but costs about 40% more time.
const DefaultLevel = 6

// ChunkSize is the most uncompressed bytes in one compressed member.
const ChunkSize = 1 << 20

// maxInFlight caps the chunks being read, compressed or written at once.
const maxInFlight = 12

// formatVersion changes whenever the bytes Write produces for a store path
// change; it is part of every cache key.
const formatVersion = "nix2aci-fragment-3"

// Image is what Write puts into an archive.
type Image struct {
	Manifest *schema.ImageManifest
	// Closure is every store path the image needs.
	Closure *nixstore.Graph
	// Packages are linked into the root (/bin/..., /lib/...), first wins.
	Packages []string
	// Thin images hold no store contents, only a mount target per store
	// path; the manifest should carry a mount point for each (ThinMounts).
	Thin bool
	// Extra are files and directories the image gets at its root unless
	// its packages provide those paths.
	Extra []Extra
}

// Result says what Write wrote.
type Result struct {
	ImageID     string     `json:"imageID"`
	Size        int64      `json:"size"`
	TarSize     int64      `json:"uncompressedSize"`
	StorePaths  int        `json:"storePaths"`
	CachedPaths int        `json:"cachedPaths"`
	Conflicts   []Conflict `json:"conflicts,omitempty"`
}

// Progress is reported after each store path is written.
type Progress struct {
	StorePaths, TotalStorePaths int
	Bytes, TotalBytes           int64 // NAR sizes of the store paths done, and of the closure
}

type config struct {
	compression Compression
	level       int
	jobs        int
	cache       *Cache
	modTime     time.Time
	progress    func(Progress)
	// maxEntries and maxNameBytes are what Inspect reads (tests lower
	// them).
	maxEntries, maxNameBytes int
}

// Option sets how Write works.
type Option func(*config)

// WithCompression sets the compression and, for gzip, its level (1-9;
// 0 means DefaultLevel).
func WithCompression(c Compression, level int) Option {
	return func(o *config) { o.compression, o.level = c, level }
}

// WithJobs sets how many chunks are compressed at once (default: one per CPU).
func WithJobs(n int) Option { return func(o *config) { o.jobs = n } }

// WithCache reuses and stores compressed store paths in c.
func WithCache(c *Cache) Option { return func(o *config) { o.cache = c } }

// WithModTime sets the mtime of entries that are not from the store (the
// manifest, the symlink farm, rootfs/nix/store). Default: the Unix epoch.
func WithModTime(t time.Time) Option { return func(o *config) { o.modTime = t } }

// WithProgress calls f after each store path is written, from one goroutine.
func WithProgress(f func(Progress)) Option { return func(o *config) { o.progress = f } }

// WriteFile writes the image to path atomically: to a temporary file in the
// same directory, renamed into place only when complete. On any error,
// including a cancelled ctx, nothing is left at path or beside it.
func WriteFile(ctx context.Context, path string, img Image, opts ...Option) (res *Result, err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating output directory: %w", err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("creating output file: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if res, err = Write(ctx, tmp, img, opts...); err != nil {
		return nil, err
	}
	if err = tmp.Chmod(0o644); err != nil {
		return nil, err
	}
	if err = tmp.Close(); err != nil {
		return nil, fmt.Errorf("writing %s: %w", path, err)
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return nil, fmt.Errorf("renaming output into place: %w", err)
	}
	return res, nil
}

// Write writes the image as an ACI to w: one pass over the store, chunks
// compressed in parallel, the image ID hashed on the way.
func Write(ctx context.Context, w io.Writer, img Image, opts ...Option) (*Result, error) {
	cfg := config{compression: Gzip, level: DefaultLevel, jobs: runtime.GOMAXPROCS(0), modTime: time.Unix(0, 0), maxEntries: maxEntries, maxNameBytes: maxNameBytes}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.level == 0 {
		cfg.level = DefaultLevel
	}
	if cfg.compression == Gzip && (cfg.level < 1 || cfg.level > 9) {
		return nil, fmt.Errorf("gzip level %d is out of range: use 1 (fastest) to 9 (smallest)", cfg.level)
	}
	// More jobs than chunks in flight would only hold more compressors.
	cfg.jobs = max(1, min(cfg.jobs, maxInFlight))
	if cfg.compression != Gzip {
		// Only gzip members are cached: without compression there is
		// nothing to save, and readCached takes only members in Write's
		// gzip format, so an xz build would rewrite its entries every
		// time and use none.
		cfg.cache = nil
	}
	if cfg.cache != nil && cfg.cache.key == nil {
		// Without a key no cached member can be proven to be the one
		// this build would write, short of compressing the chunk again
		// (see Cache); untagged entries would serve no later build.
		cfg.cache = nil
	}
	if img.Manifest == nil || img.Closure == nil {
		return nil, errors.New("image needs a manifest and a closure")
	}
	mjson, err := manifest.Marshal(img.Manifest)
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	// Every store path must be there before anything is written: a thin
	// image with a missing path would run with an empty directory.
	for _, p := range img.Closure.Paths {
		if _, err := os.Lstat(p.Path); err != nil {
			return nil, &nixstore.InvalidPathError{Path: p.Path, Reason: "it is in the closure but missing from the store; rebuild it (nix-store --realise) or repair the store (nix-store --verify --repair)"}
		}
	}
	farm, conflicts, err := imageFarm(img)
	if err != nil {
		return nil, err
	}

	// Chunks in flight bound the memory a build takes: two per job keeps
	// every job busy, and the cap keeps many-core machines within budget.
	inFlight := min(2*cfg.jobs+4, maxInFlight)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	b := &builder{
		cfg:   cfg,
		ctx:   ctx,
		free:  make(chan []byte, inFlight),
		outs:  make(chan *bytes.Buffer, inFlight),
		work:  make(chan *chunk, inFlight),
		hashQ: make(chan *chunk, inFlight),
		sinkQ: make(chan sinkItem, inFlight+4),
		out:   &countWriter{w: w},
		total: Progress{TotalStorePaths: len(img.Closure.Paths), TotalBytes: img.Closure.NarSize()},
	}

	var wg sync.WaitGroup
	fail := func(err error) {
		if err != nil {
			cancel(err)
		}
	}
	h := sha512.New()
	var tarSize int64
	wg.Add(2 + cfg.jobs)
	go func() { defer wg.Done(); tarSize = b.hash(h) }()
	go func() { defer wg.Done(); fail(b.sink()) }()
	for i := 0; i < cfg.jobs; i++ {
		go func() { defer wg.Done(); fail(b.compressLoop()) }()
	}
	perr := b.produce(img, mjson, farm)
	close(b.work)
	close(b.hashQ)
	close(b.sinkQ)
	fail(perr)
	wg.Wait()
	for _, f := range b.frags {
		if f.w != nil {
			f.w.abort()
			f.w = nil
		}
		f.closeOld()
	}
	b.recycle()
	if err := context.Cause(ctx); err != nil {
		return nil, err
	}
	return &Result{
		ImageID:     "sha512-" + hex.EncodeToString(h.Sum(nil)),
		Size:        b.out.n,
		TarSize:     tarSize,
		StorePaths:  len(img.Closure.Paths),
		CachedPaths: int(b.cachedPaths.Load()),
		Conflicts:   conflicts,
	}, nil
}

// A chunk is at most ChunkSize bytes of the tar stream, compressed as one
// member. Its data returns to the pool once hashed and compressed.
type chunk struct {
	data   []byte
	frag   *fragment   // nil for chunks that are not cached (header, trailer, thin)
	index  int         // within frag
	cached *chunkIndex // compressed bytes may be taken from the cache
	hit    bool        // out holds the cached member, proven by its tag
	tag    []byte      // the member's tag, when the cache has a key
	ulen   int         // len(data), kept after data returns to the pool
	ucrc   uint32      // CRC-32 of data, for cacheable chunks
	out    *bytes.Buffer
	done   chan struct{}
	refs   atomic.Int32
}

type sinkItem struct {
	c       *chunk
	fragEnd *fragment
}

type builder struct {
	cfg         config
	ctx         context.Context
	free        chan []byte
	outs        chan *bytes.Buffer
	work        chan *chunk
	hashQ       chan *chunk
	sinkQ       chan sinkItem
	out         *countWriter
	total       Progress
	cachedPaths atomic.Int32
	// allocated counts the chunk buffers taken from the pool, at most
	// cap(free); only the producer touches it.
	allocated int
	// frags are the fragments opened, to close what a failed write left
	// open (old entries, half-written new ones).
	frags []*fragment
	// entries and nameBytes count the entries written and their names.
	entries, nameBytes int
}

// countingTar is a tar writer that counts the entries written and
// refuses one past what Inspect reads, so that no image is written that
// inspect, sign and verify --full would refuse.
type countingTar struct {
	*tar.Writer
	b *builder
}

func (tw countingTar) WriteHeader(hdr *tar.Header) error {
	b := tw.b
	b.entries++
	b.nameBytes += len(hdr.Name)
	switch {
	case b.entries > b.cfg.maxEntries:
		return fmt.Errorf("the image would hold more than %d entries (files, directories and links), more than inspect, sign and verify read: build it --layered (each layer is an image of its own) or --thin", b.cfg.maxEntries)
	case b.nameBytes > b.cfg.maxNameBytes:
		return fmt.Errorf("the image's entry names would take more than %d bytes, more than inspect, sign and verify read: build it --layered (each layer is an image of its own) or --thin", b.cfg.maxNameBytes)
	}
	return tw.Writer.WriteHeader(hdr)
}

// Buffers outlive a Write in these pools, so that many small images in a
// row (the layers of a layered build) cost no more than one large one.
var (
	chunkPool = sync.Pool{New: func() any { b := make([]byte, 0, ChunkSize); return &b }}
	outPool   = sync.Pool{New: func() any { return bytes.NewBuffer(make([]byte, 0, ChunkSize+ChunkSize/8)) }}
	gzipPools [10]sync.Pool // by level
)

func getChunkBuf() []byte  { return (*chunkPool.Get().(*[]byte))[:0] }
func putChunkBuf(b []byte) { b = b[:0]; chunkPool.Put(&b) }

// recycle returns the buffers of a finished Write to the pools.
func (b *builder) recycle() {
	for {
		select {
		case buf := <-b.free:
			putChunkBuf(buf)
		case buf := <-b.outs:
			outPool.Put(buf)
		default:
			return
		}
	}
}

// getOut returns an output buffer. Buffers live as long as the build, so
// that steady state allocates nothing and memory stays flat.
func (b *builder) getOut() *bytes.Buffer {
	select {
	case buf := <-b.outs:
		buf.Reset()
		return buf
	default:
		buf := outPool.Get().(*bytes.Buffer)
		buf.Reset()
		return buf
	}
}

func (b *builder) putOut(buf *bytes.Buffer) {
	select {
	case b.outs <- buf:
	default:
	}
}

func (b *builder) release(c *chunk) {
	if c.refs.Add(-1) == 0 {
		b.free <- c.data[:0]
	}
}

// hash feeds the uncompressed stream, in order, to h.
func (b *builder) hash(h io.Writer) int64 {
	var n int64
	for c := range b.hashQ {
		h.Write(c.data)
		n += int64(len(c.data))
		b.release(c)
	}
	return n
}

// compressLoop compresses chunks, or takes a chunk's cached member when
// its tag proves it is the member this compression would make (see
// Cache). Either way what reaches the image is the member a cold build
// writes: a cache entry altered in any way (member, index, lengths, CRCs,
// tags) can cost a compression, never other bytes.
func (b *builder) compressLoop() error {
	z := compressor{cfg: b.cfg}
	defer z.release()
	for c := range b.work {
		buf := b.getOut()
		var err error
		if c.cached != nil {
			c.tag, c.hit = c.frag.readCached(c.index, buf)
			if !c.hit {
				c.frag.dirty.Store(true)
				buf.Reset()
			}
		}
		if !c.hit {
			err = z.compress(buf, c.data)
			if err == nil && c.frag != nil && c.frag.key != nil {
				c.tag = c.frag.tag(c.index, c.ulen, c.ucrc, buf.Bytes())
			}
		}
		c.out = buf
		b.release(c)
		close(c.done)
		if err != nil {
			return fmt.Errorf("compressing: %w", err)
		}
	}
	return nil
}

// compressor compresses chunks into members, reusing its gzip state.
type compressor struct {
	cfg config
	gz  *gzip.Writer
}

// release returns the gzip state to its pool.
func (z *compressor) release() {
	if z.gz != nil {
		z.gz.Reset(io.Discard)
		gzipPools[z.cfg.level].Put(z.gz)
		z.gz = nil
	}
}

func (z *compressor) compress(buf *bytes.Buffer, data []byte) error {
	switch z.cfg.compression {
	case Gzip:
		if z.gz == nil {
			if w, ok := gzipPools[z.cfg.level].Get().(*gzip.Writer); ok {
				z.gz = w
				z.gz.Reset(buf)
			} else {
				var err error
				if z.gz, err = gzip.NewWriterLevel(buf, z.cfg.level); err != nil {
					return err
				}
			}
		} else {
			z.gz.Reset(buf)
		}
		start := buf.Len()
		z.gz.Header.Extra = memberExtra
		if _, err := z.gz.Write(data); err != nil {
			return err
		}
		if err := z.gz.Close(); err != nil {
			return err
		}
		patchMemberLength(buf.Bytes()[start:])
		return nil
	case Xz:
		xw, err := xz.NewWriter(buf)
		if err != nil {
			return err
		}
		if _, err := xw.Write(data); err != nil {
			return err
		}
		return xw.Close()
	}
	_, err := buf.Write(data)
	return err
}

// sink writes compressed chunks in order to the output and to the cache.
func (b *builder) sink() error {
	var done Progress = b.total
	done.StorePaths, done.Bytes = 0, 0
	var failed error
	for it := range b.sinkQ {
		if failed != nil {
			// Drain so the producer never blocks; release what we hold.
			if it.c != nil {
				if it.c.done != nil {
					<-it.c.done
				}
				b.releaseSink(it.c)
			}
			continue
		}
		if f := it.fragEnd; f != nil {
			f.end()
			if f.cacheHit {
				b.cachedPaths.Add(1)
			}
			done.StorePaths++
			done.Bytes += f.narSize
			if b.cfg.progress != nil {
				b.cfg.progress(done)
			}
			continue
		}
		if err := b.sinkChunk(it.c); err != nil {
			failed = err
			b.releaseSink(it.c)
			continue
		}
		b.releaseSink(it.c)
	}
	return failed
}

func (b *builder) releaseSink(c *chunk) {
	if c.out != nil {
		b.putOut(c.out)
		c.out = nil
	}
	if b.cfg.compression == None {
		b.release(c) // the sink held the data for these
	}
}

func (b *builder) sinkChunk(c *chunk) error {
	var payload []byte
	switch {
	case b.cfg.compression == None:
		payload = c.data
	default:
		<-c.done
		if c.out == nil {
			return errors.New("compression failed")
		}
		payload = c.out.Bytes()
	}
	if _, err := b.out.Write(payload); err != nil {
		return fmt.Errorf("writing archive: %w", err)
	}
	if c.frag != nil {
		b.record(c, payload, c.hit)
	}
	return nil
}

// produce walks the image in archive order and feeds chunks to the rest.
func (b *builder) produce(img Image, mjson []byte, farm []farmEntry) error {
	cw := &chunker{b: b}
	tw := countingTar{tar.NewWriter(cw), b}
	mt := b.cfg.modTime
	if err := tw.WriteHeader(&tar.Header{Name: "manifest", Mode: 0o644, Size: int64(len(mjson)), ModTime: mt, Typeflag: tar.TypeReg, Format: tar.FormatPAX}); err != nil {
		return err
	}
	if _, err := tw.Write(mjson); err != nil {
		return err
	}
	if err := writeDir(tw, "rootfs/", mt); err != nil {
		return err
	}
	i := 0
	for ; i < len(farm) && pathLess(farm[i].rel, "nix"); i++ {
		if err := writeFarmEntry(tw, farm[i], mt); err != nil {
			return err
		}
	}
	if err := writeDir(tw, "rootfs/nix/", mt); err != nil {
		return err
	}
	if err := writeDir(tw, "rootfs/nix/store/", mt); err != nil {
		return err
	}
	if img.Thin {
		for _, p := range img.Closure.Paths {
			if err := writeMountTarget(tw, p.Path); err != nil {
				return err
			}
		}
		if err := cw.flushSegment(tw.Writer, nil); err != nil {
			return err
		}
		for _, p := range img.Closure.Paths {
			b.sinkQ <- sinkItem{fragEnd: &fragment{narSize: p.NarSize}}
		}
	} else {
		if err := cw.flushSegment(tw.Writer, nil); err != nil {
			return err
		}
		copyBuf := make([]byte, 256<<10)
		for _, p := range img.Closure.Paths {
			f := b.openFragment(p)
			b.frags = append(b.frags, f)
			tw = countingTar{tar.NewWriter(cw), b}
			cw.frag = f
			err := writeTree(tw, p.Path, copyBuf)
			if err == nil {
				err = cw.flushSegment(tw.Writer, f)
			}
			if err != nil {
				f.closeOld()
				return err
			}
		}
	}
	tw = countingTar{tar.NewWriter(cw), b}
	for ; i < len(farm); i++ {
		if err := writeFarmEntry(tw, farm[i], mt); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil { // end-of-archive blocks
		return err
	}
	return cw.flushSegment(nil, nil)
}

// chunker cuts the tar stream into chunks and hands each to the hasher,
// the compressors and the sink.
type chunker struct {
	b    *builder
	buf  []byte
	frag *fragment
	n    int // chunks of the current fragment
}

func (cw *chunker) Write(p []byte) (int, error) {
	total := len(p)
	for len(p) > 0 {
		if cw.buf == nil {
			select {
			case cw.buf = <-cw.b.free:
			default:
				if cw.b.allocated < cap(cw.b.free) {
					cw.b.allocated++
					cw.buf = getChunkBuf()
					break
				}
				select {
				case cw.buf = <-cw.b.free:
				case <-cw.b.ctx.Done():
					return 0, context.Cause(cw.b.ctx)
				}
			}
		}
		k := copy(cw.buf[len(cw.buf):cap(cw.buf)], p)
		cw.buf = cw.buf[:len(cw.buf)+k]
		p = p[k:]
		if len(cw.buf) == cap(cw.buf) {
			if err := cw.emit(); err != nil {
				return total - len(p), err
			}
		}
	}
	return total, nil
}

func (cw *chunker) emit() error {
	b := cw.b
	c := &chunk{data: cw.buf, frag: cw.frag, index: cw.n, ulen: len(cw.buf)}
	cw.buf = nil
	cw.n++
	if f := c.frag; f != nil {
		if f.file != "" {
			c.ucrc = crc(c.data)
			c.cached = f.match(c.index, c.ulen, c.ucrc)
		}
	}
	c.refs.Store(2) // hasher, and compressor or sink
	if err := b.ctx.Err(); err != nil {
		return context.Cause(b.ctx)
	}
	b.hashQ <- c
	if b.cfg.compression != None {
		c.done = make(chan struct{})
		b.work <- c
	}
	b.sinkQ <- sinkItem{c: c}
	return nil
}

// flushSegment ends a tar segment (padding its last entry) and emits its
// last, possibly short, chunk, so that chunks never span two segments.
func (cw *chunker) flushSegment(tw *tar.Writer, f *fragment) error {
	if tw != nil {
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if len(cw.buf) > 0 {
		if err := cw.emit(); err != nil {
			return err
		}
	}
	if f != nil {
		f.chunks = cw.n
		cw.b.sinkQ <- sinkItem{fragEnd: f}
	}
	cw.frag, cw.n = nil, 0
	return nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func writeDir(tw countingTar, name string, mt time.Time) error {
	return tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mt, Format: tar.FormatPAX})
}

func writeFarmEntry(tw countingTar, e farmEntry, mt time.Time) error {
	if e.file {
		mode := e.mode
		if mode == 0 {
			mode = 0o644
		}
		if err := tw.WriteHeader(&tar.Header{Name: "rootfs/" + e.rel, Typeflag: tar.TypeReg, Mode: mode, Uid: e.uid, Gid: e.gid, Size: int64(len(e.data)), ModTime: mt, Format: tar.FormatPAX}); err != nil {
			return err
		}
		_, err := tw.Write(e.data)
		return err
	}
	if e.target == "" {
		mode := e.mode
		if mode == 0 {
			mode = 0o755
		}
		return tw.WriteHeader(&tar.Header{Name: "rootfs/" + e.rel + "/", Typeflag: tar.TypeDir, Mode: mode, Uid: e.uid, Gid: e.gid, ModTime: mt, Format: tar.FormatPAX})
	}
	return tw.WriteHeader(&tar.Header{Name: "rootfs/" + e.rel, Typeflag: tar.TypeSymlink, Linkname: e.target, Mode: 0o777, ModTime: mt, Format: tar.FormatPAX})
}

// writeMountTarget writes the empty entry a thin image's volume is mounted
// on: a directory for a directory, an empty file for anything else (rkt
// refuses to bind a file onto a directory). Symlinks count as what they
// point to, since the bind mount follows them.
func writeMountTarget(tw countingTar, p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return &nixstore.InvalidPathError{Path: p, Reason: err.Error()}
	}
	name := "rootfs" + p
	if fi.IsDir() {
		return tw.WriteHeader(&tar.Header{Name: name + "/", Typeflag: tar.TypeDir, Mode: 0o555, ModTime: time.Unix(1, 0), Format: tar.FormatPAX})
	}
	return tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o444, ModTime: time.Unix(1, 0), Format: tar.FormatPAX})
}

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
func writeTree(tw countingTar, p string, copyBuf []byte) error {
	ents, err := walkStorePath(p)
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

// walkStorePath lists p and everything below it in archive order.
func walkStorePath(p string) ([]storeEntry, error) {
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
	return out, walk(p, "rootfs"+p)
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

// crc is the checksum used to match chunks with cache entries.
func crc(b []byte) uint32 { return crc32.ChecksumIEEE(b) }
