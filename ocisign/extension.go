package ocisign

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
)

// extensionSignature is one signature in the answer of the registry
// signature extension, as containers/image reads it: schemaVersion 2,
// type "atomic", the signature's bytes in base64, and a name
// "<manifest digest>@<a name unique for the image>".
type extensionSignature struct {
	SchemaVersion int    `json:"schemaVersion"`
	Type          string `json:"type"`
	Name          string `json:"name"`
	Content       []byte `json:"content"`
}

// ExtensionSignatures returns the JSON body with which a registry answers
// GET /extensions/v2/<repo>/signatures/<digest> (the docker/distribution
// API extension OpenShift's registry brought, which podman and skopeo use
// instead of a lookaside tree when the registry's /v2/ answer carries
// X-Registry-Supports-Signatures: 1): sigs, those ReadLookasideRepo reads
// for repo and digest, each named by digest and the start of its own
// sha256, so that names stay the same from one answer to the next.
func ExtensionSignatures(digest string, sigs [][]byte) ([]byte, error) {
	if _, _, err := parseDigest(digest); err != nil {
		return nil, fmt.Errorf("manifest digest %w", err)
	}
	out := struct {
		Signatures []extensionSignature `json:"signatures"`
	}{Signatures: []extensionSignature{}}
	for _, s := range sigs {
		sum := sha256.Sum256(s)
		out.Signatures = append(out.Signatures, extensionSignature{SchemaVersion: 2, Type: "atomic", Name: digest + "@" + hex.EncodeToString(sum[:16]), Content: s})
	}
	return json.Marshal(out)
}
