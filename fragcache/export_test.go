package fragcache

// MaxEntryChunks is the most chunks an entry of a store path of narSize
// bytes of NAR may claim.
func MaxEntryChunks(narSize int64) int64 { return maxEntryChunks(narSize) }
