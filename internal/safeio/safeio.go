package safeio

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"unicode"
	"unicode/utf8"
)

// NotRegularError reports a path that is not a regular file.
type NotRegularError struct {
	Path string
	Mode fs.FileMode
}

func (e *NotRegularError) Error() string {
	return fmt.Sprintf("%s is %s, not a regular file", Quote(e.Path), kind(e.Mode))
}

func kind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a FIFO"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeDevice != 0:
		return "a device"
	case m&fs.ModeSymlink != 0:
		return "a symlink"
	}
	return "not a plain file"
}

// TooLargeError reports a file over the size a reader accepts.
type TooLargeError struct {
	Path      string
	Size, Max int64
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("%s is %d bytes, more than the %d this file can be", Quote(e.Path), e.Size, e.Max)
}

// OpenRegular opens path for reading if it is a regular file. It never
// blocks: the open is non-blocking (a FIFO would otherwise wait for a
// writer), and the handle is checked with Stat before anything is read.
// Symlinks are followed, as every command-line tool follows them.
func OpenRegular(path string) (*os.File, error) {
	f, _, err := regular(path, func() (*os.File, error) { return os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0) })
	return f, err
}

// OpenRegularIn is OpenRegular for name in rt, never leaving it, and
// returns the file's FileInfo too. An error opening is the open's
// (an *fs.PathError); a file that is not regular is a *NotRegularError.
func OpenRegularIn(rt *os.Root, name string) (*os.File, fs.FileInfo, error) {
	return regular(name, func() (*os.File, error) { return rt.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0) })
}

func regular(path string, open func() (*os.File, error)) (*os.File, fs.FileInfo, error) {
	f, err := open()
	if err != nil {
		return nil, nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, nil, &NotRegularError{Path: path, Mode: fi.Mode()}
	}
	return f, fi, nil
}

// ReadFile reads the regular file at path, refusing one of more than max
// bytes before reading it (and if it grows while being read).
func ReadFile(path string, max int64) ([]byte, error) {
	f, err := OpenRegular(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.Size() > max {
		return nil, &TooLargeError{Path: path, Size: fi.Size(), Max: max}
	}
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, &TooLargeError{Path: path, Size: int64(len(b)), Max: max}
	}
	return b, nil
}

// MaxQuoted is the most bytes of a hostile string Quote shows.
const MaxQuoted = 200

// Quote returns s as it may be printed: unchanged if it is short valid
// UTF-8 of printable characters, else Go-quoted so that control
// characters show as escapes; in both cases cut to MaxQuoted bytes, with
// an ellipsis and the full length.
func Quote(s string) string {
	cut := ""
	if len(s) > MaxQuoted {
		cut = fmt.Sprintf("… (%d bytes)", len(s))
		s = s[:MaxQuoted]
		for len(s) > 0 && !utf8.ValidString(s) {
			s = s[:len(s)-1]
		}
	}
	if printable(s) {
		return s + cut
	}
	return strconv.Quote(s) + cut
}

// QuoteAlways returns s Go-quoted, always (so that it stands out in a
// message as the value it is), cut to MaxQuoted bytes with the full length.
func QuoteAlways(s string) string {
	if len(s) > MaxQuoted {
		cut := s[:MaxQuoted]
		for len(cut) > 0 && !utf8.ValidString(cut) {
			cut = cut[:len(cut)-1]
		}
		return strconv.Quote(cut) + fmt.Sprintf("… (%d bytes)", len(s))
	}
	return strconv.Quote(s)
}

func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

// Terminal makes a multi-line message safe for a terminal: control
// characters other than newline and tab are escaped, each line is cut to
// maxLine bytes and the whole to maxTotal.
func Terminal(msg string, maxLine, maxTotal int) string {
	out := make([]byte, 0, min(len(msg), maxTotal)+32)
	line := 0
	for i, r := range msg {
		if len(out) >= maxTotal {
			out = fmt.Appendf(out, "… (%d more bytes)", len(msg)-i)
			break
		}
		switch {
		case r == '\n':
			out = append(out, '\n')
			line = 0
			continue
		case line == maxLine:
			out = append(out, "…"...)
			line++
			continue
		case line > maxLine:
			continue
		}
		var piece []byte
		if r == '\t' || (r != utf8.RuneError && unicode.IsPrint(r)) {
			piece = utf8.AppendRune(nil, r)
		} else if r == utf8.RuneError {
			piece = fmt.Appendf(nil, `\x%02x`, msg[i])
		} else {
			q := strconv.QuoteRune(r)
			piece = []byte(q[1 : len(q)-1])
		}
		out = append(out, piece...)
		line += len(piece)
	}
	return string(out)
}

// WithContext returns a reader that fails with ctx's cause once ctx is
// done, so that a long read of an image stops when the command is
// interrupted.
func WithContext(ctx context.Context, r io.Reader) io.Reader { return &ctxReader{ctx, r} }

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, context.Cause(c.ctx)
	}
	return c.r.Read(p)
}

// WriteFileAtomic writes data to path with perm through a temporary file
// in the same directory, so that path never holds half a file; an
// existing path is replaced.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	return writeAtomic(path, perm, true, func(w io.Writer) error { _, err := w.Write(data); return err })
}

// CreateFileAtomic is WriteFileAtomic that never replaces: an existing
// path is left alone and the error is fs.ErrExist.
func CreateFileAtomic(path string, data []byte, perm os.FileMode) error {
	return writeAtomic(path, perm, false, func(w io.Writer) error { _, err := w.Write(data); return err })
}

// WriteAtomic is WriteFileAtomic for what write streams: path is replaced
// only once write has returned nil.
func WriteAtomic(path string, perm os.FileMode, write func(io.Writer) error) error {
	return writeAtomic(path, perm, true, write)
}

func writeAtomic(path string, perm os.FileMode, replace bool, write func(io.Writer) error) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	err = write(tmp)
	if err == nil {
		err = tmp.Chmod(perm)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if replace {
		return os.Rename(tmp.Name(), path)
	}
	return os.Link(tmp.Name(), path)
}
