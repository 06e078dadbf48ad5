package ocisign_test

import (
	"testing"

	"github.com/nix2aci/nix2aci/ocisign"
)

// ReadClaim reads what a signature names without a key, and refuses what
// is not a signed message.
func TestReadClaim(t *testing.T) {
	manifest := []byte(`{"schemaVersion":2}`)
	sig := signed(t, rsaKey(t, 2048, nil), manifest, "registry.example.com/app:1.0")
	c, err := ocisign.ReadClaim(sig)
	if err != nil || c.Reference != "registry.example.com/app:1.0" || c.ManifestDigest != digestOf(manifest) {
		t.Errorf("ReadClaim: %+v, %v", c, err)
	}
	for _, bad := range [][]byte{nil, manifest, sig[:len(sig)/2]} {
		if _, err := ocisign.ReadClaim(bad); err == nil {
			t.Errorf("ReadClaim(%q) accepted it", bad)
		}
	}
}
