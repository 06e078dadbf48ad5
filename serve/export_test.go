package serve

import (
	"testing"
	"time"
)

// SetStoredFor sets, for one test, how long an image found complete in
// the store is remembered before the store is asked again.
func SetStoredFor(t testing.TB, d time.Duration) {
	old := storedFor
	storedFor = d
	t.Cleanup(func() { storedFor = old })
}

// Collect runs the collector as a build does after it, keep kept.
func Collect(s *Server, keep string) {
	s.publishMu.Lock()
	defer s.publishMu.Unlock()
	s.collect(keep)
}

// Hold holds the file rel of the data directory as a request reading it
// does, until the function returned is called.
func Hold(s *Server, rel string) func() {
	s.acquire(rel)
	return func() { s.release(rel) }
}

// Touch records that rel was asked for now.
func Touch(s *Server, rel string) { s.touch(rel) }
