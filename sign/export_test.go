package sign

// ParseDeps is parseDeps, for the fuzz target.
var ParseDeps = parseDeps

// NewSalt is the salt signing draws for each try.
var NewSalt = newSalt

// SetNewSalt makes signing draw its salts from f until restore is called.
func SetNewSalt(f func() ([]byte, error)) (restore func()) {
	old := newSalt
	newSalt = f
	return func() { newSalt = old }
}

// FullLengthSelfSignatures is fullLengthSelfSignatures, for the test that
// makes a key's self-signatures short first.
var FullLengthSelfSignatures = fullLengthSelfSignatures
