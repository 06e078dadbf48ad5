package sign_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	xopenpgp "golang.org/x/crypto/openpgp"

	"github.com/nix2aci/nix2aci/aci"
	"github.com/nix2aci/nix2aci/internal/testsupport"
	"github.com/nix2aci/nix2aci/sign"
)

// makeACI returns a small valid ACI named name whose one file holds body.
func makeACI(t testing.TB, name, body string) []byte {
	t.Helper()
	m := fmt.Sprintf(`{"acKind":"ImageManifest","acVersion":"0.8.11","name":%q,"labels":[{"name":"os","value":"linux"},{"name":"arch","value":"amd64"}]}`, name)
	b, _ := aciOf(t, m, body)
	return b
}

// aciOf returns the gzipped ACI of the manifest m (JSON) whose one file,
// rootfs/data, holds body, and its image ID; aci.Inspect must read it.
func aciOf(t testing.TB, m, body string) ([]byte, string) {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, f := range []struct{ name, body string }{{"manifest", m}, {"rootfs/", ""}, {"rootfs/data", body}} {
		h := &tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.body)), Typeflag: tar.TypeReg}
		if strings.HasSuffix(f.name, "/") {
			h.Typeflag, h.Mode = tar.TypeDir, 0o755
		}
		tw.WriteHeader(h)
		tw.Write([]byte(f.body))
	}
	tw.Close()
	zw.Close()
	info, err := aci.Inspect(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), info.ImageID
}

var (
	rsaOnce sync.Once
	rsaKey  *openpgp.Entity
)

// testKey is one RSA 4096 key for the whole test binary (they are slow).
func testKey(t testing.TB) *openpgp.Entity {
	rsaOnce.Do(func() {
		var err error
		rsaKey, err = sign.GenerateKey(sign.KeyOptions{Name: "Test Signer", Email: "signer@example.com"})
		if err != nil {
			t.Fatal(err)
		}
	})
	return rsaKey
}

func signBytes(t testing.TB, key *openpgp.Entity, data []byte, opts ...sign.Option) []byte {
	t.Helper()
	var sig bytes.Buffer
	if err := sign.Detached(&sig, key, bytes.NewReader(data), opts...); err != nil {
		t.Fatal(err)
	}
	return sig.Bytes()
}

func withImage(t testing.TB, img []byte) sign.Option {
	info, err := aci.Inspect(bytes.NewReader(img))
	if err != nil {
		t.Fatal(err)
	}
	return sign.WithImage(info.Manifest.Name.String(), info.ImageID)
}

