package ocisign

// ReadClaim returns what signature claims (the manifest digest and
// identity its payload names) without checking who signed it or whether
// it verifies: enough to pick, among signatures at hand, those that name
// an image as a given reference, for a client to verify later. The
// message and payload are parsed as strictly as Verify parses them.
func ReadClaim(signature []byte) (*Claim, error) {
	msg, err := readSignedMessage(signature)
	if err != nil {
		return nil, err
	}
	return ParsePayload(msg.body)
}
