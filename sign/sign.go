package sign

import (
	"crypto"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
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

// Detached writes an armored detached SHA-512 signature of everything read
// from r, made with key (which must be unlocked).
func Detached(w io.Writer, key *openpgp.Entity, r io.Reader, opts ...Option) error {
	var sc signConfig
	for _, o := range opts {
		o(&sc)
	}
	cfg := &packet.Config{DefaultHash: crypto.SHA512}
	if !sc.now.IsZero() {
		now := sc.now
		cfg.Time = func() time.Time { return now }
	}
	if sc.image != "" {
		cfg.SignatureNotations = []*packet.Notation{{Name: notationName, Value: []byte(sc.image), IsHumanReadable: true}}
	}
	if key.PrivateKey == nil {
		return &KeyError{Msg: "signing needs a private key"}
	}
	if encrypted(key) {
		return &KeyError{Msg: "the signing key is still locked by its passphrase"}
	}
	if err := openpgp.ArmoredDetachSign(w, key, r, cfg); err != nil {
		return &KeyError{Msg: fmt.Sprintf("signing with key %s: %v", Fingerprint(key), err)}
	}
	_, err := io.WriteString(w, "\n")
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
	return asc, writeAtomic(asc, func(w io.Writer) error { return Detached(w, key, f, opts...) })
}

// writeAtomic writes path (mode 0644) with write, through a temporary file
// in the same directory: path never holds half a file.
func writeAtomic(path string, write func(io.Writer) error) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	err = write(tmp)
	if err == nil {
		err = tmp.Chmod(0o644)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