func pub(t testing.TB, key *openpgp.Entity) []byte {
	var b bytes.Buffer
	if err := sign.WritePublicKey(&b, key); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func rootTrust(keys ...*openpgp.Entity) *sign.Trust {
	tr := sign.NewTrust()
	for _, k := range keys {
		tr.AddRoot(k)
	}
	return tr
}

func TestGPGAcceptsOurSignatures(t *testing.T) {
	key := testKey(t)
	img := makeACI(t, "example.com/app", "hello")
	sig := signBytes(t, key, img, withImage(t, img))
	g := testsupport.NewGPG(t)
	g.Run(pub(t, key), "--import")
	out, err := g.Try(nil, "--verify", g.File("x.aci.asc", sig), g.File("x.aci", img))
	if err != nil || !strings.Contains(string(out), `Good signature from "Test Signer <signer@example.com>"`) {
		t.Fatalf("gpg --verify: %v\n%s", err, out)
	}
	// A changed file fails gpg too.
	if _, err := g.Try(nil, "--verify", g.File("y.aci.asc", sig), g.File("y.aci", append(bytes.Clone(img), 0))); err == nil {
		t.Error("gpg accepted a signature over a changed file")
	}
}

// rkt checks signatures with golang.org/x/crypto/openpgp; it must accept
// ours (RSA) too, notation and all.
func TestRktCodePathAcceptsOurSignatures(t *testing.T) {
	key := testKey(t)
	img := makeACI(t, "example.com/app", "hello")
	sig := signBytes(t, key, img, withImage(t, img))
	kr, err := xopenpgp.ReadArmoredKeyRing(bytes.NewReader(pub(t, key)))
	if err != nil {
		t.Fatal(err)
	}
	signer, err := xopenpgp.CheckArmoredDetachedSignature(kr, bytes.NewReader(img), bytes.NewReader(sig))
	if err != nil {
		t.Fatalf("x/crypto/openpgp rejects our signature: %v", err)
	}
	if signer.PrimaryKey.KeyIdString() != key.PrimaryKey.KeyIdString() {
		t.Errorf("signed by %s", signer.PrimaryKey.KeyIdString())
	}
}

func TestVerifyAcceptsGPGSignatures(t *testing.T) {
	for _, algo := range []string{"rsa3072", "ed25519"} {
		t.Run(algo, func(t *testing.T) {
			g := testsupport.NewGPG(t)
			g.Run(nil, "--passphrase", "", "--quick-gen-key", "GPG Signer <gpg@example.com>", algo, "sign", "never")
			img := makeACI(t, "example.com/app", "from gpg")
			imgPath := g.File("x.aci", img)
			g.Run(nil, "--digest-algo", "SHA512", "--armor", "--detach-sign", "--output", imgPath+".asc", imgPath)
			sig, _ := os.ReadFile(imgPath + ".asc")
			key, err := sign.ReadKey(bytes.NewReader(g.Run(nil, "--armor", "--export")))
			if err != nil {
				t.Fatal(err)
			}
			v, err := sign.Verify(bytes.NewReader(img), bytes.NewReader(sig), rootTrust(key), time.Time{})
			if err != nil {
				t.Fatalf("Verify of a gpg %s signature: %v", algo, err)
			}
			if v.UserID != "GPG Signer <gpg@example.com>" || v.Name != "example.com/app" {
				t.Errorf("got %+v", v)
			}
		})
	}
}

// Secret keys exported by gpg load and sign, with and without passphrase.
func TestGPGSecretKeysLoad(t *testing.T) {
	for _, tc := range []struct{ algo, pass string }{{"rsa3072", ""}, {"ed25519", ""}, {"rsa3072", "s3cret"}, {"ed25519", "s3cret"}} {
		t.Run(tc.algo+"/"+map[bool]string{true: "passphrase", false: "none"}[tc.pass != ""], func(t *testing.T) {
			g := testsupport.NewGPG(t)
			g.Run(nil, "--passphrase", tc.pass, "--quick-gen-key", "Exported <exp@example.com>", tc.algo, "sign", "never")
			secret := g.Run(nil, "--passphrase", tc.pass, "--armor", "--export-secret-keys")
			asked := false
			key, err := sign.ReadSigningKey(bytes.NewReader(secret), func() ([]byte, error) { asked = true; return []byte(tc.pass), nil })
			if err != nil {
				t.Fatal(err)
			}
			if asked != (tc.pass != "") {
				t.Errorf("asked for a passphrase: %v", asked)
			}
			img := makeACI(t, "example.com/app", "x")
			sig := signBytes(t, key, img)
			out, err := g.Try(nil, "--verify", g.File("x.aci.asc", sig), g.File("x.aci", img))
			if err != nil {
				t.Fatalf("gpg rejects a signature made with its own exported key: %s", out)
			}
			if tc.pass != "" {
				_, err := sign.ReadSigningKey(bytes.NewReader(secret), func() ([]byte, error) { return []byte("wrong"), nil })
				var ke *sign.KeyError
				if !errors.As(err, &ke) || !strings.Contains(err.Error(), "wrong passphrase") {
					t.Errorf("wrong passphrase: got %v", err)
				}
			}
		})
	}
}

func TestGeneratedKeyWithPassphrase(t *testing.T) {
	key, err := sign.GenerateKey(sign.KeyOptions{Name: "P", Email: "p@example.com", Algorithm: sign.Ed25519, Passphrase: []byte("pw")})
	if err != nil {
		t.Fatal(err)
	}
	var priv bytes.Buffer
	sign.WritePrivateKey(&priv, key)
	if _, err := sign.ReadSigningKey(bytes.NewReader(priv.Bytes()), func() ([]byte, error) { return []byte("no"), nil }); err == nil {
		t.Error("a wrong passphrase unlocked the key")
	}
	k2, err := sign.ReadSigningKey(bytes.NewReader(priv.Bytes()), func() ([]byte, error) { return []byte("pw"), nil })
	if err != nil {
		t.Fatal(err)
	}
	img := makeACI(t, "a", "b")
	if _, err := sign.Verify(bytes.NewReader(img), bytes.NewReader(signBytes(t, k2, img)), rootTrust(k2), time.Time{}); err != nil {
		t.Error(err)
	}
}

func TestVerifyRejects(t *testing.T) {
	key := testKey(t)
	img := makeACI(t, "example.com/foobar", "the image")
	good := signBytes(t, key, img, withImage(t, img))
	other := makeACI(t, "example.com/other", "another image")
	otherSig := signBytes(t, key, other, withImage(t, other))
	changed := makeACI(t, "example.com/foobar", "the image, changed")

	stranger, _ := sign.GenerateKey(sign.KeyOptions{Name: "Stranger", Email: "s@example.com", Algorithm: sign.Ed25519})
	strangerSig := signBytes(t, stranger, img)

	past := time.Now().Add(-72 * time.Hour)
	expiring, _ := sign.GenerateKey(sign.KeyOptions{Name: "Old", Email: "old@example.com", Algorithm: sign.Ed25519, Lifetime: 24 * time.Hour, Now: past})
	expiredSig := signBytes(t, expiring, img, sign.WithTime(past.Add(time.Hour)))

	revoking, _ := sign.GenerateKey(sign.KeyOptions{Name: "Revoked", Email: "rev@example.com", Algorithm: sign.Ed25519})
	revokedSig := signBytes(t, revoking, img)
	if err := revoking.RevokeKey(packet.KeyCompromised, "test", nil); err != nil {
		t.Fatal(err)
	}
	revokedPub, err := sign.ReadKey(bytes.NewReader(pub(t, revoking)))
	if err != nil {
		t.Fatal(err)
	}

	g := testsupport.NewGPG(t)
	g.Run(nil, "--passphrase", "", "--quick-gen-key", "SHA1 Signer <sha1@example.com>", "rsa2048", "sign", "never")
	gpgKey, _ := sign.ReadKey(bytes.NewReader(g.Run(nil, "--armor", "--export")))
	imgPath := g.File("x.aci", img)
	g.Run(nil, "--digest-algo", "SHA1", "--armor", "--detach-sign", "--output", imgPath+".sha1.asc", imgPath)
	sha1Sig, _ := os.ReadFile(imgPath + ".sha1.asc")

	sibling := sign.NewTrust()
	sibling.AddPrefix("example.com/foo", key)

	flipped := bytes.Clone(img)
	flipped[len(flipped)/2] ^= 1

	tests := []struct {
		name  string
		image []byte
		sig   []byte
		trust *sign.Trust
		want  sign.Reason
		msg   string
	}{
		{"tampered image", changed, good, rootTrust(key), sign.ReasonBadSignature, "changed since it was signed"},
		{"damaged bytes", flipped, good, rootTrust(key), sign.ReasonBadSignature, "damaged"},
		{"signature of another image", img, otherSig, rootTrust(key), sign.ReasonOtherImage, "example.com/other"},
		{"untrusted key", img, strangerSig, rootTrust(key), sign.ReasonUnknownKey, "nix2aci trust"},
		{"key trusted for a sibling prefix", img, good, sibling, sign.ReasonUntrusted, "only for example.com/foo, not for example.com/foobar"},
		{"expired key", img, expiredSig, rootTrust(expiring), sign.ReasonExpired, "expired"},
		{"revoked key", img, revokedSig, rootTrust(revokedPub), sign.ReasonRevoked, "revoked"},
		{"SHA-1 signature", img, sha1Sig, rootTrust(gpgKey), sign.ReasonWeakHash, "SHA-1"},
		{"garbage signature", img, []byte("this is not a signature\n"), rootTrust(key), sign.ReasonMalformed, "not an armored OpenPGP signature"},
		{"empty signature", img, nil, rootTrust(key), sign.ReasonMalformed, "is empty"},
		{"public key instead of signature", img, pub(t, key), rootTrust(key), sign.ReasonMalformed, "PGP PUBLIC KEY BLOCK"},
	}
	seen := map[string]bool{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := sign.Verify(bytes.NewReader(tt.image), bytes.NewReader(tt.sig), tt.trust, time.Time{})
			var ve *sign.VerifyError
			if !errors.As(err, &ve) || ve.Reason != tt.want || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("got %v (%T), want %s containing %q", err, err, tt.want, tt.msg)
			}
			if seen[err.Error()] {
				t.Errorf("message not distinct: %v", err)
			}
			seen[err.Error()] = true
		})
	}
}

