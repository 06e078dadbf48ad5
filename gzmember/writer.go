package gzmember

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"

	"github.com/klauspost/compress/gzip"
	"github.com/ulikunitz/xz"
)

// Compression is how the members are compressed.
type Compression string

// The compressions a Writer makes: gzip members with the length field,
// one xz stream per chunk, or the chunks as they are.
const (
	Gzip Compression = "gzip"
	Xz   Compression = "xz"
	None Compression = "none"
)

// DefaultLevel is the gzip level used unless a Config says otherwise.
// klauspost/compress's level 6 gives archives within 5% of the size of
// pigz's default level 6 in well under half its time; level 7 comes
// within 3% but costs about 40% more time.
const DefaultLevel = 6

// ChunkSize is the most uncompressed bytes in one compressed member.
const ChunkSize = 1 << 20

// MaxMember bounds a member's length: a Writer's members hold at most
// ChunkSize bytes, which deflate never grows by more than a few bytes per
// 64 KiB block.
const MaxMember = ChunkSize + ChunkSize/8

// maxInFlight caps the chunks being read, compressed or written at once.
const maxInFlight = 12

// Config says how a Writer compresses.
type Config struct {
	Compression Compression
	// Level is the gzip level, 1 to 9 (0: DefaultLevel).
	Level int
	// Jobs is how many chunks are compressed at once (0: one per CPU).
	Jobs int
	// Tap, if set, receives the uncompressed stream, in order, from a
	// goroutine of its own.
	Tap io.Writer
}

// MemberFormat names everything the members a Writer makes of given bytes
// depend on: the compressor's version, the compression, its level and
// the chunk size (not Jobs: the output is the same for any). A cache of
// members keys them by it.
func (c Config) MemberFormat() string {
	return fmt.Sprintf("%s\x00%s\x00%d\x00%d", compressorVersion(), c.Compression, c.Level, ChunkSize)
}

// compressorVersion names the gzip compressor this binary was built with:
// a member cached by one version is not taken by another, whose output for
// the same chunk and level may differ.
var compressorVersion = sync.OnceValue(func() string {
	const mod = "github.com/klauspost/compress"
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == mod {
				if d.Replace != nil {
					d = d.Replace
				}
				return mod + "@" + d.Version + " " + d.Sum
			}
		}
	}
	return mod + "@unknown"
})

// Chunk says which chunk of a segment a Store is asked about.
type Chunk struct {
	Index int    // within its segment
	Len   int    // uncompressed bytes
	CRC   uint32 // CRC-32 of the uncompressed bytes
}

// A Store keeps the members of one segment of the stream between writers
// (a cache entry, say), and may offer them back. The Writer calls Lookup
// from the goroutine that writes to it, Take and Tag from its compressors
// (concurrently, for several chunks), and Put and End from the goroutine
// that writes the output, in the order of the stream. The tag is the
// Store's own: the Writer only carries it from Take or Tag to Put.
type Store interface {
	// Lookup reports whether Take should be asked for chunk c's member.
	Lookup(c Chunk) bool
	// Take reads a stored member for c into out and reports whether it
	// is proven to be the member the Writer would make of c; ok false
	// leaves the Writer to compress c. It returns the member's tag.
	Take(c Chunk, out *bytes.Buffer) (tag []byte, ok bool)
	// Tag returns the tag of a member the Writer made of c.
	Tag(c Chunk, member []byte) []byte
	// Put is told of each member written for the segment: taken says
	// whether Take gave it.
	Put(c Chunk, member, tag []byte, taken bool)
	// End is told the segment's number of chunks after its last member.
	End(chunks int)
}

// Totals says what a Writer wrote.
type Totals struct {
	In, Out int64 // uncompressed bytes in, compressed bytes out
}

