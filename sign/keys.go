package sign

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	pgperrors "github.com/ProtonMail/go-crypto/openpgp/errors"
	"github.com/ProtonMail/go-crypto/openpgp/packet"

	"github.com/nix2aci/nix2aci/internal/safeio"
)

// Algorithm names a kind of key GenerateKey makes.
type Algorithm string

const (
	RSA4096 Algorithm = "rsa4096" // the default: rkt can verify it
	Ed25519 Algorithm = "ed25519" // rkt cannot verify EdDSA signatures
)

// KeyOptions describe a new key.
type KeyOptions struct {
	Name, Comment, Email string
	Algorithm            Algorithm
	// Passphrase protects the private key; empty leaves it unprotected.
	Passphrase []byte
	// Lifetime is how long the key is valid; zero means it never expires.
	Lifetime time.Duration
	// Now is the key's creation time; zero means the current time.
	Now time.Time
}

// KeyError reports a key that cannot be used: unreadable, without a
// private part, or locked by a passphrase that was wrong or not given.
type KeyError struct{ Msg string }

func (e *KeyError) Error() string { return e.Msg }

// GenerateKey makes a new signing key.
func GenerateKey(o KeyOptions) (*openpgp.Entity, error) {
	if o.Name == "" || o.Email == "" {
		return nil, errors.New("a key needs a name and an email (--name, --email)")
	}
	cfg := &packet.Config{DefaultHash: crypto.SHA512, KeyLifetimeSecs: uint32(o.Lifetime / time.Second)}
	if !o.Now.IsZero() {
		now := o.Now
		cfg.Time = func() time.Time { return now }
	}
	switch o.Algorithm {
	case RSA4096, "":
		cfg.Algorithm, cfg.RSABits = packet.PubKeyAlgoRSA, 4096
	case Ed25519:
		cfg.Algorithm, cfg.Curve = packet.PubKeyAlgoEdDSA, packet.Curve25519
	default:
		return nil, fmt.Errorf("unknown key algorithm %q: use rsa4096 or ed25519", o.Algorithm)
	}
	e, err := openpgp.NewEntity(o.Name, o.Comment, o.Email, cfg)
	if err != nil {
		return nil, fmt.Errorf("generating key: %w", err)
	}
	if err := fullLengthSelfSignatures(e); err != nil {
		return nil, fmt.Errorf("generating key: %w", err)
	}
	if len(o.Passphrase) > 0 {
		if err := e.EncryptPrivateKeys(o.Passphrase, cfg); err != nil {
			return nil, fmt.Errorf("protecting key: %w", err)
		}
	}
	return e, nil
}

// fullLengthSelfSignatures signs again each RSA self-signature of e (its
// user IDs' and its subkeys' bindings) that is shorter than the modulus,
// until none is. rkt reads a trusted key with the same x/crypto/openpgp
// that checks images, and an rkt built with Go 1.20 or later refuses a key
// whose self-signature is short, as it refuses such an image signature
// (see Detached).
func fullLengthSelfSignatures(e *openpgp.Entity) error {
	// go-crypto salts each signature with a random notation: a new try has
	// a new hash. A version 6 signature has a salt of its own, drawn anew.
	cfg := &packet.Config{NonDeterministicSignaturesViaNotation: packet.BoolPointer(true)}
	resign := func(s *packet.Signature, sign func() error) error {
		for try := 0; !FullLength(s, e.PrimaryKey); try++ {
			if try == MaxSignTries {
				return fmt.Errorf("%d self-signatures in a row came out shorter than the key's modulus, which a working RSA key does once in 256", MaxSignTries)
			}
			if s.Version == 6 {
				salt, err := packet.SignatureSaltForHash(s.Hash, rand.Reader)
				if err != nil {
					return err
				}
				if err := s.SetSalt(salt); err != nil {
					return err
				}
			}
			if err := sign(); err != nil {
				return err
			}
		}
		return nil
	}
	for _, id := range e.Identities {
		s := id.SelfSignature
		if err := resign(s, func() error { return s.SignUserId(id.Name, e.PrimaryKey, e.PrivateKey, cfg) }); err != nil {
			return err
		}
	}
	for _, sub := range e.Subkeys {
		if err := resign(sub.Sig, func() error { return sub.Sig.SignKey(sub.PublicKey, e.PrivateKey, cfg) }); err != nil {
			return err
		}
	}
	return nil
}

// WritePrivateKey writes e's private key, armored (still encrypted if it
// was generated with a passphrase).
func WritePrivateKey(w io.Writer, e *openpgp.Entity) error {
	aw, err := armor.Encode(w, openpgp.PrivateKeyType, nil)
	if err != nil {
		return err
	}
	if err := e.SerializePrivateWithoutSigning(aw, nil); err != nil {
		return err
	}
	if err := aw.Close(); err != nil {
		return err
	}
	_, err = io.WriteString(w, "\n")
	return err
}

// WritePublicKey writes e's public key, armored: what `rkt trust` and
// `nix2aci trust` take.
func WritePublicKey(w io.Writer, e *openpgp.Entity) error {
	aw, err := armor.Encode(w, openpgp.PublicKeyType, nil)
	if err != nil {
		return err
	}
	if err := e.Serialize(aw); err != nil {
		return err
	}
	if err := aw.Close(); err != nil {
		return err
	}
	_, err = io.WriteString(w, "\n")
	return err
}

// maxKeyFile bounds what is read of a key file or keyring.
const maxKeyFile = 1 << 20

