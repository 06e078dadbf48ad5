package testkey

import (
	"testing"

	"github.com/nix2aci/nix2aci/sign"
)

// The second call with the same options gets the same key as a value of
// its own; other options get another key.
func TestKeyIsMadeOnce(t *testing.T) {
	o := sign.KeyOptions{Name: "Once", Email: "once@example.com", Algorithm: sign.Ed25519}
	a, b := Key(t, o), Key(t, o)
	if a == b {
		t.Fatal("the same *Entity twice: callers would share what they change")
	}
	if sign.Fingerprint(a) != sign.Fingerprint(b) {
		t.Fatalf("two keys for the same options: %s, %s", sign.Fingerprint(a), sign.Fingerprint(b))
	}
	if a.PrivateKey == nil || b.PrivateKey == nil || b.PrivateKey.Encrypted {
		t.Fatal("the key read back has no usable private part")
	}
	if sign.UserID(b) != sign.UserID(a) {
		t.Fatalf("user ID %q read back as %q", sign.UserID(a), sign.UserID(b))
	}
	o.Name = "Other"
	if c := Key(t, o); sign.Fingerprint(c) == sign.Fingerprint(a) {
		t.Fatal("other options got the same key")
	}
}
