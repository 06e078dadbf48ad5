package aci

import (
	"io"
	"sync"
)

// AsyncWriter writes to an underlying writer from a goroutine of its own,
// so that a slow consumer (a hash, a pipe to another reader) runs beside
// the producer instead of taking turns with it. Write copies p and queues
// it; at most depth writes are queued, which bounds memory.
type AsyncWriter struct {
	queue chan []byte
	free  chan []byte
	done  chan struct{}
	err   error
	once  sync.Once
}

// NewAsyncWriter starts writing to w in the background.
func NewAsyncWriter(w io.Writer, depth int) *AsyncWriter {
	a := &AsyncWriter{queue: make(chan []byte, depth), free: make(chan []byte, depth+1), done: make(chan struct{})}
	go func() {
		defer close(a.done)
		for b := range a.queue {
			if a.err == nil {
				_, a.err = w.Write(b)
			}
			select {
			case a.free <- b[:0]:
			default:
			}
		}
	}()
	return a
}

// Write queues a copy of p. It fails once the underlying writer has.
func (a *AsyncWriter) Write(p []byte) (int, error) {
	select {
	case <-a.done:
		return 0, a.err
	default:
	}
	var b []byte
	select {
	case b = <-a.free:
	default:
	}
	a.queue <- append(b, p...)
	return len(p), nil
}

// Close waits until everything queued is written and returns the first
// error of the underlying writer.
func (a *AsyncWriter) Close() error {
	a.once.Do(func() { close(a.queue) })
	<-a.done
	return a.err
}
