package ocisign

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"io"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"

	"github.com/nix2aci/nix2aci/sign"
)

// signHash is the digest signatures are made with. Every verifier of
// simple signing (GnuPG through gpgme, golang.org/x/crypto/openpgp)
// knows it.
const signHash = crypto.SHA512

// minRSABits is the shortest RSA modulus Sign uses.
const minRSABits = 2048

// makeKeyHint is how the errors about an unusable key end: the key that
// works everywhere.
const makeKeyHint = "make an RSA key, whose primary key signs: nix2aci key generate --name NAME --email EMAIL --out key.asc --public pub.asc (or gpg --quick-gen-key 'NAME <EMAIL>' rsa4096 sign)"

// Sign writes the simple signing signature of payload (see Payload) made
// with key: an OpenPGP signed message, binary (not armored) and not
// detached, holding a one-pass signature packet, the payload as literal
// data and the signature, hashed with SHA-512, dated now.
//
// The signature is made by key's primary key, which must be RSA of at
// least 2048 bits, version 4, allowed to sign, unlocked, and neither
// expired nor revoked. podman 4.3 and skopeo 1.9 check signatures with
// GnuPG (through gpgme) and accept only one made by the primary key of a
// key the policy names, so a key that signs with a subkey is refused
// here rather than after publishing; GnuPG 2.2 cannot read version 5 and
// 6 keys (new-style Ed25519 among them); and builds of containers/image
// without gpgme check signatures with golang.org/x/crypto/openpgp, which
// has no EdDSA, so RSA is the one algorithm every client verifies. An
// unusable key is a *sign.KeyError saying how to make one that works.
func Sign(w io.Writer, key *openpgp.Entity, payload []byte) error {
	return SignAt(w, key, payload, time.Now())
}

// SignAt is Sign with the signature dated at instead of now.
func SignAt(w io.Writer, key *openpgp.Entity, payload []byte, at time.Time) error {
	if _, err := ParsePayload(payload); err != nil {
		return fmt.Errorf("not signing it: %w", err)
	}
	if err := CheckSigningKey(key, at); err != nil {
		return err
	}
	msg, err := signedMessage(key, payload, at)
	if err != nil {
		return &sign.KeyError{Msg: fmt.Sprintf("signing with key %s: %v", sign.Fingerprint(key), err)}
	}
	_, err = w.Write(msg)
	return err
}

// CheckSigningKey says why key cannot make signatures that podman and
// skopeo accept (at being the time they are dated), as a *sign.KeyError,
// or returns nil. See Sign.
func CheckSigningKey(key *openpgp.Entity, at time.Time) error {
	if key == nil || key.PrimaryKey == nil {
		return &sign.KeyError{Msg: "no signing key"}
	}
	fp := sign.Fingerprint(key)
	pk := key.PrimaryKey
	if key.PrivateKey == nil {
		return &sign.KeyError{Msg: fmt.Sprintf("key %s is a public key; signing needs the private key (gpg --export-secret-keys --armor)", fp)}
	}
	if key.PrivateKey.Dummy() {
		return &sign.KeyError{Msg: fmt.Sprintf("the file holds only the subkeys' secrets of key %s (gpg --export-secret-subkeys); podman and skopeo accept only signatures by the primary key, so export it with gpg --export-secret-keys --armor", fp)}
	}
	if key.PrivateKey.Encrypted {
		return &sign.KeyError{Msg: fmt.Sprintf("key %s is still locked by its passphrase", fp)}
	}
	if pk.Version != 4 {
		return &sign.KeyError{Msg: fmt.Sprintf("key %s is a version %d OpenPGP key; the GnuPG 2.2 that podman 4.3 and skopeo 1.9 verify with reads only version 4 keys; %s", fp, pk.Version, makeKeyHint)}
	}
	switch pk.PubKeyAlgo {
	case packet.PubKeyAlgoRSA, packet.PubKeyAlgoRSASignOnly:
	default:
		return &sign.KeyError{Msg: fmt.Sprintf("key %s is %s; container signatures need an RSA key, the one kind every podman and skopeo build can check (builds without gpgme cannot check EdDSA or ECDSA); %s", fp, algorithmName(pk.PubKeyAlgo), makeKeyHint)}
	}
	if bits, err := pk.BitLength(); err != nil || bits < minRSABits {
		return &sign.KeyError{Msg: fmt.Sprintf("key %s is RSA of %d bits, too short to trust; %s", fp, bits, makeKeyHint)}
	}
	self, id := key.PrimarySelfSignature()
	if self == nil {
		return &sign.KeyError{Msg: fmt.Sprintf("key %s has no valid self-signature", fp)}
	}
	if self.FlagsValid && !self.FlagSign {
		return &sign.KeyError{Msg: fmt.Sprintf("the primary key of %s may not sign (it certifies only, and its subkeys sign); podman and skopeo accept only signatures made by the primary key; %s", fp, makeKeyHint)}
	}
	if key.Revoked(at) || id != nil && id.Revoked(at) {
		return &sign.KeyError{Msg: fmt.Sprintf("key %s has been revoked; %s", fp, makeKeyHint)}
	}
	if pk.KeyExpired(self, at) {
		return &sign.KeyError{Msg: fmt.Sprintf("key %s has expired (or is dated after %s); extend it with gpg --quick-set-expire, or make a new one: %s", fp, at.UTC().Format(time.RFC3339), makeKeyHint)}
	}
	return nil
}

