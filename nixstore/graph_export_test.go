package nixstore

import "io"

// ReadGraphLimited is ReadGraph with lower limits, to test them on small
// graphs.
func ReadGraphLimited(r io.Reader, size int64, paths, refs int) (*Graph, error) {
	return readGraph(r, graphLimits{size: size, paths: paths, refs: refs})
}

// ReadPathListLimited reads a nix-store --query list within limits.
func ReadPathListLimited(r io.Reader, size int64, paths int) ([]string, error) {
	return readPathList(r, graphLimits{size: size, paths: paths, refs: paths})
}

// SetDumpBatch sets, until restore is called, how many bytes of store
// paths one nix-store --dump-db is given.
func SetDumpBatch(n int) (restore func()) {
	old := dumpBatch
	dumpBatch = n
	return func() { dumpBatch = old }
}
