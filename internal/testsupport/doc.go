// Package testsupport holds the small helpers the tests of several
// packages share, so that each is written once: a buffer a process writes
// while a test reads it, a free loopback address, a GET that must answer
// 200 OK, many GETs at once, a GnuPG home of its own, running a program
// for its output, and writing or copying a file.
//
// It uses the standard library only, so that any package's tests, those
// inside the package included, may import it without an import cycle.
//
// Helpers that need more live in packages below it: rktfetch
// (discovery, download and verification as rkt fetch does them, with this
// module's sign package) and ocitest (a docker-registry on a loopback
// port). Helpers for one package's domain stay beside it: aci/acitest,
// nixstore/nixtest, objstore/objstoretest.
//
// Every helper that can fail takes a testing.TB and fails the test.
package testsupport
