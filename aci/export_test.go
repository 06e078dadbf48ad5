package aci

// InflateProofs is how many cached members builds have proven by
// inflating them, rather than by their tags.
func InflateProofs() int64 { return inflateProofs.Load() }
