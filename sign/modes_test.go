package sign_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/nix2aci/nix2aci/sign"
)

// The default (fast) mode checks the signature over the file's bytes, the
// key, and its trust for the manifest's name; --full also validates the
// archive. An archive with garbage after its end, signed by a trusted
// key, passes the first and not the second.
func TestFastVerifyChecksWhatADeployNeeds(t *testing.T) {
	key := testKey(t)
	img := makeACI(t, "good.example/app", "reviewed")
	fast := func(img, sig []byte, tr *sign.Trust) (*sign.Verified, error) {
		return sign.VerifyWith(bytes.NewReader(img), bytes.NewReader(sig), tr, sign.VerifyOptions{})
	}
	v, err := fast(img, signBytes(t, key, img, withImage(t, img)), rootTrust(key))
	if err != nil || v.Name != "good.example/app" || v.Full || v.ImageID != "" || v.Manifest == nil {
		t.Fatalf("fast verify of a good image: %+v, %v", v, err)
	}

	suffixed := append(bytes.Clone(img), "garbage after the archive"...)
	sig := signBytes(t, key, suffixed)
	if _, err := fast(suffixed, sig, rootTrust(key)); err != nil {
		t.Errorf("fast verify reads the signature and the manifest only: %v", err)
	}
	_, err = sign.Verify(bytes.NewReader(suffixed), bytes.NewReader(sig), rootTrust(key), time.Time{})
	wantReason(t, "full verify of a suffixed image", err, sign.ReasonInvalidImage, "not a valid ACI")

	// Trust is for the name the manifest carries, in both modes.
	prefixed := sign.NewTrust()
	prefixed.AddPrefix("good.example", key)
	evil := makeACI(t, "evil.example/app", "other")
	_, err = fast(evil, signBytes(t, key, evil), prefixed)
	wantReason(t, "fast verify, key trusted for another prefix", err, sign.ReasonUntrusted, "not for evil.example/app")
	if _, err := fast(img, signBytes(t, key, img), prefixed); err != nil {
		t.Errorf("fast verify under the trusted prefix: %v", err)
	}

	// A changed file is told apart without an image ID.
	changed := makeACI(t, "good.example/app", "changed")
	_, err = fast(changed, signBytes(t, key, img, withImage(t, img)), rootTrust(key))
	wantReason(t, "fast verify of a changed image", err, sign.ReasonBadSignature, "has changed since it was signed")

	// A signed file that is not an ACI: the signature is good, the
	// manifest cannot be read.
	junk := []byte("not an image at all")
	_, err = fast(junk, signBytes(t, key, junk), rootTrust(key))
	wantReason(t, "fast verify of a signed non-image", err, sign.ReasonInvalidImage, "not a valid ACI")
}