func TestTrustPrefixesMatchWholeComponents(t *testing.T) {
	key := testKey(t)
	tr := sign.NewTrust()
	tr.AddPrefix("example.com/foo", key)
	fp := sign.Fingerprint(key)
	for name, want := range map[string]bool{
		"example.com/foo": true, "example.com/foo/bar": true, "example.com/foobar": false,
		"example.com": false, "example.com/fo": false, "other.com/foo": false,
	} {
		if _, got := tr.TrustedFor(fp, name); got != want {
			t.Errorf("trusted for %q: got %v, want %v", name, got, want)
		}
	}
}

func TestTrustDir(t *testing.T) {
	key := testKey(t)
	dir := t.TempDir()
	p, err := sign.WriteTrust(dir, "example.com/foo", false, key)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "prefix.d", "example.com", "foo", sign.Fingerprint(key)); p != want {
		t.Errorf("wrote %s, want %s", p, want)
	}
	if _, err := sign.WriteTrust(dir, "", true, key); err != nil {
		t.Fatal(err)
	}
	tr, err := sign.LoadTrustDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if as, ok := tr.TrustedFor(sign.Fingerprint(key), "anything"); !ok || as != "root" {
		t.Errorf("root key: %q %v", as, ok)
	}
	if _, err := sign.WriteTrust(dir, "Not Valid", false, key); err == nil {
		t.Error("accepted an invalid prefix")
	}
	// A file not named by its key's fingerprint spoils the store, as in rkt.
	os.WriteFile(filepath.Join(dir, "root.d", "0000000000000000000000000000000000000000"), pub(t, key), 0o644)
	if _, err := sign.LoadTrustDir(dir); err == nil || !strings.Contains(err.Error(), "named by its lowercase fingerprint") {
		t.Errorf("misnamed key file: got %v", err)
	}
	if _, err := sign.LoadTrustDir(t.TempDir()); err == nil || !strings.Contains(err.Error(), "not a trust store") {
		t.Errorf("empty dir: got %v", err)
	}
}

func TestSignFileStreamsAndIsAtomic(t *testing.T) {
	key := testKey(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "x.aci")
	os.WriteFile(path, makeACI(t, "x", "y"), 0o644)
	asc, err := sign.SignFile(path, key)
	if err != nil || asc != path+".asc" {
		t.Fatalf("SignFile = %q, %v", asc, err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 2 {
		t.Errorf("left %d files, want 2", len(ents))
	}
	if _, err := sign.SignFile(filepath.Join(dir, "missing.aci"), key); err == nil {
		t.Error("signed a missing file")
	}
	if _, err := os.Stat(filepath.Join(dir, "missing.aci.asc")); err == nil {
		t.Error("a failed signing left a signature")
	}
}
