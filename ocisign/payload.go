package ocisign

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"time"

	"github.com/nix2aci/nix2aci/internal/safeio"
)

// signatureType is critical.type of every simple signing payload.
const signatureType = "atomic container signature"

// maxPayload bounds a payload: one is a few hundred bytes.
const maxPayload = 16 << 10

// Claim is what a payload says: the image (by manifest digest) and the
// identity its signer gives it, and the optional creator and time.
type Claim struct {
	ManifestDigest string // critical.image.docker-manifest-digest
	Reference      string // critical.identity.docker-reference, as written
	Creator        string // optional.creator; empty if absent
	Timestamp      time.Time
	HasTimestamp   bool // optional.timestamp was present
}

// The payload's JSON, with its members in the order containers/image
// writes them (it marshals maps, so members come sorted by name).
type payloadJSON struct {
	Critical criticalJSON `json:"critical"`
	Optional optionalJSON `json:"optional"`
}

type criticalJSON struct {
	Identity struct {
		DockerReference string `json:"docker-reference"`
	} `json:"identity"`
	Image struct {
		DockerManifestDigest string `json:"docker-manifest-digest"`
	} `json:"image"`
	Type string `json:"type"`
}

type optionalJSON struct {
	Creator   string `json:"creator,omitempty"`
	Timestamp *int64 `json:"timestamp,omitempty"`
}

// Payload returns the JSON document a simple signing signature signs: the
// image named by manifestDigest ("sha256:<hex>") claimed as ref, which is
// normalised to its fully explicit form (busybox:1 is signed as
// docker.io/library/busybox:1) and must carry a tag or a digest, since
// podman's policies match a name without one against nothing. creator
// (e.g. "nix2aci 1.2") and at (seconds are kept) are left out when empty
// or zero. The bytes are those containers/image writes for the same
// values: compact JSON, members sorted by name.
func Payload(ref, manifestDigest, creator string, at time.Time) ([]byte, error) {
	r, err := ParseReference(ref)
	if err != nil {
		return nil, err
	}
	if r.Tag == "" && r.Digest == "" {
		return nil, &ReferenceError{Ref: ref, Msg: "it names no tag or digest, and a signature for a bare name matches no pull; sign " + r.Name() + ":latest or another tag"}
	}
	if _, _, err := parseDigest(manifestDigest); err != nil {
		return nil, fmt.Errorf("manifest digest %w", err)
	}
	var p payloadJSON
	p.Critical.Identity.DockerReference = r.String()
	p.Critical.Image.DockerManifestDigest = manifestDigest
	p.Critical.Type = signatureType
	p.Optional.Creator = creator
	if !at.IsZero() {
		ts := at.Unix()
		p.Optional.Timestamp = &ts
	}
	return json.Marshal(p)
}

// PayloadError reports a payload that is not a simple signing payload
// this package (and containers/image) accepts.
type PayloadError struct{ Msg string }

func (e *PayloadError) Error() string { return "the signed payload is not valid: " + e.Msg }

func payloadErr(format string, args ...any) error {
	return &PayloadError{Msg: fmt.Sprintf(format, args...)}
}

