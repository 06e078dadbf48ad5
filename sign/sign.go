package sign

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"

	"github.com/nix2aci/nix2aci/internal/safeio"
)

// notationName is the notation nix2aci signatures carry: "<name> <image ID>".
const notationName = "image@nix2aci.io"

type signConfig struct {
	now   time.Time
	image string
}

// Option changes how Detached signs.
type Option func(*signConfig)

// WithTime signs as of t instead of now.
func WithTime(t time.Time) Option { return func(c *signConfig) { c.now = t } }

// WithImage records the image's name and ID in the signature, so Verify
// can say when a signature belongs to another image.
func WithImage(name, imageID string) Option {
	return func(c *signConfig) { c.image = name + " " + imageID }
}

// saltNotation names the notation that salts each signature nix2aci
// writes: 32 random bytes, drawn anew for each try of Detached, so that
// every try signs a new hash.
const saltNotation = "salt@nix2aci.io"

// MaxSignTries bounds how often a signature is made again when an RSA
// signature comes out shorter than the key's modulus (see FullLength): by
// Detached, by a key's self-signatures and by container signatures
// (package ocisign). A working key makes a short one once in 256 tries, so
// 64 in a row (once in 2^512) mean a broken key.
const MaxSignTries = 64

// newSalt returns the value of a try's salt notation; tests replace it.
var newSalt = func() ([]byte, error) {
	b := make([]byte, 32)
	_, err := rand.Read(b)
	return b, err
}

// Detached writes an armored detached SHA-512 signature of everything read
// from r, made with key (which must be unlocked). It writes nothing unless
// it signed.
//
// An RSA signature is an MPI, which OpenPGP writes without its leading zero
// bytes, so about one in 256 is shorter than the modulus. rkt checks
// signatures with the old x/crypto/openpgp, which hands those bytes to
// crypto/rsa as they are, and since Go 1.20 rsa.VerifyPKCS1v15 refuses a
// signature shorter than the modulus: an rkt built with today's Go would
// refuse one image in 256. Detached therefore hashes the data once and signs
// it again, with a new salt notation (and so a new hash), until the
// signature is as long as the modulus.
func Detached(w io.Writer, key *openpgp.Entity, r io.Reader, opts ...Option) error {
	var sc signConfig
	for _, o := range opts {
		o(&sc)
	}
	if sc.now.IsZero() {
		sc.now = time.Now()
	}
	if key.PrivateKey == nil {
		return &KeyError{Msg: "signing needs a private key"}
	}
	if encrypted(key) {
		return &KeyError{Msg: "the signing key is still locked by its passphrase"}
	}
	signer, ok := key.SigningKey(sc.now)
	if !ok {
		return &KeyError{Msg: fmt.Sprintf("signing with key %s: it has no valid signing key (expired, revoked, or none may sign)", Fingerprint(key))}
	}
	if signer.PrivateKey == nil || signer.PrivateKey.Dummy() {
		return &KeyError{Msg: fmt.Sprintf("signing with key %s: the file holds no private part of its signing key %s", Fingerprint(key), signer.PublicKey.KeyIdString())}
	}
	// The salt notation is ours: go-crypto's would be a second one.
	cfg := &packet.Config{DefaultHash: crypto.SHA512, NonDeterministicSignaturesViaNotation: packet.BoolPointer(false)}
	newSig := func() *packet.Signature {
		var notations []*packet.Notation
		if sc.image != "" {
			notations = append(notations, &packet.Notation{Name: notationName, Value: []byte(sc.image), IsHumanReadable: true})
		}
		return &packet.Signature{
			Version:           signer.PublicKey.Version,
			SigType:           packet.SigTypeBinary,
			PubKeyAlgo:        signer.PublicKey.PubKeyAlgo,
			Hash:              crypto.SHA512,
			CreationTime:      sc.now,
			IssuerKeyId:       &signer.PublicKey.KeyId,
			IssuerFingerprint: signer.PublicKey.Fingerprint,
			Notations:         notations,
		}
	}

	// The data is hashed once; each try signs a copy of that hash state
	// followed by its own hashed subpackets. (A version 6 signature's salt
	// is hashed before the data, so every try keeps the first one's; only
	// one try is ever written.)
	first := newSig()
	h, err := first.PrepareSign(cfg)
	if err != nil {
		return &KeyError{Msg: fmt.Sprintf("signing with key %s: %v", Fingerprint(key), err)}
	}
	if _, err := io.Copy(h, r); err != nil {
		return err
	}
	hashed, ok := h.(hash.Cloner)
	if !ok {
		return errors.New("signing: the SHA-512 state cannot be copied")
	}
	for range MaxSignTries {
		salt, err := newSalt()
		if err != nil {
			return err
		}
		sig := newSig()
		sig.Notations = append(sig.Notations, &packet.Notation{Name: saltNotation, Value: salt})
		if err := sig.SetSalt(first.Salt()); err != nil {
			return err
		}
		hc, err := hashed.Clone()
		if err != nil {
			return err
		}
		if err := sig.Sign(hc, signer.PrivateKey, cfg); err != nil {
			return &KeyError{Msg: fmt.Sprintf("signing with key %s: %v", Fingerprint(key), err)}
		}
		if FullLength(sig, signer.PublicKey) {
			return writeArmored(w, sig)
		}
	}
	return &KeyError{Msg: fmt.Sprintf("signing with key %s: %d signatures in a row came out shorter than the key's modulus, which a working RSA key does once in 256: the key is broken; make a new one (nix2aci key generate)", Fingerprint(key), MaxSignTries)}
}

// FullLength reports whether sig, if it is an RSA signature, is as long as
// the modulus of pub, the key that made it. Other signatures have no such
// trouble. A signature that is not is refused by
// golang.org/x/crypto/openpgp since Go 1.20 (rkt, and containers/image
// built without gpgme): signers make it again, at most MaxSignTries times.
func FullLength(sig *packet.Signature, pub *packet.PublicKey) bool {
	k, ok := pub.PublicKey.(*rsa.PublicKey)
	if !ok || sig.RSASignature == nil {
		return true
	}
	return (int(sig.RSASignature.BitLength())+7)/8 == k.Size()
}

// writeArmored writes sig armored, followed by a newline, in one write.
func writeArmored(w io.Writer, sig *packet.Signature) error {
	var buf bytes.Buffer
	aw, err := armor.Encode(&buf, openpgp.SignatureType, nil)
	if err != nil {
		return err
	}
	if err := sig.Serialize(aw); err != nil {
		return err
	}
	if err := aw.Close(); err != nil {
		return err
	}
	buf.WriteString("\n")
	_, err = w.Write(buf.Bytes())
	return err
}

// SignFile signs the file at path, writing path+".asc" atomically, and
// returns the signature's path.
func SignFile(path string, key *openpgp.Entity, opts ...Option) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	asc := path + ".asc"
	return asc, safeio.WriteAtomic(asc, 0o644, func(w io.Writer) error { return Detached(w, key, f, opts...) })
}
