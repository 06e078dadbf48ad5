// Package testkey gives tests their signing keys, each made once per test
// process. Making an RSA-4096 key takes a second or more of CPU (the prime
// search), and most tests need a key, not its making: publish's tests
// alone made a dozen, most of their CPU. The tests of key generation
// itself call sign.GenerateKey.
//
// It is a package of its own, not part of testsupport, because it
// imports sign, whose tests import testsupport.
package testkey

import (
	"bytes"
	"fmt"
	"sync"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp"

	"github.com/nix2aci/nix2aci/sign"
)

var (
	mu   sync.Mutex
	made = map[string][]byte{} // armored private keys, by their options
)

// Key returns a key made by sign.GenerateKey with the options o: the
// first call with these options in this process makes it, later ones get
// the same key read afresh from its armored form, so that a caller may
// change what it gets. A key with a passphrase is made at each call.
// Failing to make or read one is fatal.
func Key(t testing.TB, o sign.KeyOptions) *openpgp.Entity {
	t.Helper()
	if len(o.Passphrase) > 0 {
		k, err := sign.GenerateKey(o)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	id := fmt.Sprintf("%q %q %q %q %d %d", o.Name, o.Comment, o.Email, o.Algorithm, o.Lifetime, o.Now.UnixNano())
	mu.Lock()
	armored, ok := made[id]
	if !ok {
		k, err := sign.GenerateKey(o)
		if err == nil {
			var b bytes.Buffer
			if err = sign.WritePrivateKey(&b, k); err == nil {
				armored = b.Bytes()
				made[id] = armored
			}
		}
		if err != nil {
			mu.Unlock()
			t.Fatal(err)
		}
	}
	mu.Unlock()
	k, err := sign.ReadKey(bytes.NewReader(armored))
	if err != nil {
		t.Fatalf("reading the test key %s back: %v", id, err)
	}
	return k
}
