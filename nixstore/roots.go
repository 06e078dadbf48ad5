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
	"strings"

	"github.com/nix2aci/nix2aci/internal/safeio"
)

// maxRootsOutput bounds what AddRoots reads of nix-store's list of the
// roots it made: a line of at most PATH_MAX bytes for each root.
const maxRootsOutput = 8 << 20

// AddRoots registers indirect GC roots on paths, store paths the store
// holds, so that a garbage collection keeps them and their closures: the
// symlinks root, root-2, root-3 and so on, one for each path, in order
// (nix-store's names; a path given twice gets one root). It returns the
// roots nix-store reports it made, named as root is named (relative when
// root is).
func AddRoots(ctx context.Context, root string, paths []string) ([]string, error) {
	var unique []string
	seen := map[string]bool{}
	for _, p := range paths {
		if !IsStorePath(p) {
			return nil, fmt.Errorf("a GC root goes on a store path, not %s", safeio.QuoteAlways(p))
		}
		if !seen[p] {
			seen[p] = true
			unique = append(unique, p)
		}
	}
	if len(unique) == 0 {
		return nil, errors.New("no store paths to register GC roots for")
	}
	dir, name := filepath.Split(root)
	if err := os.MkdirAll(filepath.Clean(dir), 0o755); err != nil {
		return nil, err
	}
	// The paths are valid, so --realise builds nothing: it only adds the
	// roots and prints their names, as absolute paths.
	args := append([]string{"--realise", "--add-root", root, "--indirect"}, unique...)
	var made []string
	err := stream(ctx, "nix-store", func(r io.Reader) error {
		br := bufio.NewReader(&io.LimitedReader{R: r, N: maxRootsOutput + 1})
		read := 0
		for {
			line, err := br.ReadBytes('\n')
			if read += len(line); read > maxRootsOutput {
				return fmt.Errorf("nix-store printed more than %d bytes of GC roots", maxRootsOutput)
			}
			if err != nil && err != io.EOF {
				return err
			}
			if l := string(bytes.TrimSpace(line)); l != "" {
				base := filepath.Base(l)
				if !filepath.IsAbs(l) || !(base == name || strings.HasPrefix(base, name+"-")) {
					return fmt.Errorf("nix-store printed %s, which is not a GC root named %s", safeio.QuoteAlways(l), safeio.QuoteAlways(root))
				}
				made = append(made, filepath.Join(dir, base))
			}
			if err == io.EOF {
				return nil
			}
		}
	}, args...)
	if err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return nil, ErrNixNotInstalled
		}
		if ctx.Err() != nil {
			return nil, context.Cause(ctx)
		}
		return nil, fmt.Errorf("registering GC roots at %s: %w", root, err)
	}
	return made, nil
}
