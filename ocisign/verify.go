package ocisign

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"

	"github.com/nix2aci/nix2aci/internal/safeio"
	"github.com/nix2aci/nix2aci/sign"
)

// Reasons a simple signing signature fails that an ACI's cannot; the
// others are sign's (sign.ReasonMalformed, sign.ReasonUnknownKey, ...).
const (
	ReasonSubkey        sign.Reason = "signed-by-subkey"
	ReasonPayload       sign.Reason = "malformed-payload"
	ReasonOtherManifest sign.Reason = "signature-for-another-manifest"
	ReasonIdentity      sign.Reason = "identity-mismatch"
)

func fail(r sign.Reason, format string, args ...any) error {
	return &sign.VerifyError{Reason: r, Msg: fmt.Sprintf(format, args...)}
}

// Match says how the identity a signature claims must match the
// reference the image is expected under, as policy.json's signedIdentity
// does.
type Match int

const (
	// MatchExact (policy.json's matchExact) wants the same repository and
	// the same tag or digest; both must have one.
	MatchExact Match = iota
	// MatchRepoDigestOrExact (podman's default) is MatchRepository when
	// the expected reference has a digest and no tag, else MatchExact.
	MatchRepoDigestOrExact
	// MatchRepository (matchRepository) wants the same repository, any
	// tag.
	MatchRepository
)

// VerifyOptions change how VerifyWith checks a signature.
type VerifyOptions struct {
	Identity Match
	// Now is the time the key must be valid at (zero: the current time).
	Now time.Time
}

// Verified describes a good signature.
type Verified struct {
	Fingerprint    string    `json:"fingerprint"` // the signer's primary key
	UserID         string    `json:"userID"`
	Reference      string    `json:"reference"` // the identity signed, as written
	ManifestDigest string    `json:"manifestDigest"`
	Creator        string    `json:"creator,omitempty"`
	Timestamp      time.Time `json:"timestamp,omitzero"` // the payload's; zero if it has none
	SignedAt       time.Time `json:"signedAt"`           // the OpenPGP signature's
}

// Verify is VerifyWith with MatchExact, as of now.
func Verify(signature []byte, keyring openpgp.EntityList, manifest []byte, expectedRef string) (*Verified, error) {
	return VerifyWith(signature, keyring, manifest, expectedRef, VerifyOptions{})
}

// VerifyWith checks that signature is a simple signing signature of the
// image whose manifest is manifest (its exact bytes) under the identity
// expectedRef, made by the primary key of one of keyring's keys, as
// podman and skopeo do with a signedBy policy: a signed message holding
// exactly one signature, which verifies, by a primary key allowed to
// sign, neither expired nor revoked, with a strong hash; a payload parsed
// strictly (ParsePayload); its digest that of manifest; its identity
// matching expectedRef as o.Identity says. A failure is a
// *sign.VerifyError; an expectedRef that is not a reference is a
// *ReferenceError.
func VerifyWith(signature []byte, keyring openpgp.EntityList, manifest []byte, expectedRef string, o VerifyOptions) (*Verified, error) {
	want, err := ParseReference(expectedRef)
	if err != nil {
		return nil, err
	}
	if o.Identity != MatchRepository && want.Tag == "" && want.Digest == "" {
		return nil, &ReferenceError{Ref: expectedRef, Msg: "it names no tag or digest, so no signature can match it exactly; add one, or match the repository only"}
	}
	now := o.Now
	if now.IsZero() {
		now = time.Now()
	}
	msg, err := readSignedMessage(signature)
	if err != nil {
		return nil, err
	}
	key, err := signer(keyring, msg)
	if err != nil {
		return nil, err
	}
	if err := sign.CheckPacket(msg.sig, key, now); err != nil {
		return nil, err
	}
	claim, err := ParsePayload(msg.body)
	if err != nil {
		return nil, fail(ReasonPayload, "%v", err)
	}
	got, err := digestOf(manifest, claim.ManifestDigest)
	if err != nil {
		return nil, err
	}
	if got != claim.ManifestDigest {
		return nil, fail(ReasonOtherManifest, "the signature is for the manifest %s, but this manifest's digest is %s: the manifest was changed after signing, or the signature belongs to another image", claim.ManifestDigest, got)
	}
	if want.Digest != "" {
		if d, err := digestOf(manifest, want.Digest); err != nil || d != want.Digest {
			return nil, fail(ReasonOtherManifest, "the manifest's digest is %s, not the %s that %s names", d, want.Digest, want.String())
		}
	}
	signed, err := ParseReference(claim.Reference)
	if err != nil {
		return nil, fail(ReasonIdentity, "the signature claims the identity %s, which is not a valid reference", safeio.QuoteAlways(claim.Reference))
	}
	if !matches(signed, want, o.Identity) {
		return nil, fail(ReasonIdentity, "the signature is for %s, not %s; sign the image as %s (or, if %s is what you meant, expect that)", signed.String(), want.String(), want.String(), signed.String())
	}
	return &Verified{
		Fingerprint:    sign.Fingerprint(key.Entity),
		UserID:         sign.UserID(key.Entity),
		Reference:      claim.Reference,
		ManifestDigest: claim.ManifestDigest,
		Creator:        claim.Creator,
		Timestamp:      claim.Timestamp,
		SignedAt:       msg.sig.CreationTime.UTC(),
	}, nil
}

