package nixstore

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"github.com/nix2aci/nix2aci/internal/safeio"
)

// StoreDir is the Nix store every ACI refers to.
const StoreDir = "/nix/store"

// PathInfo is one store path of a closure.
type PathInfo struct {
	Path       string   `json:"path"`
	NarHash    string   `json:"narHash,omitempty"` // hex SHA-256 of the NAR; empty when read from exportReferencesGraph
	NarSize    int64    `json:"narSize,omitempty"`
	Deriver    string   `json:"deriver,omitempty"`
	References []string `json:"references"` // sorted; may include the path itself
}

// Base returns the store path's name within the store: "<hash>-<name>".
func (p PathInfo) Base() string { return filepath.Base(p.Path) }

// Graph is a closure: its roots and every path they need, sorted by path.
type Graph struct {
	Roots []string   `json:"roots"`
	Paths []PathInfo `json:"paths"`
}

// StorePaths returns the closure's paths in order.
func (g *Graph) StorePaths() []string {
	out := make([]string, len(g.Paths))
	for i, p := range g.Paths {
		out[i] = p.Path
	}
	return out
}

// NarSize sums the NAR sizes of the closure, a close estimate of its bytes.
func (g *Graph) NarSize() int64 {
	var n int64
	for _, p := range g.Paths {
		n += p.NarSize
	}
	return n
}

// ErrNixNotInstalled says the nix-store command could not be found.
var ErrNixNotInstalled = errors.New("nix-store not found in PATH: install Nix (Debian: apt-get install nix-bin; elsewhere see https://nixos.org/download)")

// InvalidPathError reports a path that is not a valid path in the Nix store.
type InvalidPathError struct {
	Path   string
	Reason string
}

func (e *InvalidPathError) Error() string {
	return fmt.Sprintf("%s is not a valid Nix store path: %s", e.Path, e.Reason)
}

type options struct {
	nixStore string
}

// Option changes how closures are queried.
type Option func(*options)

// WithNixStore names the nix-store binary to run (default: nix-store from PATH).
func WithNixStore(bin string) Option { return func(o *options) { o.nixStore = bin } }

// Closure resolves the closure of roots with a fixed number of nix-store
// calls. A root may be a store path, a path below one, or a symlink to one
// (a nix-build "result" link).
func Closure(ctx context.Context, roots []string, opts ...Option) (*Graph, error) {
	o := options{nixStore: "nix-store"}
	for _, opt := range opts {
		opt(&o)
	}
	if len(roots) == 0 {
		return nil, errors.New("no store paths given")
	}
	if _, err := exec.LookPath(o.nixStore); err != nil {
		return nil, ErrNixNotInstalled
	}
	var clean []string
	for _, r := range roots {
		p, err := ToStorePath(r)
		if err != nil {
			return nil, err
		}
		clean = append(clean, p)
	}
	// Both calls stream what nix-store prints into a parser, within the
	// limits on a graph (MaxGraphSize, MaxGraphPaths, ...).
	var paths []string
	err := stream(ctx, o.nixStore, func(r io.Reader) error {
		var err error
		paths, err = readPathList(r, defaultLimits)
		return err
	}, append([]string{"--query", "--requisites"}, clean...)...)
	if err != nil {
		return nil, invalidPathErr(clean, err)
	}
	sort.Strings(paths)
	g := newGraphReader(true, defaultLimits)
	for _, batch := range argBatches(paths, dumpBatch) {
		if err := stream(ctx, o.nixStore, g.read, append([]string{"--dump-db"}, batch...)...); err != nil {
			var ce *CommandError
			if errors.As(err, &ce) {
				return nil, fmt.Errorf("reading registration of %d store paths: %w", len(paths), err)
			}
			return nil, fmt.Errorf("parsing nix-store --dump-db output: %w", err)
		}
	}
	infos := g.graph().Paths
	if len(infos) != len(paths) {
		return nil, fmt.Errorf("nix-store --dump-db returned %d records for %d paths", len(infos), len(paths))
	}
	return &Graph{Roots: clean, Paths: infos}, nil
}

// dumpBatch bounds the bytes of the store paths one nix-store --dump-db
// is given: the kernel refuses a command line and environment over
// ARG_MAX (2 MiB by default), which a closure of 30,000 paths passes.
var dumpBatch = 256 << 10

// argBatches splits args into runs of at most max bytes (with a byte
// each for its end), each holding one argument at least.
func argBatches(args []string, max int) [][]string {
	var out [][]string
	for start := 0; start < len(args); {
		end, n := start+1, len(args[start])+1
		for end < len(args) && n+len(args[end])+1 <= max {
			n += len(args[end]) + 1
			end++
		}
		out = append(out, args[start:end])
		start = end
	}
	return out
}

