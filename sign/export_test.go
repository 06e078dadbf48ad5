package sign

// ParseDeps is parseDeps, for the fuzz target.
var ParseDeps = parseDeps
