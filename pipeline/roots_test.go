package pipeline

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// A rebuild's stale roots are the links into the store named after its
// root and a suffix, that it did not make; another image's roots, and
// what is no link into the store, stay.
func TestRemoveStaleRoots(t *testing.T) {
	dir := t.TempDir()
	const store = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-a-1.0"
	links := map[string]string{
		"app-1.0-linux-amd64.gcroot":                                store, // made again
		"app-1.0-linux-amd64.gcroot-2":                              store, // made again
		"app-1.0-linux-amd64.gcroot-3":                              store, // a path the image no longer has
		"app-1.0-linux-amd64.gcroot-2-bin":                          store, // an output an older build rooted
		"app-1.0-linux-amd64.gcroot-mine":                           "/tmp/somewhere",
		"app-1.0-linux-amd64.gcroot-tools-1.0-linux-amd64.gcroot":   store, // another image's
		"app-1.0-linux-amd64.gcroot-tools-1.0-linux-amd64.gcroot-2": store,
		"other-1.0-linux-amd64.gcroot-2":                            store,
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "app-1.0-linux-amd64.gcroot-notes"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "app-1.0-linux-amd64.gcroot")
	removeStaleRoots(root, []string{root, root + "-2"})
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	want := []string{
		"app-1.0-linux-amd64.gcroot",
		"app-1.0-linux-amd64.gcroot-2",
		"app-1.0-linux-amd64.gcroot-mine",
		"app-1.0-linux-amd64.gcroot-notes",
		"app-1.0-linux-amd64.gcroot-tools-1.0-linux-amd64.gcroot",
		"app-1.0-linux-amd64.gcroot-tools-1.0-linux-amd64.gcroot-2",
		"other-1.0-linux-amd64.gcroot-2",
	}
	if !slices.Equal(got, want) {
		t.Errorf("left %q, want %q", got, want)
	}
}
