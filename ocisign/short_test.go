package ocisign

import (
	"bytes"
	"crypto"
	"crypto/rsa"
	"fmt"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// About one RSA signature in 256 is a number with a leading zero byte,
// which OpenPGP writes shorter than the modulus and
// golang.org/x/crypto/openpgp refuses: every signature made must be as
// long as the modulus. Three thousand signatures would all be full
// length by chance one time in 120,000. A signature made again keeps its
// date: dated earlier, it could come before the key's creation, which
// gpgme refuses (a key made the same second as the image is signed).
func TestRSASignaturesAreModulusLength(t *testing.T) {
	key, err := openpgp.NewEntity("Short", "", "short@example.com", &packet.Config{Algorithm: packet.PubKeyAlgoRSA, RSABits: 1024, DefaultHash: crypto.SHA256})
	if err != nil {
		t.Fatal(err)
	}
	size := key.PrimaryKey.PublicKey.(*rsa.PublicKey).Size()
	at := time.Unix(1700000000, 0)
	for i := 0; i < 3000; i++ {
		payload := []byte(fmt.Sprintf(`{"critical":{"n":%d}}`, i))
		msg, err := signedMessage(key, payload, at)
		if err != nil {
			t.Fatal(err)
		}
		m, err := readSignedMessage(msg)
		if err != nil {
			t.Fatal(err)
		}
		if n := len(m.sig.RSASignature.Bytes()); n != size {
			t.Fatalf("signature %d is %d bytes, the modulus %d", i, n, size)
		}
		if !m.sig.CreationTime.Equal(at) {
			t.Fatalf("signature %d is dated %v, not %v", i, m.sig.CreationTime, at)
		}
		if !bytes.Equal(m.body, payload) {
			t.Fatal("the payload changed")
		}
		h, _ := m.sig.PrepareVerify()
		h.Write(payload)
		if err := key.PrimaryKey.VerifySignature(h, m.sig); err != nil {
			t.Fatalf("signature %d: %v", i, err)
		}
	}
}
