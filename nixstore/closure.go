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
	"strconv"
	"strings"
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
	out, err := run(ctx, o.nixStore, append([]string{"--query", "--requisites"}, clean...)...)
	if err != nil {
		return nil, invalidPathErr(clean, err)
	}
	paths := strings.Fields(string(out))
	sort.Strings(paths)
	dump, err := run(ctx, o.nixStore, append([]string{"--dump-db"}, paths...)...)
	if err != nil {
		return nil, fmt.Errorf("reading registration of %d store paths: %w", len(paths), err)
	}
	infos, err := parseRegistration(bytes.NewReader(dump), true)
	if err != nil {
		return nil, fmt.Errorf("parsing nix-store --dump-db output: %w", err)
	}
	if len(infos) != len(paths) {
		return nil, fmt.Errorf("nix-store --dump-db returned %d records for %d paths", len(infos), len(paths))
	}
	return &Graph{Roots: clean, Paths: infos}, nil
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

// ReadGraph parses a closure in the format Nix's exportReferencesGraph
// writes: for each path, lines "path", "deriver" (may be empty), "count",
// then count reference lines.
func ReadGraph(r io.Reader) (*Graph, error) {
	infos, err := parseRegistration(r, false)
	if err != nil {
		return nil, err
	}
	return &Graph{Paths: infos}, nil
}

// parseRegistration parses Nix's validity registration format; withHash
// selects the --dump-db variant whose records carry NAR hash and size.
func parseRegistration(r io.Reader, withHash bool) ([]PathInfo, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	line := 0
	next := func(what string) (string, error) {
		if !sc.Scan() {
			if err := sc.Err(); err != nil {
				return "", err
			}
			return "", fmt.Errorf("line %d: unexpected end of input, want %s", line+1, what)
		}
		line++
		return sc.Text(), nil
	}
	seen := map[string]bool{}
	var out []PathInfo
	for sc.Scan() {
		line++
		p := PathInfo{Path: sc.Text()}
		if p.Path == "" {
			continue
		}
		if !IsStorePath(p.Path) {
			return nil, fmt.Errorf("line %d: %q is not a store path", line, p.Path)
		}
		if seen[p.Path] {
			return nil, fmt.Errorf("line %d: %s appears twice", line, p.Path)
		}
		seen[p.Path] = true
		var err error
		if withHash {
			if p.NarHash, err = next("NAR hash"); err != nil {
				return nil, err
			}
			size, err := next("NAR size")
			if err != nil {
				return nil, err
			}
			if p.NarSize, err = strconv.ParseInt(size, 10, 64); err != nil || p.NarSize < 0 {
				return nil, fmt.Errorf("line %d: bad NAR size %q", line, size)
			}
		}
		if p.Deriver, err = next("deriver"); err != nil {
			return nil, err
		}
		count, err := next("reference count")
		if err != nil {
			return nil, err
		}
		n, err := strconv.Atoi(count)
		if err != nil || n < 0 || n > 1<<20 {
			return nil, fmt.Errorf("line %d: bad reference count %q", line, count)
		}
		p.References = make([]string, 0, n)
		for i := 0; i < n; i++ {
			ref, err := next("reference")
			if err != nil {
				return nil, err
			}
			if !IsStorePath(ref) {
				return nil, fmt.Errorf("line %d: reference %q is not a store path", line, ref)
			}
			p.References = append(p.References, ref)
		}
		sort.Strings(p.References)
		out = append(out, p)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
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

// run runs a command, returning stdout; on failure the error carries the
// tail of stderr.
func run(ctx context.Context, bin string, args ...string) ([]byte, error) {
	cmd := Command(ctx, bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return nil, &CommandError{Cmd: bin, Err: err, Stderr: ErrorMessage(stderr.String())}
	}
	return stdout.Bytes(), nil
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