func matches(signed, want Reference, m Match) bool {
	if m == MatchRepoDigestOrExact {
		if want.Digest != "" && want.Tag == "" {
			m = MatchRepository
		} else {
			m = MatchExact
		}
	}
	if m == MatchRepository {
		return signed.Name() == want.Name()
	}
	if signed.Tag == "" && signed.Digest == "" {
		return false
	}
	return signed.String() == want.String()
}

// digestOf returns the digest of b with the algorithm of like
// ("sha256:..." or "sha512:...").
func digestOf(b []byte, like string) (string, error) {
	algo, _, err := parseDigest(like)
	if err != nil {
		return "", fail(ReasonPayload, "digest %v", err)
	}
	if algo == "sha512" {
		s := sha512.Sum512(b)
		return "sha512:" + hex.EncodeToString(s[:]), nil
	}
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:]), nil
}

// signer finds the key of keyring that made msg's signature and checks
// the signature with it. Only a primary key allowed to sign is accepted.
func signer(keyring openpgp.EntityList, msg *message) (openpgp.Key, error) {
	sig := msg.sig
	if sig.IssuerKeyId == nil {
		return openpgp.Key{}, fail(sign.ReasonUnknownKey, "the signature does not name the key that made it")
	}
	id := *sig.IssuerKeyId
	var keys []openpgp.Key
	for _, k := range keyring.KeysById(id) {
		if sig.IssuerFingerprint == nil || bytes.Equal(sig.IssuerFingerprint, k.PublicKey.Fingerprint) {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return openpgp.Key{}, fail(sign.ReasonUnknownKey, "the image is signed by key ID %016X, which is not among the trusted keys; if you trust it, add its public key", id)
	}
	var verr error
	for _, k := range keys {
		h, err := sig.PrepareVerify()
		if err != nil {
			return openpgp.Key{}, fail(sign.ReasonMalformed, "the signature cannot be checked: %v", err)
		}
		h.Write(msg.body)
		if err := k.PublicKey.VerifySignature(h, sig); err != nil {
			verr = fail(sign.ReasonBadSignature, "the signature by %s does not match its payload: it was altered, or is not a signature by that key", keyName(k))
			continue
		}
		if k.PublicKey != k.Entity.PrimaryKey {
			return openpgp.Key{}, fail(ReasonSubkey, "the signature was made by subkey %016X of %s; podman and skopeo accept only signatures made by the primary key; sign with nix2aci, which uses the primary key", k.PublicKey.KeyId, keyName(k))
		}
		if self, _ := k.Entity.PrimarySelfSignature(); self != nil && self.FlagsValid && !self.FlagSign {
			return openpgp.Key{}, fail(ReasonSubkey, "the signature was made by the primary key of %s, which may only certify, not sign; GnuPG reports such a signature as made with the wrong key usage", keyName(k))
		}
		return k, nil
	}
	return openpgp.Key{}, verr
}

func keyName(k openpgp.Key) string {
	return sign.Fingerprint(k.Entity) + " (" + safeio.Quote(sign.UserID(k.Entity)) + ")"
}

// maxSignature bounds a signature: one is about a kilobyte.
const maxSignature = 64 << 10

// message is the content of a signed message: its one-pass
// signature packet, the literal data and the signature packet.
type message struct {
	ops  *packet.OnePassSignature
	body []byte
	sig  *packet.Signature
}

func malformed(format string, args ...any) error {
	return fail(sign.ReasonMalformed, "the signature is not a simple signing signature: "+format, args...)
}

// readSignedMessage parses b as an OpenPGP signed message holding one
// signature, possibly compressed (gpg --sign compresses): a one-pass
// signature packet, a literal data packet and a signature packet that
// agree with each other, nothing else. Nothing in it is trusted yet.
func readSignedMessage(b []byte) (*message, error) {
	if len(b) == 0 {
		return nil, malformed("it is empty")
	}
	if len(b) > maxSignature {
		return nil, malformed("it is %d bytes, more than the %d one may be", len(b), maxSignature)
	}
	if bytes.HasPrefix(bytes.TrimSpace(b), []byte("-----BEGIN PGP")) {
		return nil, malformed("it is armored; simple signing signatures are binary OpenPGP messages (gpg --sign, without --armor)")
	}
	packets, err := readPackets(b, true)
	if err != nil {
		return nil, err
	}
	if len(packets) != 3 {
		return nil, malformed("it holds %d packets, not a one-pass signature, the payload and one signature", len(packets))
	}
	ops, ok1 := packets[0].(*packet.OnePassSignature)
	lit, ok2 := packets[1].(*literal)
	sig, ok3 := packets[2].(*packet.Signature)
	if !ok1 || !ok2 || !ok3 {
		return nil, malformed("its packets are not a one-pass signature, the payload and a signature, in that order (%s)", kinds(packets))
	}
	if sig.Version != 4 || ops.Version != 3 {
		return nil, malformed("it is a version %d signature; only version 4 signatures, which GnuPG 2.2 checks, are accepted", sig.Version)
	}
	if sig.SigType != packet.SigTypeBinary {
		return nil, malformed("the signature is of type %d, not a signature of binary data", sig.SigType)
	}
	if !ops.IsLast || ops.SigType != sig.SigType || ops.Hash != sig.Hash || ops.PubKeyAlgo != sig.PubKeyAlgo || sig.IssuerKeyId == nil || ops.KeyId != *sig.IssuerKeyId {
		return nil, malformed("its one-pass signature packet does not describe its signature")
	}
	return &message{ops: ops, body: lit.body, sig: sig}, nil
}

// literal is a literal data packet read whole.
type literal struct{ body []byte }

// maxPackets bounds the packets of a signed message.
const maxPackets = 8

// readPackets reads the packets of b, the contents of a literal data
// packet included; a compressed packet (if outer, and only as the one
// packet) is replaced by the packets it holds, decompressed to at most
// four times maxSignature.
func readPackets(b []byte, outer bool) ([]any, error) {
	r := packet.NewReader(bytes.NewReader(b))
	var out []any
	for {
		p, err := r.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, malformed("%v", cleanErr(err))
		}
		if len(out) == maxPackets {
			return nil, malformed("it holds more than %d packets", maxPackets)
		}
		switch p := p.(type) {
		case *packet.Compressed:
			if !outer || len(out) > 0 {
				return nil, malformed("it holds a compressed packet inside another packet")
			}
			inner, err := io.ReadAll(io.LimitReader(p.Body, 4*maxSignature+1))
			if err != nil {
				return nil, malformed("decompressing it: %v", cleanErr(err))
			}
			if len(inner) > 4*maxSignature {
				return nil, malformed("it decompresses to more than %d bytes", 4*maxSignature)
			}
			if _, err := r.Next(); !errors.Is(err, io.EOF) {
				return nil, malformed("something follows its compressed packet")
			}
			return readPackets(inner, false)
		case *packet.LiteralData:
			body, err := io.ReadAll(io.LimitReader(p.Body, maxPayload+1))
			if err != nil {
				return nil, malformed("reading its payload: %v", cleanErr(err))
			}
			if len(body) > maxPayload {
				return nil, malformed("its payload is more than %d bytes", maxPayload)
			}
			out = append(out, &literal{body: body})
		default:
			out = append(out, p)
		}
	}
}

func kinds(ps []any) string {
	s := ""
	for i, p := range ps {
		if i > 0 {
			s += ", "
		}
		switch p.(type) {
		case *packet.OnePassSignature:
			s += "one-pass signature"
		case *literal:
			s += "literal data"
		case *packet.Signature:
			s += "signature"
		default:
			s += fmt.Sprintf("%T", p)
		}
	}
	return s
}

func cleanErr(err error) string {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return "it ends too early"
	}
	return safeio.Quote(err.Error())
}

// UnverifiedClaim returns what the payload of signature claims, without
// checking the signature or who made it: for a signer sorting the
// signatures already stored for an image (to replace its own), never for
// trusting one. A signature that is not a simple signing signature is an
// error.
func UnverifiedClaim(signature []byte) (*Claim, error) {
	msg, err := readSignedMessage(signature)
	if err != nil {
		return nil, err
	}
	return ParsePayload(msg.body)
}