// A Writer compresses the stream written to it as a sequence of
// independent members of at most ChunkSize bytes each, compressed in
// parallel and written in order. The stream is cut into segments (Cut,
// Begin);
// no chunk spans two, so a segment's members depend only on its own
// bytes. Writes are not safe for concurrent use.
type Writer struct {
	cfg   Config
	ctx   context.Context
	stop  context.CancelCauseFunc
	free  chan []byte
	outs  chan *bytes.Buffer
	work  chan *chunk
	hashQ chan *chunk
	sinkQ chan sinkItem
	out   countWriter
	in    int64
	wg    sync.WaitGroup
	// allocated counts the chunk buffers taken from the pool, at most
	// cap(free); only the producer touches it.
	allocated int
	// buf is the chunk being filled; store and n say whose chunks these
	// are: the current segment's Store and how many it has so far.
	buf    []byte
	store  Store
	n      int
	closed bool
}

// A chunk is at most ChunkSize bytes of the stream, compressed as one
// member. Its data returns to the pool once hashed and compressed.
type chunk struct {
	data   []byte
	store  Store // nil for chunks that are not stored
	id     Chunk
	cached bool          // the store may hold the member
	hit    bool          // out holds the stored member, proven by the store
	tag    []byte        // the member's tag, from the store
	out    *bytes.Buffer // the member
	done   chan struct{}
	refs   atomic.Int32
}

// sinkItem is a chunk to write, an end of a segment or a call to make.
type sinkItem struct {
	c      *chunk
	end    Store
	chunks int
	then   func()
}

// NewWriter starts a Writer that writes to w. Close or Abort it.
func NewWriter(ctx context.Context, w io.Writer, cfg Config) (*Writer, error) {
	if cfg.Level == 0 {
		cfg.Level = DefaultLevel
	}
	if cfg.Compression == Gzip && (cfg.Level < 1 || cfg.Level > 9) {
		return nil, fmt.Errorf("gzip level %d is out of range: use 1 (fastest) to 9 (smallest)", cfg.Level)
	}
	if cfg.Jobs == 0 {
		cfg.Jobs = runtime.GOMAXPROCS(0)
	}
	// More jobs than chunks in flight would only hold more compressors.
	cfg.Jobs = max(1, min(cfg.Jobs, maxInFlight))
	// Chunks in flight bound the memory a build takes: two per job keeps
	// every job busy, and the cap keeps many-core machines within budget.
	inFlight := min(2*cfg.Jobs+4, maxInFlight)
	ctx, stop := context.WithCancelCause(ctx)
	z := &Writer{
		cfg:   cfg,
		ctx:   ctx,
		stop:  stop,
		free:  make(chan []byte, inFlight),
		outs:  make(chan *bytes.Buffer, inFlight),
		work:  make(chan *chunk, inFlight),
		hashQ: make(chan *chunk, inFlight),
		sinkQ: make(chan sinkItem, inFlight+4),
		out:   countWriter{w: w},
	}
	z.wg.Add(2 + cfg.Jobs)
	go func() { defer z.wg.Done(); z.in = z.hash() }()
	go func() { defer z.wg.Done(); z.fail(z.sink()) }()
	for i := 0; i < cfg.Jobs; i++ {
		go func() { defer z.wg.Done(); z.fail(z.compressLoop()) }()
	}
	return z, nil
}

func (z *Writer) fail(err error) {
	if err != nil {
		z.stop(err)
	}
}

// Write adds p to the stream.
func (z *Writer) Write(p []byte) (int, error) {
	total := len(p)
	for len(p) > 0 {
		if z.buf == nil {
			select {
			case z.buf = <-z.free:
			default:
				if z.allocated < cap(z.free) {
					z.allocated++
					z.buf = getChunkBuf()
					break
				}
				select {
				case z.buf = <-z.free:
				case <-z.ctx.Done():
					return 0, context.Cause(z.ctx)
				}
			}
		}
		k := copy(z.buf[len(z.buf):cap(z.buf)], p)
		z.buf = z.buf[:len(z.buf)+k]
		p = p[k:]
		if len(z.buf) == cap(z.buf) {
			if err := z.emit(); err != nil {
				return total - len(p), err
			}
		}
	}
	return total, nil
}

