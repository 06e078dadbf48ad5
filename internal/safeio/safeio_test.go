package safeio_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nix2aci/nix2aci/internal/safeio"
)

func TestOpenRegularRefusesWithoutBlocking(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "file")
	os.WriteFile(file, []byte("hello"), 0o644)
	for _, tc := range []struct {
		path, want string
	}{
		{fifo, "is a FIFO, not a regular file"},
		{dir, "is a directory, not a regular file"},
		{"/dev/null", "is a device, not a regular file"},
	} {
		done := make(chan error, 1)
		go func() { _, err := safeio.OpenRegular(tc.path); done <- err }()
		select {
		case err := <-done:
			var nr *safeio.NotRegularError
			if !errors.As(err, &nr) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("OpenRegular(%s) = %v, want %q", tc.path, err, tc.want)
			}
		case <-time.After(2 * time.Second):
			t.Fatalf("OpenRegular(%s) blocked", tc.path)
		}
	}
	f, err := safeio.OpenRegular(file)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
}

func TestReadFileCapsSize(t *testing.T) {
	p := filepath.Join(t.TempDir(), "big")
	os.WriteFile(p, make([]byte, 2000), 0o644)
	if _, err := safeio.ReadFile(p, 1000); err == nil || !strings.Contains(err.Error(), "2000 bytes, more than the 1000") {
		t.Errorf("got %v", err)
	}
	if b, err := safeio.ReadFile(p, 2000); err != nil || len(b) != 2000 {
		t.Errorf("got %d bytes, %v", len(b), err)
	}
}

func TestQuote(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"example.com/app", "example.com/app"},
		{"évian", "évian"},
		{"a\x1b[2Jb", `"a\x1b[2Jb"`},
		{"line\nbreak", `"line\nbreak"`},
		{strings.Repeat("x", 300), strings.Repeat("x", 200) + "… (300 bytes)"},
	} {
		if got := safeio.Quote(tc.in); got != tc.want {
			t.Errorf("Quote(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestTerminal(t *testing.T) {
	for _, tc := range []struct {
		in        string
		line, max int
		want      string
	}{
		{"plain\nlines\tok", 100, 100, "plain\nlines\tok"},
		{"bell\x07 and \x1b[31mred", 100, 100, `bell\a and \x1b[31mred`},
		{"long line here\nnext", 4, 100, "long…\nnext"},
		{strings.Repeat("y", 50), 100, 10, "yyyyyyyyyy… (40 more bytes)"},
		{"bad \xff utf8", 100, 100, `bad \xff utf8`},
	} {
		if got := safeio.Terminal(tc.in, tc.line, tc.max); got != tc.want {
			t.Errorf("Terminal(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// Whatever the input, what Quote and Terminal return has no control
// characters (but newline and tab in Terminal) and a bounded size.
func FuzzQuoteAndTerminal(f *testing.F) {
	for _, s := range []string{"plain", "a\x1b[2Jb", "\xff\xfe", "\u009b31m", strings.Repeat("é", 300), "l1\nl2\tx"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		q := safeio.Quote(s)
		if len(q) > 4*safeio.MaxQuoted+40 {
			t.Errorf("Quote gave %d bytes", len(q))
		}
		if hasControl(q, false) {
			t.Errorf("Quote(%q) = %q has a control character", s, q)
		}
		m := safeio.Terminal(s, 50, 400)
		if len(m) > 4*400+64 {
			t.Errorf("Terminal gave %d bytes", len(m))
		}
		if hasControl(m, true) {
			t.Errorf("Terminal(%q) = %q has a control character", s, m)
		}
	})
}

func hasControl(s string, allowLines bool) bool {
	for _, r := range s {
		if allowLines && (r == '\n' || r == '\t') {
			continue
		}
		if r < 0x20 || r == 0x7f || r >= 0x80 && r < 0xa0 {
			return true
		}
	}
	return false
}
