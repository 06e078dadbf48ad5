package nixstore

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"slices"
	"strconv"

	"github.com/nix2aci/nix2aci/internal/safeio"
)

// Limits on a closure graph, whoever wrote it (an exportReferencesGraph
// file is input to a build; nix-store's output is bounded the same way).
// A real closure needs a small part of each: a NixOS system has a few
// thousand store paths, and an image of more than about 27,000 could not
// even list them as a thin image's mount points.
const (
	// MaxGraphSize is the most bytes read of one graph (a file, or what
	// one nix-store call prints). Reading streams: what is kept is the
	// graph, not the bytes.
	MaxGraphSize = 256 << 20
	// MaxGraphPaths is the most store paths in a graph (several files
	// read together count as one), and so the most references one path
	// can have: each names a distinct path of the closure.
	MaxGraphPaths = 1 << 17
	// MaxGraphReferences is the most references in a graph, over all its
	// paths.
	MaxGraphReferences = 1 << 21
	// maxStorePathLen is the longest store path Nix makes: the store
	// directory, a 32-character hash, "-", and a name of at most 211
	// characters.
	maxStorePathLen = len(StoreDir) + 1 + 32 + 1 + 211
	// maxLine bounds any line; a NAR hash line is at most ~140 bytes.
	maxLine = 1024
)

// GraphTooLargeError is a closure graph past one of the limits.
type GraphTooLargeError struct{ Msg string }

func (e *GraphTooLargeError) Error() string { return e.Msg }

// graphLimits are the limits a graphReader applies (tests lower them).
type graphLimits struct {
	size        int64
	paths, refs int
}

var defaultLimits = graphLimits{size: MaxGraphSize, paths: MaxGraphPaths, refs: MaxGraphReferences}

// graphReader parses graphs in Nix's validity registration format from
// one or more streams into one set of paths. It streams: a line is never
// kept, each distinct store path is held once however many paths refer to
// it, and the memory it takes is bounded by the limits whatever the input.
type graphReader struct {
	withHash bool // --dump-db records carry NAR hash and size
	limits   graphLimits
	intern   map[string]string // every store path met, held once
	byPath   map[string]int    // index in paths
	paths    []PathInfo
	refs     int      // references held, over all paths
	scratch  []string // the references of the record being read
}

func newGraphReader(withHash bool, limits graphLimits) *graphReader {
	return &graphReader{withHash: withHash, limits: limits, intern: map[string]string{}, byPath: map[string]int{}}
}

// tooLarge says which limit a graph passed, and what to do.
func tooLarge(format string, args ...any) error {
	return &GraphTooLargeError{Msg: fmt.Sprintf(format, args...) + ", more than any image holds: export the references graph of the image's own packages (exportReferencesGraph), or build fewer packages into one image"}
}

// storePath returns line as a store path, held once however often it is
// met.
func (g *graphReader) storePath(line []byte) (string, bool, error) {
	if s, ok := g.intern[string(line)]; ok {
		return s, true, nil
	}
	if len(line) > maxStorePathLen || !IsStorePath(string(line)) {
		return "", false, nil
	}
	if len(g.intern) >= g.limits.paths {
		return "", false, tooLarge("the closure graph names more than %d store paths", g.limits.paths)
	}
	s := string(line)
	g.intern[s] = s
	return s, true, nil
}