// Cut ends the current segment: its last, possibly short, chunk becomes a
// member of its own, and its Store (if any) is told its end. What is
// written next is a new segment, with no Store.
func (z *Writer) Cut() error {
	if len(z.buf) > 0 {
		if err := z.emit(); err != nil {
			return err
		}
	}
	if z.store != nil {
		z.sinkQ <- sinkItem{end: z.store, chunks: z.n}
	}
	z.store, z.n = nil, 0
	return nil
}

// Begin ends the current segment (Cut) and starts one whose members go
// to s.
func (z *Writer) Begin(s Store) error {
	if err := z.Cut(); err != nil {
		return err
	}
	z.store = s
	return nil
}

// Then has f called once everything written before it is in the output,
// from the goroutine that writes the output (so never two at once).
func (z *Writer) Then(f func()) {
	z.sinkQ <- sinkItem{then: f}
}

// Close ends the stream (Cut) and waits until every member is written; it
// returns the first error of the output or the compressors, or the
// context's cause if it was cancelled.
func (z *Writer) Close() (Totals, error) {
	err := z.Cut()
	return z.finish(err)
}

// Abort stops the Writer after the caller failed with err, waits for its
// goroutines, and returns err (or the failure that came first).
func (z *Writer) Abort(err error) error {
	_, err = z.finish(err)
	return err
}

func (z *Writer) finish(err error) (Totals, error) {
	if z.closed {
		return Totals{}, errors.New("gzmember: writer closed twice")
	}
	z.closed = true
	close(z.work)
	close(z.hashQ)
	close(z.sinkQ)
	z.fail(err)
	z.wg.Wait()
	if z.buf != nil {
		putChunkBuf(z.buf)
		z.buf = nil
	}
	z.recycle()
	defer z.stop(nil)
	if err := context.Cause(z.ctx); err != nil {
		return Totals{}, err
	}
	return Totals{In: z.in, Out: z.out.n}, nil
}

func (z *Writer) emit() error {
	c := &chunk{data: z.buf, store: z.store, id: Chunk{Index: z.n, Len: len(z.buf)}}
	z.buf = nil
	z.n++
	if c.store != nil {
		c.id.CRC = crc32.ChecksumIEEE(c.data)
		c.cached = c.store.Lookup(c.id)
	}
	c.refs.Store(2) // hasher, and compressor or sink
	if err := z.ctx.Err(); err != nil {
		return context.Cause(z.ctx)
	}
	z.hashQ <- c
	if z.cfg.Compression != None {
		c.done = make(chan struct{})
		z.work <- c
	}
	z.sinkQ <- sinkItem{c: c}
	return nil
}

// Buffers outlive a Writer in these pools, so that many small streams in
// a row (the layers of a layered build) cost no more than one large one.
var (
	chunkPool = sync.Pool{New: func() any { b := make([]byte, 0, ChunkSize); return &b }}
	outPool   = sync.Pool{New: func() any { return bytes.NewBuffer(make([]byte, 0, ChunkSize+ChunkSize/8)) }}
	gzipPools [10]sync.Pool // by level
)

func getChunkBuf() []byte  { return (*chunkPool.Get().(*[]byte))[:0] }
func putChunkBuf(b []byte) { b = b[:0]; chunkPool.Put(&b) }

// recycle returns the buffers of a finished Writer to the pools.
func (z *Writer) recycle() {
	for {
		select {
		case buf := <-z.free:
			putChunkBuf(buf)
		case buf := <-z.outs:
			outPool.Put(buf)
		default:
			return
		}
	}
}

// getOut returns an output buffer. Buffers live as long as the Writer, so
// that steady state allocates nothing and memory stays flat.
func (z *Writer) getOut() *bytes.Buffer {
	select {
	case buf := <-z.outs:
		buf.Reset()
		return buf
	default:
		buf := outPool.Get().(*bytes.Buffer)
		buf.Reset()
		return buf
	}
}

func (z *Writer) putOut(buf *bytes.Buffer) {
	select {
	case z.outs <- buf:
	default:
	}
}

