package nixstore_test

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/nix2aci/nix2aci/nixstore"
)

// storePath is the i-th of a generated graph's store paths.
func storePath(i int) string {
	return fmt.Sprintf("/nix/store/%032d-package-%d", i, i)
}

// writeGraph writes an exportReferencesGraph file of n paths, each
// referring to itself and up to refs paths before it.
func writeGraph(t testing.TB, n, refs int) (string, int64) {
	t.Helper()
	name := filepath.Join(t.TempDir(), "graph")
	f, err := os.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriter(f)
	for i := 0; i < n; i++ {
		k := min(i, refs-1)
		fmt.Fprintf(w, "%s\n%s.drv\n%d\n%s\n", storePath(i), storePath(n+i), k+1, storePath(i))
		for j := i - k; j < i; j++ {
			fmt.Fprintln(w, storePath(j))
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	fi, _ := f.Stat()
	f.Close()
	return name, fi.Size()
}

// A large graph costs memory for its paths and references, not for its
// bytes: reading never holds the file, nor a copy of a line, and each
// store path is held once however many paths refer to it.
func TestReadGraphMemoryIsBounded(t *testing.T) {
	const n, refs = 2000, 250
	name, size := writeGraph(t, n, refs)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	g, err := nixstore.ReadGraphFiles([]string{name})
	if err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	allocated := after.TotalAlloc - before.TotalAlloc
	retained := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("a graph of %d bytes: %d bytes allocated reading it, %d retained", size, allocated, retained)
	if len(g.Paths) != n || len(g.Paths[n-1].References) != refs {
		t.Fatalf("read %d paths, the last with %d references", len(g.Paths), len(g.Paths[n-1].References))
	}
	// What must be held: a string header per reference (16 bytes, about
	// a quarter of a reference line), each path once, a slice per path.
	if allocated > uint64(size)/2 {
		t.Errorf("reading %d bytes allocated %d: the parser copies the input", size, allocated)
	}
	if retained > size/2 {
		t.Errorf("the graph of %d bytes holds %d bytes of heap: references are not shared", size, retained)
	}
	runtime.KeepAlive(g)
}

// Every limit: a graph past one is a GraphTooLargeError naming it and the
// fix, before more of it is read.
func TestReadGraphLimits(t *testing.T) {
	rec := func(i int, refs ...int) string {
		s := storePath(i) + "\n\n" + fmt.Sprint(len(refs)) + "\n"
		for _, r := range refs {
			s += storePath(r) + "\n"
		}
		return s
	}
	three := rec(0) + rec(1, 0) + rec(2, 0, 1)
	if _, err := nixstore.ReadGraphLimited(strings.NewReader(three), int64(len(three)), 3, 3); err != nil {
		t.Fatalf("at every limit: %v", err)
	}
	for _, tc := range []struct {
		name        string
		in          string
		size        int64
		paths, refs int
		want        string
	}{
		{"bytes", three, int64(len(three)) - 1, 3, 3, fmt.Sprintf("more than %d bytes", len(three)-1)},
		{"paths", three, 1 << 20, 2, 3, "names more than 2 store paths"},
		{"references", three, 1 << 20, 3, 2, "holds more than 2 references"},
		{"claimed references", storePath(0) + "\n\n4\n", 1 << 20, 3, 3, "claims 4 references"},
		{"a huge claim", storePath(0) + "\n\n99999999999999999999\n", 1 << 20, 3, 3, "bad reference count"},
	} {
		_, err := nixstore.ReadGraphLimited(strings.NewReader(tc.in), tc.size, tc.paths, tc.refs)
		var tl *nixstore.GraphTooLargeError
		if tc.name == "a huge claim" {
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s: got %v, want %q", tc.name, err, tc.want)
			}
			continue
		}
		if !errors.As(err, &tl) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "exportReferencesGraph") {
			t.Errorf("%s: got %v, want a GraphTooLargeError containing %q", tc.name, err, tc.want)
		}
	}
	for name, in := range map[string]string{
		"long line":          storePath(0) + "\n" + strings.Repeat("x", 2000) + "\n0\n",
		"long store path":    "/nix/store/00000000000000000000000000000000-" + strings.Repeat("x", 300) + "\n\n0\n",
		"reference twice":    rec(0) + rec(1, 0, 0),
		"deriver not a path": storePath(0) + "\nnot-a-drv\n0\n",
		"bad reference":      storePath(0) + "\n\n1\n/tmp/x\n",
	} {
		if _, err := nixstore.ReadGraph(strings.NewReader(in)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := nixstore.ReadPathListLimited(strings.NewReader(storePath(0)+"\n"+storePath(1)+"\n"), 1<<20, 1); err == nil || !strings.Contains(err.Error(), "more than 1 store paths") {
		t.Errorf("a path list past the limit: got %v", err)
	}
}

// Files read together are one graph: a path both list must agree, and
// the limits count over all of them.
func TestReadGraphFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	a := write("a", storePath(0)+"\n\n0\n"+storePath(1)+"\n\n1\n"+storePath(0)+"\n")
	b := write("b", storePath(0)+"\n\n0\n"+storePath(2)+"\n\n1\n"+storePath(0)+"\n")
	g, err := nixstore.ReadGraphFiles([]string{a, b})
	if err != nil || len(g.Paths) != 3 {
		t.Fatalf("two files: %v, %v", g, err)
	}
	c := write("c", storePath(0)+"\n\n1\n"+storePath(2)+"\n")
	if _, err := nixstore.ReadGraphFiles([]string{a, c}); err == nil || !strings.Contains(err.Error(), "other references") {
		t.Errorf("files that disagree: got %v", err)
	}
	if _, err := nixstore.ReadGraphFiles([]string{dir}); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("a directory: got %v", err)
	}
}
