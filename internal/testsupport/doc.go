// Package testsupport holds the small helpers the tests of several
// packages share, so that each is written once: a buffer a process writes
// while a test reads it, and a free loopback address.
//
// It uses the standard library only, so that any package's tests, those
// inside the package included, may import it without an import cycle.
//
// Every helper that can fail takes a testing.TB and fails the test.
package testsupport
