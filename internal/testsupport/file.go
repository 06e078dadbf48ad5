package testsupport

import (
	"os"
	"path/filepath"
	"testing"
)

// WriteFile writes data to path (mode 0644), making the directories it
// lacks, and returns path. Failing is fatal.
func WriteFile(t testing.TB, path string, data []byte) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// CopyFile copies the file src to dst as WriteFile writes it.
func CopyFile(t testing.TB, src, dst string) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	WriteFile(t, dst, data)
}