// ReadKey reads one armored key, public or private.
func ReadKey(r io.Reader) (*openpgp.Entity, error) {
	el, err := ReadKeys(r)
	if err != nil {
		return nil, err
	}
	if len(el) != 1 {
		return nil, &KeyError{Msg: fmt.Sprintf("the file holds %d keys (%s); give one", len(el), listKeys(el))}
	}
	return el[0], nil
}

// ReadKeys reads every key of an armored keyring of at most 1 MiB.
func ReadKeys(r io.Reader) (openpgp.EntityList, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxKeyFile+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxKeyFile {
		return nil, &KeyError{Msg: "the key file is over 1 MiB; a key is a few KiB"}
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, &KeyError{Msg: "the key file is empty"}
	}
	// A file may hold several armored blocks (cat a.asc b.asc): read
	// them all, so that no key in it is ignored.
	var el openpgp.EntityList
	for _, b := range armoredBlocks(data) {
		keys, err := openpgp.ReadArmoredKeyRing(bytes.NewReader(b))
		if err != nil {
			return nil, &KeyError{Msg: "not an armored OpenPGP key (" + safeio.Quote(err.Error()) + "); export one with nix2aci key generate or gpg --export-secret-keys --armor"}
		}
		el = append(el, keys...)
	}
	if len(el) == 0 {
		return nil, &KeyError{Msg: "not an armored OpenPGP key (no -----BEGIN PGP block); export one with nix2aci key generate or gpg --export-secret-keys --armor"}
	}
	return el, nil
}

// armoredBlocks splits data into its "-----BEGIN PGP" ... "-----END PGP
// ...-----" blocks.
func armoredBlocks(data []byte) [][]byte {
	var out [][]byte
	for rest := data; ; {
		i := bytes.Index(rest, []byte("-----BEGIN PGP "))
		if i < 0 {
			return out
		}
		rest = rest[i:]
		j := bytes.Index(rest, []byte("-----END PGP "))
		if j < 0 {
			return append(out, rest)
		}
		k := bytes.IndexByte(rest[j:], '\n')
		if k < 0 {
			return append(out, rest)
		}
		out = append(out, rest[:j+k+1])
		rest = rest[j+k+1:]
	}
}

// SelectKey returns the key of keys that id names: a fingerprint or a
// 16-digit long key ID, in any case, spaces ignored. With id empty, keys
// must hold exactly one key: a signer never guesses which to use.
func SelectKey(keys openpgp.EntityList, id string) (*openpgp.Entity, error) {
	want := strings.ToLower(strings.Join(strings.Fields(id), ""))
	if want == "" {
		if len(keys) == 1 {
			return keys[0], nil
		}
		return nil, &KeyError{Msg: fmt.Sprintf("the key file holds %d keys (%s); choose one with --key-id FINGERPRINT", len(keys), listKeys(keys))}
	}
	for _, e := range keys {
		fp := Fingerprint(e)
		if fp == want || len(want) == 16 && strings.HasSuffix(fp, want) {
			return e, nil
		}
	}
	return nil, &KeyError{Msg: fmt.Sprintf("no key %s in the key file; it holds %s", safeio.Quote(id), listKeys(keys))}
}

func listKeys(keys openpgp.EntityList) string {
	var parts []string
	for _, e := range keys {
		parts = append(parts, Fingerprint(e)+" "+safeio.Quote(UserID(e)))
	}
	return strings.Join(parts, ", ")
}

// ReadSigningKey reads an armored private key and unlocks it, asking
// passphrase for the passphrase only if the key is protected.
func ReadSigningKey(r io.Reader, passphrase func() ([]byte, error)) (*openpgp.Entity, error) {
	return ReadSigningKeyID(r, "", passphrase)
}

// ReadSigningKeyID is ReadSigningKey for the key id names (see SelectKey)
// in a file that may hold several.
func ReadSigningKeyID(r io.Reader, id string, passphrase func() ([]byte, error)) (*openpgp.Entity, error) {
	el, err := ReadKeys(r)
	if err != nil {
		return nil, err
	}
	e, err := SelectKey(el, id)
	if err != nil {
		return nil, err
	}
	if e.PrivateKey == nil {
		return nil, &KeyError{Msg: "this is a public key; signing needs the private key (gpg --export-secret-keys --armor)"}
	}
	if !encrypted(e) {
		return e, nil
	}
	pass, err := passphrase()
	if err != nil {
		return nil, err
	}
	if err := e.DecryptPrivateKeys(pass); err != nil {
		if errors.Is(err, pgperrors.ErrKeyIncorrect) || strings.Contains(err.Error(), "incorrect") || strings.Contains(err.Error(), "checksum") {
			return nil, &KeyError{Msg: "wrong passphrase for key " + Fingerprint(e)}
		}
		return nil, &KeyError{Msg: "unlocking key " + Fingerprint(e) + ": " + err.Error()}
	}
	return e, nil
}

func encrypted(e *openpgp.Entity) bool {
	if e.PrivateKey != nil && e.PrivateKey.Encrypted {
		return true
	}
	for _, s := range e.Subkeys {
		if s.PrivateKey != nil && s.PrivateKey.Encrypted {
			return true
		}
	}
	return false
}

// IsEncrypted reports whether e's private key needs a passphrase.
func IsEncrypted(e *openpgp.Entity) bool { return encrypted(e) }

// Fingerprint is e's primary key fingerprint in lower-case hex, the name
// rkt's trust store gives its file.
func Fingerprint(e *openpgp.Entity) string { return hex.EncodeToString(e.PrimaryKey.Fingerprint) }

// UserID is e's primary identity, e.g. "Build Bot <bot@example.com>".
func UserID(e *openpgp.Entity) string {
	if id := e.PrimaryIdentity(); id != nil {
		return id.Name
	}
	return ""
}
