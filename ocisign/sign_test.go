package ocisign_test

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"

	"github.com/nix2aci/nix2aci/internal/testsupport/testkey"
	"github.com/nix2aci/nix2aci/ocisign"
	"github.com/nix2aci/nix2aci/sign"
)

var (
	keyOnce sync.Once
	nixKey  *openpgp.Entity
)

// nix2aciKey is a key as nix2aci key generate makes it (RSA 4096), one
// for the whole test binary.
func nix2aciKey(t testing.TB) *openpgp.Entity {
	keyOnce.Do(func() {
		var err error
		if nixKey, err = sign.GenerateKey(sign.KeyOptions{Name: "Image Signer", Email: "images@example.com"}); err != nil {
			t.Fatal(err)
		}
	})
	return nixKey
}

// rsaKey makes a quick RSA key of bits; change adjusts the config.
func rsaKey(t testing.TB, bits int, change func(*packet.Config)) *openpgp.Entity {
	t.Helper()
	cfg := &packet.Config{Algorithm: packet.PubKeyAlgoRSA, RSABits: bits, DefaultHash: crypto.SHA256}
	if change != nil {
		change(cfg)
	}
	e, err := openpgp.NewEntity("Quick", "", "quick@example.com", cfg)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func digestOf(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// signed returns the signature by key of manifest as ref.
func signed(t testing.TB, key *openpgp.Entity, manifest []byte, ref string) []byte {
	t.Helper()
	return signFor(t, key, digestOf(manifest), ref)
}

func publicOnly(t testing.TB, key *openpgp.Entity) *openpgp.Entity {
	t.Helper()
	var b bytes.Buffer
	if err := sign.WritePublicKey(&b, key); err != nil {
		t.Fatal(err)
	}
	k, err := sign.ReadKey(&b)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

var testTime = time.Unix(1700000000, 0)

const testManifest = `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:` + hex64 + `","size":2},"layers":[]}`

func TestSignVerifyRoundTrip(t *testing.T) {
	key := nix2aciKey(t)
	m := []byte(testManifest)
	sig := signed(t, key, m, "registry.example.com/app:1.0")
	v, err := ocisign.Verify(sig, openpgp.EntityList{publicOnly(t, key)}, m, "registry.example.com/app:1.0")
	if err != nil {
		t.Fatal(err)
	}
	if v.Fingerprint != sign.Fingerprint(key) || v.Reference != "registry.example.com/app:1.0" || v.ManifestDigest != digestOf(m) || v.Creator != "nix2aci test" || v.UserID != "Image Signer <images@example.com>" {
		t.Errorf("got %+v", v)
	}
	// A signature is binary, and its packets are those of a signed
	// message: one-pass signature (tag 4), literal data (11), signature (2).
	if sig[0]&0x3f != 4 && (sig[0]>>2)&0xf != 4 {
		t.Errorf("the first packet is not a one-pass signature: %x", sig[:4])
	}
}

func TestVerifyRejects(t *testing.T) {
	key := nix2aciKey(t)
	keyring := openpgp.EntityList{publicOnly(t, key)}
	m := []byte(testManifest)
	const ref = "registry.example.com/app:1.0"
	good := signed(t, key, m, ref)
	altered := append(bytes.Clone(m[:len(m)-1]), ' ', '}')
	stranger := rsaKey(t, 2048, nil)

	flipped := bytes.Clone(good)
	flipped[bytes.Index(flipped, []byte("app:1.0"))] = 'b' // the payload claims another image

	past := time.Now().Add(-72 * time.Hour)
	expiring := rsaKey(t, 2048, func(c *packet.Config) {
		c.KeyLifetimeSecs = 24 * 3600
		c.Time = func() time.Time { return past }
	})
	p, _ := ocisign.Payload(ref, digestOf(m), "", past)
	var expiredSig bytes.Buffer
	if err := ocisign.SignAt(&expiredSig, expiring, p, past.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name     string
		sig      []byte
		keyring  openpgp.EntityList
		manifest []byte
		ref      string
		want     sign.Reason
		msg      string
	}{
		{"altered manifest", good, keyring, altered, ref, ocisign.ReasonOtherManifest, "changed after signing"},
		{"another tag", good, keyring, m, "registry.example.com/app:1.1", ocisign.ReasonIdentity, "not registry.example.com/app:1.1"},
		{"another repository", good, keyring, m, "registry.example.com/other:1.0", ocisign.ReasonIdentity, "registry.example.com/other:1.0"},
		{"another registry", good, keyring, m, "mirror.example.com/app:1.0", ocisign.ReasonIdentity, "mirror.example.com/app:1.0"},
		{"digest of another manifest", good, keyring, m, "registry.example.com/app@sha256:" + hex64, ocisign.ReasonOtherManifest, "names"},
		{"unknown key", good, openpgp.EntityList{publicOnly(t, stranger)}, m, ref, sign.ReasonUnknownKey, "not among the trusted keys"},
		{"altered payload", flipped, keyring, m, ref, sign.ReasonBadSignature, "does not match its payload"},
		{"expired key", expiredSig.Bytes(), openpgp.EntityList{publicOnly(t, expiring)}, m, ref, sign.ReasonExpired, "expired"},
		{"empty", nil, keyring, m, ref, sign.ReasonMalformed, "empty"},
		{"armored", []byte("-----BEGIN PGP MESSAGE-----\n\n-----END PGP MESSAGE-----\n"), keyring, m, ref, sign.ReasonMalformed, "armored"},
		{"garbage", []byte("not a signature at all"), keyring, m, ref, sign.ReasonMalformed, "not a simple signing signature"},
		{"truncated", good[:len(good)-10], keyring, m, ref, sign.ReasonMalformed, "ends too early"},
		{"two signatures", append(bytes.Clone(good), good...), keyring, m, ref, sign.ReasonMalformed, "6 packets"},
	}
	seen := map[string]bool{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ocisign.Verify(tt.sig, tt.keyring, tt.manifest, tt.ref)
			var ve *sign.VerifyError
			if !errors.As(err, &ve) || ve.Reason != tt.want || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("got %v (%T), want %s saying %q", err, err, tt.want, tt.msg)
			}
			if seen[err.Error()] {
				t.Errorf("message not distinct: %v", err)
			}
			seen[err.Error()] = true
		})
	}
	// Matching the repository only accepts another tag, not another
	// repository; podman's default does so for a pull by digest only.
	if _, err := ocisign.VerifyWith(good, keyring, m, "registry.example.com/app:1.1", ocisign.VerifyOptions{Identity: ocisign.MatchRepository}); err != nil {
		t.Errorf("MatchRepository, another tag: %v", err)
	}
	if _, err := ocisign.VerifyWith(good, keyring, m, "registry.example.com/app@"+digestOf(m), ocisign.VerifyOptions{Identity: ocisign.MatchRepoDigestOrExact}); err != nil {
		t.Errorf("MatchRepoDigestOrExact by digest: %v", err)
	}
	if _, err := ocisign.VerifyWith(good, keyring, m, "registry.example.com/app:1.1", ocisign.VerifyOptions{Identity: ocisign.MatchRepoDigestOrExact}); err == nil {
		t.Error("MatchRepoDigestOrExact accepted another tag")
	}
	if _, err := ocisign.VerifyWith(good, keyring, m, "registry.example.com/other", ocisign.VerifyOptions{Identity: ocisign.MatchRepository}); err == nil {
		t.Error("MatchRepository accepted another repository")
	}
	var re *ocisign.ReferenceError
	if _, err := ocisign.Verify(good, keyring, m, "registry.example.com/app"); !errors.As(err, &re) {
		t.Errorf("an expected reference without tag: %v", err)
	}
}

