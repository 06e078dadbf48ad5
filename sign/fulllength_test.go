package sign_test

import (
	"bytes"
	"crypto"
	"crypto/rsa"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	xopenpgp "golang.org/x/crypto/openpgp"

	"github.com/nix2aci/nix2aci/internal/testsupport"
	"github.com/nix2aci/nix2aci/sign"
)

// These tests are about the RSA signature's MPI: OpenPGP writes it without
// its leading zero bytes, so about one signature in 256 is shorter than
// the modulus. rkt hands those bytes to crypto/rsa as they are, and since
// Go 1.20 rsa.VerifyPKCS1v15 refuses a signature shorter than the modulus:
// an rkt built with today's Go rejects such a signature.

var (
	rsa2048Once sync.Once
	rsa2048Key  *openpgp.Entity
)

// key2048 is one RSA 2048 key for the whole test binary: these tests sign
// thousands of times, and a 2048-bit signature is several times faster
// than a 4096-bit one.
func key2048(t testing.TB) *openpgp.Entity {
	rsa2048Once.Do(func() {
		var err error
		rsa2048Key, err = openpgp.NewEntity("Short Signer", "", "short@example.com",
			&packet.Config{Algorithm: packet.PubKeyAlgoRSA, RSABits: 2048, DefaultHash: crypto.SHA512})
		if err != nil {
			t.Fatal(err)
		}
	})
	return rsa2048Key
}

// parseSig reads the one signature packet of an armored or binary
// detached signature.
func parseSig(t testing.TB, sig []byte) *packet.Signature {
	t.Helper()
	if bytes.HasPrefix(sig, []byte("-----BEGIN")) {
		sig = body(t, sig)
	}
	p, err := packet.Read(bytes.NewReader(sig))
	if err != nil {
		t.Fatal(err)
	}
	s, ok := p.(*packet.Signature)
	if !ok {
		t.Fatalf("read a %T, not a signature", p)
	}
	return s
}

// mpiLen is the length in bytes of s's RSA signature as written.
func mpiLen(s *packet.Signature) int { return (int(s.RSASignature.BitLength()) + 7) / 8 }

// modulusLen is the length in bytes of k's RSA modulus.
func modulusLen(k *packet.PublicKey) int { return k.PublicKey.(*rsa.PublicKey).Size() }

// rktCheck verifies s over data as rkt's vendored x/crypto/openpgp does
// when rkt is built with Go 1.20 or later: the MPI's bytes go to
// rsa.VerifyPKCS1v15 unpadded.
func rktCheck(k *packet.PublicKey, s *packet.Signature, data []byte) error {
	h := s.Hash.New()
	h.Write(data)
	h.Write(s.HashSuffix)
	return rsa.VerifyPKCS1v15(k.PublicKey.(*rsa.PublicKey), s.Hash, h.Sum(nil), s.RSASignature.Bytes())
}

func TestRSASignaturesAreFullLength(t *testing.T) {
	key := key2048(t)
	img := makeACI(t, "example.com/app", "full length")
	opt := withImage(t, img)
	var sigs [][]byte
	for i := range 2000 {
		sig := signBytes(t, key, img, opt)
		s := parseSig(t, sig)
		if got, want := mpiLen(s), modulusLen(key.PrimaryKey); got != want {
			t.Fatalf("signature %d: MPI of %d bytes, modulus of %d: an rkt built with Go 1.20 or later refuses it", i+1, got, want)
		}
		if err := rktCheck(key.PrimaryKey, s, img); err != nil {
			t.Fatalf("signature %d: rkt's check: %v", i+1, err)
		}
		if i < 3 {
			sigs = append(sigs, sig)
		}
	}
	for _, sig := range sigs {
		if _, err := verify(t, img, sig, rootTrust(key)); err != nil {
			t.Errorf("verify: %v", err)
		}
	}
}