// invalidPathErr turns nix-store's complaint about an invalid path into an
// InvalidPathError naming that path.
func invalidPathErr(paths []string, err error) error {
	msg := err.Error()
	for _, p := range paths {
		if strings.Contains(msg, "'"+p+"' is not valid") || strings.Contains(msg, "path '"+p+"'") {
			return &InvalidPathError{Path: p, Reason: "it is not registered in the store (not built, or garbage-collected); build it with nix-build or nix-store --realise"}
		}
	}
	return fmt.Errorf("querying closure of %s: %w", strings.Join(paths, " "), err)
}

// ToStorePath maps p (a store path, a path inside one, or a symlink such as
// a nix-build "result" link) to the top-level store path it belongs to.
func ToStorePath(p string) (string, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	if !strings.HasPrefix(abs, StoreDir+"/") {
		resolved, err := filepath.EvalSymlinks(abs)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return "", &InvalidPathError{Path: p, Reason: "no such file"}
			}
			return "", &InvalidPathError{Path: p, Reason: err.Error()}
		}
		abs = resolved
	}
	rest, ok := strings.CutPrefix(abs, StoreDir+"/")
	if !ok || rest == "" {
		return "", &InvalidPathError{Path: p, Reason: "it is not inside " + StoreDir}
	}
	top := StoreDir + "/" + strings.SplitN(rest, "/", 2)[0]
	if _, err := os.Lstat(top); err != nil {
		return "", &InvalidPathError{Path: top, Reason: "it does not exist (not built, or garbage-collected); build it with nix-build or nix-store --realise"}
	}
	return top, nil
}

// IsStorePath reports whether p has the form /nix/store/<hash>-<name>.
func IsStorePath(p string) bool {
	base, ok := strings.CutPrefix(p, StoreDir+"/")
	if !ok || strings.Contains(base, "/") || len(base) < 34 || base[32] != '-' {
		return false
	}
	for _, c := range base[:32] {
		if !strings.ContainsRune(nixBase32, c) {
			return false
		}
	}
	return true
}

const nixBase32 = "0123456789abcdfghijklmnpqrsvwxyz"

// HashPart returns the 32-character hash of a store path.
func HashPart(p string) string { return strings.TrimPrefix(p, StoreDir+"/")[:32] }

// NamePart returns the name of a store path, after its hash.
func NamePart(p string) string { return strings.TrimPrefix(p, StoreDir+"/")[33:] }

// stream runs a command and hands its stdout to parse as it comes, so
// that nothing it prints is held but what parse keeps. A failed command
// is a *CommandError carrying the tail of stderr; when parse stops early
// (a limit, a malformed line), its error, and the command is not waited
// on to finish printing.
func stream(ctx context.Context, bin string, parse func(io.Reader) error, args ...string) error {
	cmd := Command(ctx, bin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return &CommandError{Cmd: bin, Err: err}
	}
	r := &eofReader{r: out}
	perr := parse(r)
	if perr != nil && !r.eof {
		out.Close() // nix-store stops at its next write
		cmd.Wait()
		return perr
	}
	if err := cmd.Wait(); err != nil {
		return &CommandError{Cmd: bin, Err: err, Stderr: ErrorMessage(stderr.String())}
	}
	return perr
}

// eofReader records whether its reader reached its end.
type eofReader struct {
	r   io.Reader
	eof bool
}

func (e *eofReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err == io.EOF {
		e.eof = true
	}
	return n, err
}

// readPathList reads store paths, one a line (nix-store --query), within
// the limits on a graph.
func readPathList(r io.Reader, limits graphLimits) ([]string, error) {
	g := newGraphReader(false, limits)
	br := bufio.NewReaderSize(&io.LimitedReader{R: r, N: limits.size + 1}, 64<<10)
	var paths []string
	for read := int64(0); ; {
		line, err := br.ReadSlice('\n')
		read += int64(len(line))
		if read > limits.size {
			return nil, tooLarge("nix-store printed more than %d bytes of store paths", limits.size)
		}
		if err == bufio.ErrBufferFull {
			return nil, fmt.Errorf("nix-store printed a line of more than %d bytes", br.Size())
		}
		if err != nil && err != io.EOF {
			return nil, err
		}
		if l := bytes.TrimSpace(line); len(l) > 0 {
			p, valid, perr := g.storePath(l)
			if perr != nil {
				return nil, perr
			}
			if !valid {
				return nil, fmt.Errorf("nix-store printed %s, which is not a store path", safeio.QuoteAlways(string(l)))
			}
			paths = append(paths, p)
		}
		if err == io.EOF {
			return paths, nil
		}
	}
}

// CommandError is a failed Nix command with the tail of what it printed.
type CommandError struct {
	Cmd    string
	Err    error
	Stderr string
}

func (e *CommandError) Error() string {
	if e.Stderr == "" {
		return fmt.Sprintf("%s: %v", e.Cmd, e.Err)
	}
	return fmt.Sprintf("%s: %v: %s", e.Cmd, e.Err, e.Stderr)
}

func (e *CommandError) Unwrap() error { return e.Err }

// Tail returns the last n non-empty lines of s, joined by "; ".
func Tail(s string, n int) string {
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "; ")
}