// Keys the clients cannot check are refused when signing, saying how to
// make one they can.
func TestSignRefusesUnusableKeys(t *testing.T) {
	ed := testkey.Key(t, sign.KeyOptions{Name: "Ed", Email: "ed@example.com", Algorithm: sign.Ed25519})
	v6, err := openpgp.NewEntity("Six", "", "six@example.com", &packet.Config{V6Keys: true, Algorithm: packet.PubKeyAlgoEd25519})
	if err != nil {
		t.Fatal(err)
	}
	ecdsa, err := openpgp.NewEntity("EC", "", "ec@example.com", &packet.Config{Algorithm: packet.PubKeyAlgoECDSA, Curve: packet.CurveNistP256})
	if err != nil {
		t.Fatal(err)
	}
	short := rsaKey(t, 1024, nil)
	locked := rsaKey(t, 2048, nil)
	if err := locked.EncryptPrivateKeys([]byte("pw"), nil); err != nil {
		t.Fatal(err)
	}
	revoked := rsaKey(t, 2048, nil)
	if err := revoked.RevokeKey(packet.KeyCompromised, "test", nil); err != nil {
		t.Fatal(err)
	}
	certOnly := rsaKey(t, 2048, nil)
	for _, id := range certOnly.Identities {
		id.SelfSignature.FlagSign = false
		if err := id.SelfSignature.SignUserId(id.UserId.Id, certOnly.PrimaryKey, certOnly.PrivateKey, nil); err != nil {
			t.Fatal(err)
		}
	}
	past := time.Now().Add(-72 * time.Hour)
	expired := rsaKey(t, 2048, func(c *packet.Config) {
		c.KeyLifetimeSecs = 3600
		c.Time = func() time.Time { return past }
	})
	p, err := ocisign.Payload("example.com/app:1", "sha256:"+hex64, "", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		key *openpgp.Entity
		msg string
	}{
		"legacy ed25519":        {ed, "EdDSA"},
		"v6 ed25519":            {v6, "version 6"},
		"ecdsa":                 {ecdsa, "ECDSA"},
		"short rsa":             {short, "1024 bits"},
		"public key":            {publicOnly(t, nix2aciKey(t)), "private key"},
		"locked":                {locked, "passphrase"},
		"revoked":               {revoked, "revoked"},
		"primary does not sign": {certOnly, "accept only signatures made by the primary key"},
		"expired":               {expired, "expired"},
	} {
		var b bytes.Buffer
		err := ocisign.Sign(&b, tc.key, p)
		var ke *sign.KeyError
		if !errors.As(err, &ke) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: got %v, want a KeyError saying %q", name, err, tc.msg)
			continue
		}
		if tc.msg != "private key" && tc.msg != "passphrase" && !strings.Contains(err.Error(), "nix2aci key generate") && !strings.Contains(err.Error(), "gpg --quick-set-expire") {
			t.Errorf("%s: the error does not say how to make a usable key: %v", name, err)
		}
		if b.Len() != 0 {
			t.Errorf("%s: wrote %d bytes", name, b.Len())
		}
	}
	var b bytes.Buffer
	if err := ocisign.Sign(&b, nix2aciKey(t), []byte(`{"critical":{}}`)); err == nil || b.Len() != 0 {
		t.Errorf("signed an invalid payload: %v", err)
	}
}
