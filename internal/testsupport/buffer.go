package testsupport

import (
	"bytes"
	"sync"
)

// LockedBuffer is a bytes.Buffer safe for one writer and concurrent
// readers: a process's output that a test reads while the process runs.
// With Max above zero, what is written once it holds more than Max bytes
// is dropped (and reported written), so that a long-lived process's log
// stays bounded.
type LockedBuffer struct {
	Max int
	mu  sync.Mutex
	b   bytes.Buffer
}

func (l *LockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.Max > 0 && l.b.Len() > l.Max {
		return len(p), nil
	}
	return l.b.Write(p)
}

// String returns what was written so far.
func (l *LockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
