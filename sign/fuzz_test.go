package sign_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nix2aci/nix2aci/aci"
	"github.com/nix2aci/nix2aci/sign"
)

// Any signature file: Verify never panics and never accepts one not made
// by the trusted key.
func FuzzVerifySignature(f *testing.F) {
	key := testKey(f)
	img := makeACI(f, "example.com/app", "x")
	good := signBytes(f, key, img)
	f.Add(good)
	f.Add(joined(f, body(f, good), body(f, good)))
	f.Add([]byte("-----BEGIN PGP SIGNATURE-----\n\nwsBc\n-----END PGP SIGNATURE-----\n"))
	f.Add([]byte{})
	tr := rootTrust(key)
	f.Fuzz(func(t *testing.T, sig []byte) {
		v, err := sign.Verify(bytes.NewReader(img), bytes.NewReader(sig), tr, time.Time{})
		if err == nil && v.Fingerprint != sign.Fingerprint(key) {
			t.Fatalf("accepted a signature by %s", v.Fingerprint)
		}
	})
}

// Any prefix: WriteTrust refuses it or writes inside the trust directory,
// at the path the prefix names.
func FuzzTrustPrefix(f *testing.F) {
	key := testKey(f)
	for _, p := range []string{"example.com/app", "a/../../x", "a//b", "/abs", "..", "a/./b", "A", "a~b.c-d/e"} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, prefix string) {
		top := t.TempDir()
		dir := filepath.Join(top, "trust")
		p, err := sign.WriteTrust(dir, prefix, false, key)
		if err != nil {
			if ents, _ := os.ReadDir(top); len(ents) > 1 {
				t.Fatalf("a refused prefix %q wrote %v", prefix, ents)
			}
			return
		}
		want := filepath.Join(dir, "prefix.d", filepath.FromSlash(prefix), sign.Fingerprint(key))
		if p != want || !strings.HasPrefix(p, dir+"/") {
			t.Fatalf("prefix %q wrote %s, want %s", prefix, p, want)
		}
	})
}

// Any image bytes, signed: the image ID verify computes for a dependency
// (decompressing without validating) is the one aci.Inspect computes
// whenever Inspect accepts the image, and verify never accepts an image
// whose manifest it could not read.
func FuzzVerifyImageID(f *testing.F) {
	key, err := sign.GenerateKey(sign.KeyOptions{Name: "Fuzz", Email: "fuzz@example.com", Algorithm: sign.Ed25519})
	if err != nil {
		f.Fatal(err)
	}
	img := makeACI(f, "example.com/app", "x")
	f.Add(img)
	f.Add(img[:len(img)-8])
	f.Add(append(append([]byte{}, img...), img...))
	f.Add([]byte{0x1f, 0x8b})
	tr := rootTrust(key)
	f.Fuzz(func(t *testing.T, data []byte) {
		sig := signBytes(t, key, data)
		v, err := sign.VerifyWith(bytes.NewReader(data), bytes.NewReader(sig), tr, sign.VerifyOptions{ImageID: true, MaxImageSize: 64 << 20})
		info, inspectErr := aci.InspectLimited(bytes.NewReader(data), 64<<20)
		switch {
		case inspectErr == nil && err != nil:
			t.Fatalf("Inspect accepts the image (%s); verify: %v", info.ImageID, err)
		case inspectErr == nil && v.ImageID != info.ImageID:
			t.Fatalf("verify computed %s, Inspect %s", v.ImageID, info.ImageID)
		case err == nil && (v.Manifest == nil || !strings.HasPrefix(v.ImageID, "sha512-")):
			t.Fatalf("accepted %+v", v)
		}
	})
}