// read parses one stream, adding its paths. A path several streams list
// must have the same references in each.
func (g *graphReader) read(r io.Reader) error {
	lr := &io.LimitedReader{R: r, N: g.limits.size + 1}
	br := bufio.NewReaderSize(lr, 64<<10)
	lineNo := 0
	overSize := func() error {
		if lr.N <= 0 {
			return tooLarge("the closure graph is more than %d bytes", g.limits.size)
		}
		return nil
	}
	// next returns the next line without its newline; ok is false at the
	// end of the input. The slice is valid until the next call.
	next := func() (line []byte, ok bool, err error) {
		line, err = br.ReadSlice('\n')
		switch {
		case err == bufio.ErrBufferFull || len(line) > maxLine:
			if e := overSize(); e != nil {
				return nil, false, e
			}
			return nil, false, fmt.Errorf("line %d: longer than the %d bytes any line of a closure graph has", lineNo+1, maxLine)
		case err == io.EOF && len(line) == 0:
			return nil, false, overSize()
		case err != nil && err != io.EOF:
			return nil, false, err
		}
		if e := overSize(); e != nil {
			return nil, false, e
		}
		lineNo++
		return bytes.TrimSuffix(line, []byte("\n")), true, nil
	}
	want := func(what string) ([]byte, error) {
		line, ok, err := next()
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("line %d: unexpected end of input, want %s", lineNo+1, what)
		}
		return line, nil
	}
	listed := map[string]bool{}
	for {
		line, ok, err := next()
		if err != nil {
			return err
		}
		if !ok {
			return nil
		}
		if len(line) == 0 {
			continue
		}
		path, valid, err := g.storePath(line)
		if err != nil {
			return err
		}
		if !valid {
			return fmt.Errorf("line %d: %s is not a store path", lineNo, safeio.QuoteAlways(string(line)))
		}
		if listed[path] {
			return fmt.Errorf("line %d: %s appears twice", lineNo, path)
		}
		listed[path] = true
		p := PathInfo{Path: path}
		if g.withHash {
			h, err := want("NAR hash")
			if err != nil {
				return err
			}
			if len(h) > 256 {
				return fmt.Errorf("line %d: a NAR hash of %d bytes", lineNo, len(h))
			}
			p.NarHash = string(h)
			size, err := want("NAR size")
			if err != nil {
				return err
			}
			if p.NarSize, err = strconv.ParseInt(string(size), 10, 64); err != nil || p.NarSize < 0 {
				return fmt.Errorf("line %d: bad NAR size %s", lineNo, safeio.QuoteAlways(string(size)))
			}
		}
		drv, err := want("deriver")
		if err != nil {
			return err
		}
		if len(drv) > 0 {
			if len(drv) > maxStorePathLen || !IsStorePath(string(drv)) {
				return fmt.Errorf("line %d: deriver %s is not a store path", lineNo, safeio.QuoteAlways(string(drv)))
			}
			p.Deriver = string(drv)
		}
		count, err := want("reference count")
		if err != nil {
			return err
		}
		n, err := strconv.Atoi(string(count))
		if err != nil || n < 0 {
			return fmt.Errorf("line %d: bad reference count %s", lineNo, safeio.QuoteAlways(string(count)))
		}
		if n > g.limits.paths {
			return tooLarge("line %d: %s claims %d references", lineNo, path, n)
		}
		g.scratch = g.scratch[:0]
		for i := 0; i < n; i++ {
			line, err := want("reference")
			if err != nil {
				return err
			}
			ref, valid, err := g.storePath(line)
			if err != nil {
				return err
			}
			if !valid {
				return fmt.Errorf("line %d: reference %s is not a store path", lineNo, safeio.QuoteAlways(string(line)))
			}
			g.scratch = append(g.scratch, ref)
		}
		slices.Sort(g.scratch)
		for i := 1; i < len(g.scratch); i++ {
			if g.scratch[i] == g.scratch[i-1] {
				return fmt.Errorf("line %d: %s lists the reference %s twice", lineNo, path, g.scratch[i])
			}
		}
		if i, ok := g.byPath[path]; ok {
			if !slices.Equal(g.paths[i].References, g.scratch) {
				return fmt.Errorf("line %d: %s has other references than another closure graph gives it", lineNo, path)
			}
			continue
		}
		if g.refs += n; g.refs > g.limits.refs {
			return tooLarge("the closure graph holds more than %d references", g.limits.refs)
		}
		p.References = slices.Clone(g.scratch)
		if p.References == nil {
			p.References = []string{}
		}
		g.byPath[path] = len(g.paths)
		g.paths = append(g.paths, p)
	}
}

// graph returns the paths read, sorted.
func (g *graphReader) graph() *Graph {
	slices.SortFunc(g.paths, func(a, b PathInfo) int {
		switch {
		case a.Path < b.Path:
			return -1
		case a.Path > b.Path:
			return 1
		}
		return 0
	})
	return &Graph{Paths: g.paths}
}

// ReadGraph parses a closure in the format Nix's exportReferencesGraph
// writes: for each path, lines "path", "deriver" (may be empty), "count",
// then count reference lines. The input is bounded (MaxGraphSize,
// MaxGraphPaths, MaxGraphReferences; a *GraphTooLargeError past them) and
// streamed: memory grows with the graph's distinct paths and references,
// never with the bytes read.
func ReadGraph(r io.Reader) (*Graph, error) {
	return readGraph(r, defaultLimits)
}

func readGraph(r io.Reader, limits graphLimits) (*Graph, error) {
	g := newGraphReader(false, limits)
	if err := g.read(r); err != nil {
		return nil, err
	}
	return g.graph(), nil
}

// ReadGraphFiles reads the exportReferencesGraph files and merges them
// into one graph (a path two files list must have the same references in
// both), within the limits of ReadGraph over all of them. Each file is
// opened without blocking and must be a regular file of at most
// MaxGraphSize bytes.
func ReadGraphFiles(files []string) (*Graph, error) {
	return readGraphFiles(files, defaultLimits)
}

func readGraphFiles(files []string, limits graphLimits) (*Graph, error) {
	g := newGraphReader(false, limits)
	for _, name := range files {
		if err := readGraphFile(g, name); err != nil {
			return nil, err
		}
	}
	return g.graph(), nil
}

func readGraphFile(g *graphReader, name string) error {
	f, err := safeio.OpenRegular(name)
	if err != nil {
		return fmt.Errorf("reading the closure graph: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("reading the closure graph: %w", err)
	}
	if fi.Size() > g.limits.size {
		return fmt.Errorf("closure graph %s: %w", safeio.Quote(name), tooLarge("it is %d bytes, more than the %d a closure graph may be", fi.Size(), g.limits.size))
	}
	if err := g.read(f); err != nil {
		return fmt.Errorf("closure graph %s: %w", safeio.Quote(name), err)
	}
	return nil
}
