package aci

// WithEntryLimits lowers the entries and bytes of names Write allows
// (Inspect's maxEntries and maxNameBytes), to test them on small images.
func WithEntryLimits(entries, nameBytes int) Option {
	return func(o *config) { o.maxEntries, o.maxNameBytes = entries, nameBytes }
}
