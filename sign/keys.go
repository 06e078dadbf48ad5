package sign

import (
	"bytes"
	"crypto"
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
	if len(o.Passphrase) > 0 {
		if err := e.EncryptPrivateKeys(o.Passphrase, cfg); err != nil {
			return nil, fmt.Errorf("protecting key: %w", err)
		}
	}
	return e, nil
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

// ReadKey reads one armored key, public or private.
func ReadKey(r io.Reader) (*openpgp.Entity, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	el, err := openpgp.ReadArmoredKeyRing(bytes.NewReader(data))
	if err != nil {
		if len(bytes.TrimSpace(data)) == 0 {
			return nil, &KeyError{Msg: "the key file is empty"}
		}
		return nil, &KeyError{Msg: "not an armored OpenPGP key (" + err.Error() + "); export one with nix2aci key generate or gpg --export-secret-keys --armor"}
	}
	if len(el) != 1 {
		return nil, &KeyError{Msg: fmt.Sprintf("the file holds %d keys; give one", len(el))}
	}
	return el[0], nil
}

// ReadSigningKey reads an armored private key and unlocks it, asking
// passphrase for the passphrase only if the key is protected.
func ReadSigningKey(r io.Reader, passphrase func() ([]byte, error)) (*openpgp.Entity, error) {
	e, err := ReadKey(r)
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
