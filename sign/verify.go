package sign

import (
	"bytes"
	"crypto"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	pgperrors "github.com/ProtonMail/go-crypto/openpgp/errors"
	"github.com/ProtonMail/go-crypto/openpgp/packet"

	"github.com/nix2aci/nix2aci/aci"
)

// Reason says why a verification failed.
type Reason string

const (
	ReasonMissing      Reason = "missing-signature"
	ReasonMalformed    Reason = "malformed-signature"
	ReasonWeakHash     Reason = "weak-hash"
	ReasonUnknownKey   Reason = "unknown-key"
	ReasonUntrusted    Reason = "untrusted-for-name"
	ReasonBadSignature Reason = "bad-signature"
	ReasonOtherImage   Reason = "signature-for-another-image"
	ReasonExpired      Reason = "expired-key"
	ReasonRevoked      Reason = "revoked-key"
	ReasonInvalidImage Reason = "invalid-image"
)

// VerifyError is a failed verification.
type VerifyError struct {
	Reason Reason
	Msg    string
}

func (e *VerifyError) Error() string { return e.Msg }

func fail(r Reason, format string, args ...any) error {
	return &VerifyError{Reason: r, Msg: fmt.Sprintf(format, args...)}
}

// Verified describes a good signature on a trusted image.
type Verified struct {
	Name        string    `json:"name"`
	ImageID     string    `json:"imageID"`
	Fingerprint string    `json:"fingerprint"`
	UserID      string    `json:"userID"`
	TrustedAs   string    `json:"trustedAs"` // "root" or the prefix
	SignedAt    time.Time `json:"signedAt"`
}

// strongHashes are the digests Verify accepts.
var strongHashes = map[crypto.Hash]bool{
	crypto.SHA224: true, crypto.SHA256: true, crypto.SHA384: true, crypto.SHA512: true,
	crypto.SHA3_256: true, crypto.SHA3_512: true,
}

// Verify checks that signature is a good signature of the ACI read from
// image by a key trust trusts for the image's name, reading the image once.
// now is the time keys must be valid at (zero: the current time).
func Verify(image, signature io.Reader, trust *Trust, now time.Time) (*Verified, error) {
	unverifiedSig, body, err := readSignature(signature)
	if err != nil {
		return nil, err
	}
	if !strongHashes[unverifiedSig.Hash] {
		return nil, fail(ReasonWeakHash, "the signature uses %s, which is too weak to trust; re-sign with nix2aci sign (SHA-512) or gpg --digest-algo SHA512", hashName(unverifiedSig.Hash))
	}
	keyring := trust.keyring()
	if unverifiedSig.IssuerKeyId == nil || len(keyring.KeysById(*unverifiedSig.IssuerKeyId)) == 0 {
		id := "an unnamed key"
		if unverifiedSig.IssuerKeyId != nil {
			id = fmt.Sprintf("key ID %016X", *unverifiedSig.IssuerKeyId)
		}
		return nil, fail(ReasonUnknownKey, "the image is signed by %s, which is not trusted here; if you trust it, add its public key: nix2aci trust --prefix NAME KEY.asc", id)
	}

	// Validate the image while the signature check reads it.
	pr, pw := io.Pipe()
	type inspected struct {
		info *aci.Info
		err  error
	}
	done := make(chan inspected, 1)
	go func() {
		info, err := aci.Inspect(pr)
		io.Copy(io.Discard, pr)
		done <- inspected{info, err}
	}()
	cfg := &packet.Config{}
	if !now.IsZero() {
		cfg.Time = func() time.Time { return now }
	}
	toInspect := aci.NewAsyncWriter(pw, 16)
	tee := io.TeeReader(image, toInspect)
	signer, sigErr := openpgp.CheckDetachedSignature(keyring, tee, bytes.NewReader(body), cfg)
	_, copyErr := io.Copy(io.Discard, tee)
	toInspect.Close()
	pw.CloseWithError(copyErr)
	got := <-done
	if copyErr != nil {
		return nil, fmt.Errorf("reading image: %w", copyErr)
	}

	switch {
	case sigErr == nil:
	case errors.Is(sigErr, pgperrors.ErrKeyExpired), errors.Is(sigErr, pgperrors.ErrSignatureExpired):
		return nil, fail(ReasonExpired, "the signing key %s has expired (or the signature has); renew the key or sign with a current one", keyName(signer, keyring, unverifiedSig))
	case errors.Is(sigErr, pgperrors.ErrKeyRevoked):
		return nil, fail(ReasonRevoked, "the signing key %s has been revoked; do not deploy this image, and re-sign with a key that is not", keyName(signer, keyring, unverifiedSig))
	default:
		if got.err != nil {
			return nil, fail(ReasonBadSignature, "the image is damaged: %v; the signature does not match it", got.err)
		}
		return nil, mismatch(unverifiedSig, got.info)
	}
	if got.err != nil {
		return nil, fail(ReasonInvalidImage, "the signature is good but the file is not a valid ACI: %v", got.err)
	}
	name := got.info.Manifest.Name.String()
	fp := Fingerprint(signer)
	as, ok := trust.TrustedFor(fp, name)
	if !ok {
		return nil, fail(ReasonUntrusted, "key %s (%s) is trusted only for %s, not for %s; prefixes match whole path components; trust it for this name with nix2aci trust --prefix %s",
			fp, UserID(signer), strings.Join(trust.prefixesOf(fp), ", "), name, name)
	}
	return &Verified{Name: name, ImageID: got.info.ImageID, Fingerprint: fp, UserID: UserID(signer), TrustedAs: as, SignedAt: unverifiedSig.CreationTime.UTC()}, nil
}