// TestShortSignatureIsMadeAgain makes the salt of the first try all zeros,
// and looks for an image whose signature with that salt is short: with
// every salt all zeros Detached must give up without writing anything,
// and with only the first one it must sign again, full-length.
func TestShortSignatureIsMadeAgain(t *testing.T) {
	key := key2048(t)
	at := time.Unix(time.Now().Unix()+1, 0) // whole seconds, after the key was made
	zeros := func() ([]byte, error) { return make([]byte, 32), nil }
	for i := range 10000 {
		img := makeACI(t, "example.com/app", fmt.Sprint("short ", i))
		restore := sign.SetNewSalt(zeros)
		var out bytes.Buffer
		err := sign.Detached(&out, key, bytes.NewReader(img), sign.WithTime(at), withImage(t, img))
		restore()
		if err == nil {
			continue // full-length at the first try
		}
		var ke *sign.KeyError
		if !errors.As(err, &ke) || !strings.Contains(err.Error(), "64 signatures in a row") || !strings.Contains(err.Error(), sign.Fingerprint(key)) {
			t.Fatalf("after 64 short signatures: %v", err)
		}
		if out.Len() != 0 {
			t.Fatalf("a failed signing wrote %d bytes", out.Len())
		}

		tries := 0
		restore = sign.SetNewSalt(func() ([]byte, error) {
			tries++
			if tries == 1 {
				return zeros()
			}
			return sign.NewSalt()
		})
		out.Reset()
		err = sign.Detached(&out, key, bytes.NewReader(img), sign.WithTime(at), withImage(t, img))
		restore()
		if err != nil {
			t.Fatal(err)
		}
		if tries < 2 {
			t.Fatalf("signed in %d tries, want a second one", tries)
		}
		s := parseSig(t, out.Bytes())
		if got, want := mpiLen(s), modulusLen(key.PrimaryKey); got != want {
			t.Fatalf("MPI of %d bytes, modulus of %d", got, want)
		}
		if err := rktCheck(key.PrimaryKey, s, img); err != nil {
			t.Fatalf("rkt's check: %v", err)
		}
		if !s.CreationTime.Equal(at) {
			t.Errorf("signed at %v, want %v: a new try must not change the time", s.CreationTime, at)
		}
		if _, err := verify(t, img, out.Bytes(), rootTrust(key)); err != nil {
			t.Fatalf("verify: %v", err)
		}
		g := testsupport.NewGPG(t)
		g.Run(pub(t, key), "--import")
		if o, err := g.Try(nil, "--verify", g.File("x.aci.asc", out.Bytes()), g.File("x.aci", img)); err != nil || !strings.Contains(string(o), "Good signature") {
			t.Fatalf("gpg --verify: %v\n%s", err, o)
		}
		return
	}
	t.Fatal("no image in 10,000 had a short signature with a zero salt")
}

// TestVerifyAcceptsShortSignatures: others (gpg, go-crypto) write short
// MPIs; they are valid OpenPGP, and verify accepts them.
func TestVerifyAcceptsShortSignatures(t *testing.T) {
	key := key2048(t)
	img := makeACI(t, "example.com/app", "short from others")
	for range 10000 {
		var out bytes.Buffer
		w, _ := armor.Encode(&out, openpgp.SignatureType, nil)
		if err := openpgp.DetachSign(w, key, bytes.NewReader(img), &packet.Config{DefaultHash: crypto.SHA512}); err != nil {
			t.Fatal(err)
		}
		w.Close()
		s := parseSig(t, out.Bytes())
		if mpiLen(s) == modulusLen(key.PrimaryKey) {
			continue
		}
		if rktCheck(key.PrimaryKey, s, img) == nil {
			t.Error("Go's crypto/rsa accepted a short signature: the reason for full-length ones is gone")
		}
		if _, err := verify(t, img, out.Bytes(), rootTrust(key)); err != nil {
			t.Fatalf("verify refuses a short signature: %v", err)
		}
		return
	}
	t.Fatal("no short signature in 10,000")
}

// TestKeySelfSignaturesAreFullLength: rkt reads a key with the same code,
// and refuses one whose user ID or subkey self-signature is short.
func TestKeySelfSignaturesAreFullLength(t *testing.T) {
	key := key2048(t)
	// A copy of the key whose self-signatures are short.
	var priv bytes.Buffer
	if err := sign.WritePrivateKey(&priv, key); err != nil {
		t.Fatal(err)
	}
	e, err := sign.ReadKey(&priv)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &packet.Config{DefaultHash: crypto.SHA512}
	id := e.PrimaryIdentity()
	for tries := 0; mpiLen(id.SelfSignature) == modulusLen(e.PrimaryKey); tries++ {
		if tries == 10000 {
			t.Fatal("no short user ID signature in 10,000")
		}
		if err := id.SelfSignature.SignUserId(id.Name, e.PrimaryKey, e.PrivateKey, cfg); err != nil {
			t.Fatal(err)
		}
	}
	sub := &e.Subkeys[0]
	for tries := 0; mpiLen(sub.Sig) == modulusLen(e.PrimaryKey); tries++ {
		if tries == 10000 {
			t.Fatal("no short subkey signature in 10,000")
		}
		if err := sub.Sig.SignKey(sub.PublicKey, e.PrivateKey, cfg); err != nil {
			t.Fatal(err)
		}
	}

	if err := sign.FullLengthSelfSignatures(e); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*packet.Signature{id.SelfSignature, sub.Sig} {
		if got, want := mpiLen(s), modulusLen(e.PrimaryKey); got != want {
			t.Fatalf("self-signature of type %v: MPI of %d bytes, modulus of %d", s.SigType, got, want)
		}
	}
	// The key still reads, its self-signatures checked, here and by the
	// x/crypto/openpgp rkt uses.
	pubKey := pub(t, e)
	if _, err := sign.ReadKey(bytes.NewReader(pubKey)); err != nil {
		t.Fatal(err)
	}
	if _, err := xopenpgp.ReadArmoredKeyRing(bytes.NewReader(pubKey)); err != nil {
		t.Fatal(err)
	}

	// And GenerateKey's keys have full-length self-signatures.
	gen := testKey(t)
	for _, s := range []*packet.Signature{gen.PrimaryIdentity().SelfSignature, gen.Subkeys[0].Sig} {
		if got, want := mpiLen(s), modulusLen(gen.PrimaryKey); got != want {
			t.Errorf("generated key: self-signature of type %v: MPI of %d bytes, modulus of %d", s.SigType, got, want)
		}
	}
}