func algorithmName(a packet.PublicKeyAlgorithm) string {
	switch a {
	case packet.PubKeyAlgoEdDSA:
		return "an EdDSA (ed25519) key"
	case packet.PubKeyAlgoEd25519:
		return "a new-style Ed25519 key"
	case packet.PubKeyAlgoEd448:
		return "an Ed448 key"
	case packet.PubKeyAlgoECDSA:
		return "an ECDSA key"
	case packet.PubKeyAlgoDSA:
		return "a DSA key"
	}
	return fmt.Sprintf("a key of algorithm %d, which cannot make these signatures", a)
}

// signedMessage returns the signed message of payload by key's primary
// key. An RSA signature is an integer below the modulus and OpenPGP
// writes it without leading zero bytes, so about one in 256 is shorter
// than the modulus; golang.org/x/crypto/openpgp (containers/image
// without gpgme, and rkt) refuses those (sign.FullLength). Such a
// signature is made again with a salt notation of 32 random bytes (not
// critical: clients skip it), which changes what is signed, at most
// sign.MaxSignTries times. Its date stays at: dated earlier, it could
// come before the key's own creation, which gpgme refuses.
func signedMessage(key *openpgp.Entity, payload []byte, at time.Time) ([]byte, error) {
	pk := key.PrimaryKey
	if _, ok := pk.PublicKey.(*rsa.PublicKey); !ok {
		return nil, fmt.Errorf("the primary key is not RSA")
	}
	for try := 0; ; try++ {
		sig := &packet.Signature{
			Version:           4,
			SigType:           packet.SigTypeBinary,
			PubKeyAlgo:        pk.PubKeyAlgo,
			Hash:              signHash,
			CreationTime:      at,
			IssuerKeyId:       &pk.KeyId,
			IssuerFingerprint: pk.Fingerprint,
		}
		if try > 0 {
			salt := make([]byte, 32)
			if _, err := rand.Read(salt); err != nil {
				return nil, err
			}
			sig.Notations = []*packet.Notation{{Name: saltNotation, Value: salt}}
		}
		h, err := sig.PrepareSign(nil)
		if err != nil {
			return nil, err
		}
		h.Write(payload)
		if err := sig.Sign(h, key.PrivateKey, nil); err != nil {
			return nil, err
		}
		if !sign.FullLength(sig, pk) {
			if try+1 == sign.MaxSignTries {
				return nil, fmt.Errorf("%d signatures in a row came out shorter than the key's modulus, which a working RSA key does once in 256: the key is broken; make a new one (nix2aci key generate)", try+1)
			}
			continue
		}
		var buf bytes.Buffer
		ops := &packet.OnePassSignature{Version: 3, SigType: sig.SigType, Hash: sig.Hash, PubKeyAlgo: sig.PubKeyAlgo, KeyId: pk.KeyId, IsLast: true}
		if err := ops.Serialize(&buf); err != nil {
			return nil, err
		}
		lit, err := packet.SerializeLiteral(nopCloser{&buf}, true, "", 0)
		if err != nil {
			return nil, err
		}
		lit.Write(payload)
		if err := lit.Close(); err != nil {
			return nil, err
		}
		if err := sig.Serialize(&buf); err != nil {
			return nil, err
		}
		return buf.Bytes(), nil
	}
}

// saltNotation names the notation that salts a signature made again.
const saltNotation = "salt@nix2aci.io"

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }
