package sign

import (
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// CheckPacket applies Verify's rules to sig, a signature packet that has
// been checked cryptographically against key (one of the keys of a
// keyring): a strong hash, dated no later than now (plus a few minutes of
// clock skew) and not before the key was made, not expired, no unknown
// critical notation, and a key (primary and subkey) neither expired nor
// revoked, and valid when it signed. It is for signatures over other
// things than ACIs, such as container images' simple signing; a failure
// is a *VerifyError.
func CheckPacket(sig *packet.Signature, key openpgp.Key, now time.Time) error {
	if !strongHashes[sig.Hash] {
		return fail(ReasonWeakHash, "the signature by %s uses %s, which is too weak to trust; sign again with SHA-256 or SHA-512", keyName(key), hashName(sig.Hash))
	}
	return checkPacket(&candidate{sig: sig, key: key}, now)
}