// mismatch explains a signature that does not match the image, using the
// image notation nix2aci signatures carry.
func mismatch(unverifiedSig *packet.Signature, info *aci.Info) error {
	for _, n := range unverifiedSig.Notations {
		if n.Name != notationName {
			continue
		}
		signedName, signedID, _ := strings.Cut(string(n.Value), " ")
		name := info.Manifest.Name.String()
		if signedName != name {
			return fail(ReasonOtherImage, "the signature is for another image (%s), not %s; use that image's .asc file", signedName, name)
		}
		if signedID != info.ImageID {
			return fail(ReasonBadSignature, "the image has changed since it was signed: signed %s, got %s; rebuild and re-sign, or find out who changed it", short(signedID), short(info.ImageID))
		}
		return fail(ReasonBadSignature, "the signature does not match the file's bytes (same image ID %s, so it was recompressed or altered after signing)", short(info.ImageID))
	}
	return fail(ReasonBadSignature, "the signature does not match the image: the file was changed after signing, or the signature belongs to another file")
}

func short(id string) string {
	if len(id) > 19 {
		return id[:19] + "…"
	}
	return id
}

// readSignature decodes an armored detached signature and returns its
// first signature packet, unverified, and the packets' bytes.
func readSignature(r io.Reader) (*packet.Signature, []byte, error) {
	raw, err := io.ReadAll(io.LimitReader(r, 1<<20))
	if err != nil {
		return nil, nil, err
	}
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil, nil, fail(ReasonMalformed, "the signature file is empty; sign the image again")
	}
	block, err := armor.Decode(bytes.NewReader(raw))
	if err != nil {
		return nil, nil, fail(ReasonMalformed, "the signature file is not an armored OpenPGP signature (%v); make one with nix2aci sign", cleanErr(err))
	}
	if block.Type != openpgp.SignatureType {
		return nil, nil, fail(ReasonMalformed, "the signature file holds a %q block, not a PGP SIGNATURE", block.Type)
	}
	body, err := io.ReadAll(block.Body)
	if err != nil {
		return nil, nil, fail(ReasonMalformed, "the signature file is damaged: %v", cleanErr(err))
	}
	p, err := packet.NewReader(bytes.NewReader(body)).Next()
	if err != nil {
		return nil, nil, fail(ReasonMalformed, "no valid signature found in signature file (%v)", cleanErr(err))
	}
	sig, ok := p.(*packet.Signature)
	if !ok {
		return nil, nil, fail(ReasonMalformed, "the signature file holds no signature packet")
	}
	return sig, body, nil
}

func cleanErr(err error) string {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return "it ends too early"
	}
	return err.Error()
}

func keyName(signer *openpgp.Entity, keyring openpgp.EntityList, sig *packet.Signature) string {
	if signer == nil && sig.IssuerKeyId != nil {
		if keys := keyring.KeysById(*sig.IssuerKeyId); len(keys) > 0 {
			signer = keys[0].Entity
		}
	}
	if signer == nil {
		return "(unknown)"
	}
	return Fingerprint(signer) + " (" + UserID(signer) + ")"
}

func hashName(h crypto.Hash) string {
	switch h {
	case crypto.SHA1:
		return "SHA-1"
	case crypto.MD5:
		return "MD5"
	case crypto.RIPEMD160:
		return "RIPEMD-160"
	}
	return h.String()
}