func (z *Writer) release(c *chunk) {
	if c.refs.Add(-1) == 0 {
		z.free <- c.data[:0]
	}
}

// hash feeds the uncompressed stream, in order, to the tap.
func (z *Writer) hash() int64 {
	var n int64
	for c := range z.hashQ {
		if z.cfg.Tap != nil {
			z.cfg.Tap.Write(c.data)
		}
		n += int64(len(c.data))
		z.release(c)
	}
	return n
}

// compressLoop compresses chunks, or takes a chunk's stored member when
// its Store proves it is the member this compression would make. Either
// way what reaches the output is the member a Writer without a Store
// writes, as long as the Store's proof holds.
func (z *Writer) compressLoop() error {
	cz := compressor{cfg: z.cfg}
	defer cz.release()
	for c := range z.work {
		buf := z.getOut()
		var err error
		if c.cached {
			if c.tag, c.hit = c.store.Take(c.id, buf); !c.hit {
				buf.Reset()
			}
		}
		if !c.hit {
			err = cz.compress(buf, c.data)
			if err == nil && c.store != nil {
				c.tag = c.store.Tag(c.id, buf.Bytes())
			}
		}
		c.out = buf
		z.release(c)
		close(c.done)
		if err != nil {
			return fmt.Errorf("compressing: %w", err)
		}
	}
	return nil
}

// compressor compresses chunks into members, reusing its gzip state.
type compressor struct {
	cfg Config
	gz  *gzip.Writer
}

// release returns the gzip state to its pool.
func (cz *compressor) release() {
	if cz.gz != nil {
		cz.gz.Reset(io.Discard)
		gzipPools[cz.cfg.Level].Put(cz.gz)
		cz.gz = nil
	}
}

func (cz *compressor) compress(buf *bytes.Buffer, data []byte) error {
	switch cz.cfg.Compression {
	case Gzip:
		if cz.gz == nil {
			if w, ok := gzipPools[cz.cfg.Level].Get().(*gzip.Writer); ok {
				cz.gz = w
				cz.gz.Reset(buf)
			} else {
				var err error
				if cz.gz, err = gzip.NewWriterLevel(buf, cz.cfg.Level); err != nil {
					return err
				}
			}
		} else {
			cz.gz.Reset(buf)
		}
		start := buf.Len()
		cz.gz.Header.Extra = memberExtra
		if _, err := cz.gz.Write(data); err != nil {
			return err
		}
		if err := cz.gz.Close(); err != nil {
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

// sink writes compressed chunks in order to the output and to their
// Stores, and makes the calls queued by Then.
func (z *Writer) sink() error {
	var failed error
	for it := range z.sinkQ {
		if failed != nil {
			// Drain so the producer never blocks; release what we hold.
			if it.c != nil {
				if it.c.done != nil {
					<-it.c.done
				}
				z.releaseSink(it.c)
			}
			continue
		}
		switch {
		case it.end != nil:
			it.end.End(it.chunks)
			continue
		case it.then != nil:
			it.then()
			continue
		}
		if err := z.sinkChunk(it.c); err != nil {
			failed = err
			z.releaseSink(it.c)
			continue
		}
		z.releaseSink(it.c)
	}
	return failed
}

func (z *Writer) releaseSink(c *chunk) {
	if c.out != nil {
		z.putOut(c.out)
		c.out = nil
	}
	if z.cfg.Compression == None {
		z.release(c) // the sink held the data for these
	}
}

func (z *Writer) sinkChunk(c *chunk) error {
	var payload []byte
	switch {
	case z.cfg.Compression == None:
		payload = c.data
	default:
		<-c.done
		if c.out == nil {
			return errors.New("compression failed")
		}
		payload = c.out.Bytes()
	}
	if _, err := z.out.Write(payload); err != nil {
		return fmt.Errorf("writing archive: %w", err)
	}
	if c.store != nil {
		c.store.Put(c.id, payload, c.tag, c.hit)
	}
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
