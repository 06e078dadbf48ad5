// Package scripts holds the tests of the shell scripts beside it: that the
// demo runs on what scripts/setup installs, and that the set-up for the
// tests (scripts/setup-test) adds the rest. The scripts themselves are
// bash; the Go programs in the directories below are benchmarks.
package scripts
