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
