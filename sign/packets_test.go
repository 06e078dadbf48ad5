package sign_test

import (
	"bytes"
	"crypto"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"

	"github.com/nix2aci/nix2aci/internal/testsupport"
	"github.com/nix2aci/nix2aci/sign"
)

// body returns the packets of an armored signature.
func body(t testing.TB, armored []byte) []byte {
	t.Helper()
	b, err := armor.Decode(bytes.NewReader(armored))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(b.Body)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// joined armors the packets of several signatures as one file.
func joined(t testing.TB, sigs ...[]byte) []byte {
	var out bytes.Buffer
	w, err := armor.Encode(&out, openpgp.SignatureType, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sigs {
		w.Write(s)
	}
	w.Close()
	return out.Bytes()
}

func signWith(t testing.TB, key *openpgp.Entity, data []byte, cfg *packet.Config) []byte {
	t.Helper()
	var sig bytes.Buffer
	if err := openpgp.DetachSign(&sig, key, bytes.NewReader(data), cfg); err != nil {
		t.Fatal(err)
	}
	return sig.Bytes()
}

// verify verifies in both modes, which must judge the packets alike,
// and returns the full mode's result.
func verify(t testing.TB, img, sig []byte, tr *sign.Trust) (*sign.Verified, error) {
	t.Helper()
	v, err := sign.Verify(bytes.NewReader(img), bytes.NewReader(sig), tr, time.Time{})
	fast, fastErr := sign.VerifyWith(bytes.NewReader(img), bytes.NewReader(sig), tr, sign.VerifyOptions{})
	var ve, fe *sign.VerifyError
	errors.As(err, &ve)
	errors.As(fastErr, &fe)
	switch {
	case (err == nil) != (fastErr == nil):
		t.Errorf("full verify: %v; fast verify: %v", err, fastErr)
	case err != nil && (ve == nil || fe == nil || ve.Reason != fe.Reason):
		t.Errorf("full verify: %v; fast verify: %v (another reason)", err, fastErr)
	case err == nil && (fast.Fingerprint != v.Fingerprint || fast.SubkeyID != v.SubkeyID || fast.Full || fast.ImageID != ""):
		t.Errorf("fast verify accepted %+v, full %+v", fast, v)
	}
	// With the image ID computed (as for a dependency), the packets are
	// judged alike too, and the image ID is the full mode's.
	id, idErr := sign.VerifyWith(bytes.NewReader(img), bytes.NewReader(sig), tr, sign.VerifyOptions{ImageID: true})
	var ie *sign.VerifyError
	errors.As(idErr, &ie)
	switch {
	case (err == nil) != (idErr == nil):
		t.Errorf("full verify: %v; verify with the image ID: %v", err, idErr)
	case err != nil && (ie == nil || ve == nil || ie.Reason != ve.Reason):
		t.Errorf("full verify: %v; verify with the image ID: %v (another reason)", err, idErr)
	case err == nil && (id.Fingerprint != v.Fingerprint || id.ImageID != v.ImageID):
		t.Errorf("verify with the image ID accepted %+v, full %+v", id, v)
	}
	return v, err
}

func wantReason(t *testing.T, name string, err error, r sign.Reason, msg string) {
	t.Helper()
	var ve *sign.VerifyError
	if !errors.As(err, &ve) || ve.Reason != r || !strings.Contains(err.Error(), msg) {
		t.Errorf("%s: got %v, want %s containing %q", name, err, r, msg)
	}
}

// A forged SHA-512 packet whose issuer is the key's encryption subkey,
// put before a real SHA-1 signature, used to make verify judge the
// forged packet and accept the SHA-1 one. Every packet is judged on its
// own now: the SHA-1 signature is refused as weak.
func TestForgedPacketCannotLaunderAWeakSignature(t *testing.T) {
	img := makeACI(t, "example.com/app", "the image")
	g := testsupport.NewGPG(t)
	g.Run(nil, "--passphrase", "", "--quick-gen-key", "Signer <s@example.com>", "rsa2048", "sign", "never")
	fpr := strings.Fields(string(g.Run(nil, "--with-colons", "--list-keys")))
	for _, l := range strings.Split(strings.Join(fpr, "\n"), "\n") {
		if f := strings.Split(l, ":"); len(f) > 9 && f[0] == "fpr" {
			g.Run(nil, "--passphrase", "", "--quick-add-key", f[9], "rsa2048", "encr", "never")
			break
		}
	}
	key, err := sign.ReadKey(bytes.NewReader(g.Run(nil, "--armor", "--export")))
	if err != nil {
		t.Fatal(err)
	}
	if len(key.Subkeys) == 0 {
		t.Fatal("gpg made no encryption subkey")
	}
	enc := key.Subkeys[0].PublicKey
	p := g.File("x.aci", img)
	g.Run(nil, "--digest-algo", "SHA1", "--detach-sign", "--output", p+".sig", p)
	sha1Sig, _ := os.ReadFile(p + ".sig")

	// The forgery: a SHA-512 signature by another key, its issuer ID and
	// fingerprint rewritten to the encryption subkey's.
	other := testKey(t)
	forged := body(t, signBytes(t, other, img))
	signer, _ := other.SigningKey(time.Now())
	forged = bytes.ReplaceAll(forged, signer.PublicKey.Fingerprint, enc.Fingerprint)
	var id, encID [8]byte
	for i := 0; i < 8; i++ {
		id[i] = byte(signer.PublicKey.KeyId >> (56 - 8*i))
		encID[i] = byte(enc.KeyId >> (56 - 8*i))
	}
	forged = bytes.ReplaceAll(forged, id[:], encID[:])

	_, err = verify(t, img, joined(t, forged, sha1Sig), rootTrust(key))
	wantReason(t, "forged SHA-512 before real SHA-1", err, sign.ReasonWeakHash, "SHA-1")
}

// gpg and rkt accept a file holding any good signature: so does verify,
// and it says which one it accepted.
func TestAnyTrustedSignatureCounts(t *testing.T) {
	img := makeACI(t, "example.com/app", "the image")
	trusted := testKey(t)
	stranger, _ := sign.GenerateKey(sign.KeyOptions{Name: "Stranger", Email: "s@example.com", Algorithm: sign.Ed25519})
	good := body(t, signBytes(t, trusted, img))
	strangers := body(t, signBytes(t, stranger, img))
	for _, tc := range []struct {
		name string
		sig  []byte
	}{{"untrusted first", joined(t, strangers, good)}, {"trusted first", joined(t, good, strangers)}} {
		v, err := verify(t, img, tc.sig, rootTrust(trusted))
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if v.Fingerprint != sign.Fingerprint(trusted) || v.Signatures != 2 {
			t.Errorf("%s: accepted %s of %d signatures, want %s", tc.name, v.Fingerprint, v.Signatures, sign.Fingerprint(trusted))
		}
	}
	// A good signature by a stranger and a bad one by the trusted key:
	// the trusted key's failure is the one reported.
	bad := body(t, signBytes(t, trusted, makeACI(t, "example.com/app", "other bytes")))
	_, err := verify(t, img, joined(t, strangers, bad), rootTrust(trusted))
	wantReason(t, "stranger's good and trusted's bad", err, sign.ReasonBadSignature, "does not match the image")
}

// A signature by a signing subkey that has expired or been revoked is
// refused, though the primary key is fine.
func TestSigningSubkeyExpiredOrRevoked(t *testing.T) {
	img := makeACI(t, "example.com/app", "the image")
	past := time.Now().Add(-48 * time.Hour)
	mk := func(lifetime time.Duration) *openpgp.Entity {
		e, err := sign.GenerateKey(sign.KeyOptions{Name: "Sub", Email: "sub@example.com", Algorithm: sign.Ed25519, Now: past})
		if err != nil {
			t.Fatal(err)
		}
		cfg := &packet.Config{Algorithm: packet.PubKeyAlgoEdDSA, Time: func() time.Time { return past.Add(time.Hour) }, KeyLifetimeSecs: uint32(lifetime / time.Second)}
		if err := e.AddSigningSubkey(cfg); err != nil {
			t.Fatal(err)
		}
		return e
	}
	at := func(t0 time.Time) *packet.Config {
		return &packet.Config{DefaultHash: crypto.SHA512, Time: func() time.Time { return t0 }}
	}

	expiring := mk(2 * time.Hour)
	sig := signWith(t, expiring, img, at(past.Add(90*time.Minute)))
	if v, err := verify(t, img, joined(t, sig), rootTrust(expiring)); err == nil {
		t.Errorf("a signature by an expired subkey was accepted: %+v", v)
	} else {
		wantReason(t, "expired subkey", err, sign.ReasonExpired, "expired")
	}

	revoking := mk(0)
	sig = signWith(t, revoking, img, at(past.Add(90*time.Minute)))
	if _, err := verify(t, img, joined(t, sig), rootTrust(revoking)); err != nil {
		t.Fatalf("before revocation: %v", err)
	}
	if err := revoking.RevokeSubkey(&revoking.Subkeys[len(revoking.Subkeys)-1], packet.KeyCompromised, "test", nil); err != nil {
		t.Fatal(err)
	}
	_, err := verify(t, img, joined(t, sig), rootTrust(revoking))
	wantReason(t, "revoked subkey", err, sign.ReasonRevoked, "revoked")
}

// An unknown critical notation and a date in the future each have their
// own reason, not "the file changed" or "expired".
func TestCriticalNotationAndFutureDate(t *testing.T) {
	img := makeACI(t, "example.com/app", "the image")
	key := testKey(t)
	crit := signWith(t, key, img, &packet.Config{DefaultHash: crypto.SHA512, SignatureNotations: []*packet.Notation{{Name: "policy@example.com", Value: []byte("x"), IsCritical: true, IsHumanReadable: true}}})
	_, err := verify(t, img, joined(t, crit), rootTrust(key))
	wantReason(t, "critical notation", err, sign.ReasonCriticalNotation, `critical notation policy@example.com`)

	future := signBytes(t, key, img, sign.WithTime(time.Now().Add(time.Hour)))
	_, err = verify(t, img, future, rootTrust(key))
	wantReason(t, "future", err, sign.ReasonFutureSignature, "in the future; check the signing machine's clock")

	soon := signBytes(t, key, img, sign.WithTime(time.Now().Add(time.Minute)))
	if _, err := verify(t, img, soon, rootTrust(key)); err != nil {
		t.Errorf("a minute of clock skew is refused: %v", err)
	}
}