// ParsePayload reads a payload as strictly as containers/image does: the
// top level and critical, critical.image and critical.identity objects
// hold exactly their known members, with no member twice and nothing
// after the document; critical.type is "atomic container signature";
// optional may hold other members, but creator must be a string and
// timestamp an integer. The digest must be sha256 or sha512. The
// reference is returned as written, not checked: the caller compares it
// with what it expects.
func ParsePayload(b []byte) (*Claim, error) {
	if len(b) > maxPayload {
		return nil, payloadErr("it is %d bytes, more than the %d a payload may be", len(b), maxPayload)
	}
	top, err := members(b, "the document")
	if err != nil {
		return nil, err
	}
	if err := exactly(top, "the document", "critical", "optional"); err != nil {
		return nil, err
	}
	critical, err := members(top["critical"], "critical")
	if err != nil {
		return nil, err
	}
	optional, err := members(top["optional"], "optional")
	if err != nil {
		return nil, err
	}
	if err := exactly(critical, "critical", "type", "image", "identity"); err != nil {
		return nil, err
	}
	var typ string
	if err := stringValue(critical["type"], "critical.type", &typ); err != nil {
		return nil, err
	}
	if typ != signatureType {
		return nil, payloadErr("critical.type is %s, not %q", safeio.QuoteAlways(typ), signatureType)
	}
	image, err := members(critical["image"], "critical.image")
	if err != nil {
		return nil, err
	}
	if err := exactly(image, "critical.image", "docker-manifest-digest"); err != nil {
		return nil, err
	}
	identity, err := members(critical["identity"], "critical.identity")
	if err != nil {
		return nil, err
	}
	if err := exactly(identity, "critical.identity", "docker-reference"); err != nil {
		return nil, err
	}
	c := &Claim{}
	if err := stringValue(image["docker-manifest-digest"], "critical.image.docker-manifest-digest", &c.ManifestDigest); err != nil {
		return nil, err
	}
	if _, _, err := parseDigest(c.ManifestDigest); err != nil {
		return nil, payloadErr("critical.image.docker-manifest-digest %v", err)
	}
	if err := stringValue(identity["docker-reference"], "critical.identity.docker-reference", &c.Reference); err != nil {
		return nil, err
	}
	if raw, ok := optional["creator"]; ok {
		if err := stringValue(raw, "optional.creator", &c.Creator); err != nil {
			return nil, err
		}
	}
	if raw, ok := optional["timestamp"]; ok {
		var f float64
		if err := json.Unmarshal(raw, &f); err != nil {
			return nil, payloadErr("optional.timestamp is not a number")
		}
		// Seconds that fit an int64 and convert back exactly.
		if f != math.Trunc(f) || f < -(1<<63) || f >= 1<<63 {
			return nil, payloadErr("optional.timestamp is not an integer number of seconds")
		}
		c.Timestamp, c.HasTimestamp = time.Unix(int64(f), 0).UTC(), true
	}
	return c, nil
}

// maxMembers bounds the members of one object of a payload.
const maxMembers = 64

// members reads b as one JSON object, refusing a member named twice and
// anything after the object.
func members(b []byte, what string) (map[string]json.RawMessage, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	if t, err := d.Token(); err != nil || t != json.Delim('{') {
		return nil, payloadErr("%s is not a JSON object", what)
	}
	out := map[string]json.RawMessage{}
	for d.More() {
		t, err := d.Token()
		if err != nil {
			return nil, payloadErr("%s is not valid JSON: %v", what, err)
		}
		key, ok := t.(string)
		if !ok {
			return nil, payloadErr("%s is not valid JSON", what)
		}
		if _, dup := out[key]; dup {
			return nil, payloadErr("%s names %s twice", what, safeio.QuoteAlways(key))
		}
		if len(out) == maxMembers {
			return nil, payloadErr("%s has more than %d members", what, maxMembers)
		}
		var v json.RawMessage
		if err := d.Decode(&v); err != nil {
			return nil, payloadErr("%s is not valid JSON: %v", what, err)
		}
		out[key] = v
	}
	if t, err := d.Token(); err != nil || t != json.Delim('}') {
		return nil, payloadErr("%s is not valid JSON", what)
	}
	if _, err := d.Token(); !errors.Is(err, io.EOF) {
		return nil, payloadErr("%s is followed by more data", what)
	}
	return out, nil
}

// exactly checks that m has the members named and no other.
func exactly(m map[string]json.RawMessage, what string, names ...string) error {
	for _, n := range names {
		if _, ok := m[n]; !ok {
			return payloadErr("%s has no %q member", what, n)
		}
	}
	if len(m) != len(names) {
		for k := range m {
			known := false
			for _, n := range names {
				known = known || k == n
			}
			if !known {
				return payloadErr("%s has the member %s, which is not known; a signature with an unknown critical member is refused", what, safeio.QuoteAlways(k))
			}
		}
	}
	return nil
}

func stringValue(raw json.RawMessage, what string, s *string) error {
	if len(raw) == 0 || raw[0] != '"' {
		return payloadErr("%s is not a string", what)
	}
	if err := json.Unmarshal(raw, s); err != nil {
		return payloadErr("%s is not a valid string", what)
	}
	return nil
}
