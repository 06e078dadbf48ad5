package sign_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"

	"github.com/nix2aci/nix2aci/sign"
)

// No prefix leads out of the trust store, and none is silently rewritten.
func TestWriteTrustRefusesPrefixesThatAreNotIdentifiers(t *testing.T) {
	key := testKey(t)
	top := t.TempDir()
	dir := filepath.Join(top, "trust")
	for _, p := range []string{"a/../../../escaped", "a//b", "a/./b", "Example.com", "a/", "/abs", ".."} {
		_, err := sign.WriteTrust(dir, p, false, key)
		var pe *sign.PrefixError
		if !errors.As(err, &pe) {
			t.Errorf("prefix %q: got %v, want a PrefixError", p, err)
		}
	}
	if ents, _ := os.ReadDir(top); len(ents) != 0 {
		t.Errorf("refused prefixes wrote %v", ents)
	}
	p, err := sign.WriteTrust(dir, "example.com/app", false, key)
	if err != nil || p != filepath.Join(dir, "prefix.d", "example.com", "app", sign.Fingerprint(key)) {
		t.Fatalf("WriteTrust = %q, %v", p, err)
	}
	// An unwritable store is an I/O failure, not a bad prefix.
	ro := filepath.Join(top, "ro")
	os.WriteFile(ro, nil, 0o644) // a file where a directory must go
	if _, err := sign.WriteTrust(filepath.Join(ro, "trust"), "example.com", false, key); err == nil || errors.As(err, new(*sign.PrefixError)) {
		t.Errorf("unwritable store: got %v, want an I/O error", err)
	}
}

// A trust store holds directories and key files only: anything else that
// could hand a key to whoever controls it makes the store unreadable.
func TestLoadTrustDirRefusesWhatIsNotAKeyFile(t *testing.T) {
	key := testKey(t)
	fp := sign.Fingerprint(key)
	for _, tc := range []struct {
		name  string
		setup func(dir string)
		err   string
	}{
		{"symlinked key file", func(dir string) {
			os.MkdirAll(filepath.Join(dir, "root.d"), 0o755)
			elsewhere := filepath.Join(t.TempDir(), fp)
			os.WriteFile(elsewhere, pub(t, key), 0o644)
			os.Symlink(elsewhere, filepath.Join(dir, "root.d", fp))
		}, "is a symlink"},
		{"FIFO", func(dir string) {
			os.MkdirAll(filepath.Join(dir, "root.d"), 0o755)
			syscall.Mkfifo(filepath.Join(dir, "root.d", fp), 0o644)
		}, "is not a regular file"},
		{"world-writable key", func(dir string) {
			os.MkdirAll(filepath.Join(dir, "root.d"), 0o755)
			f := filepath.Join(dir, "root.d", fp)
			os.WriteFile(f, pub(t, key), 0o644)
			os.Chmod(f, 0o666)
		}, "chmod o-w"},
		{"world-writable directory", func(dir string) {
			os.MkdirAll(filepath.Join(dir, "prefix.d", "example.com"), 0o755)
			os.Chmod(filepath.Join(dir, "prefix.d", "example.com"), 0o777)
		}, "can be written by anyone"},
		{"huge key file", func(dir string) {
			os.MkdirAll(filepath.Join(dir, "root.d"), 0o755)
			os.WriteFile(filepath.Join(dir, "root.d", fp), make([]byte, 2<<20), 0o644)
		}, "more than the 1048576"},
		{"directory instead of a key", func(dir string) {
			os.MkdirAll(filepath.Join(dir, "root.d", "sub"), 0o755)
			os.WriteFile(filepath.Join(dir, "root.d", "sub", fp), pub(t, key), 0o644)
		}, "is not at root.d/<fingerprint>"},
		{"prefix directory that is not an identifier", func(dir string) {
			os.MkdirAll(filepath.Join(dir, "prefix.d", "Example.com"), 0o755)
			os.WriteFile(filepath.Join(dir, "prefix.d", "Example.com", fp), pub(t, key), 0o644)
		}, "prefix.d/<AC Identifier>"},
	} {
		dir := t.TempDir()
		tc.setup(dir)
		if _, err := sign.LoadTrustDir(dir); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: got %v, want an error containing %q", tc.name, err, tc.err)
		}
	}
	if _, err := sign.LoadTrustDir(filepath.Join(t.TempDir(), "missing")); err == nil || !strings.Contains(err.Error(), "does not exist: fill it with nix2aci trust") {
		t.Errorf("missing store: got %v", err)
	}
}

// A key file holding several keys: the signer never guesses.
func TestSelectKey(t *testing.T) {
	a := testKey(t)
	b, _ := sign.GenerateKey(sign.KeyOptions{Name: "Second", Email: "second@example.com", Algorithm: sign.Ed25519})
	// gpg --export-secret-keys --armor of two keys: one block, two keys.
	var both bytes.Buffer
	w, _ := armor.Encode(&both, openpgp.PrivateKeyType, nil)
	a.SerializePrivateWithoutSigning(w, nil)
	b.SerializePrivateWithoutSigning(w, nil)
	w.Close()
	keys, err := sign.ReadKeys(bytes.NewReader(both.Bytes()))
	if err != nil || len(keys) != 2 {
		t.Fatalf("ReadKeys: %d keys, %v", len(keys), err)
	}
	if _, err := sign.SelectKey(keys, ""); err == nil || !strings.Contains(err.Error(), "choose one with --key-id") || !strings.Contains(err.Error(), sign.Fingerprint(b)) {
		t.Errorf("no id: %v", err)
	}
	fpB := sign.Fingerprint(b)
	for _, id := range []string{fpB, strings.ToUpper(fpB), fpB[24:], strings.ToUpper(fpB[24:28]) + " " + fpB[28:]} {
		if e, err := sign.SelectKey(keys, id); err != nil || e != keys[1] {
			t.Errorf("id %q: %v", id, err)
		}
	}
	if _, err := sign.SelectKey(keys, "0000000000000000"); err == nil || !strings.Contains(err.Error(), "it holds") {
		t.Errorf("unknown id: %v", err)
	}
	if _, err := sign.ReadSigningKeyID(bytes.NewReader(both.Bytes()), fpB, nil); err != nil {
		t.Errorf("ReadSigningKeyID: %v", err)
	}
}
