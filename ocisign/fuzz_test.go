package ocisign_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp"

	"github.com/nix2aci/nix2aci/ocisign"
)

// Any payload: ParsePayload never panics, and what it accepts is a JSON
// object with the claim it returns.
func FuzzParsePayload(f *testing.F) {
	good, _ := ocisign.Payload("example.com/a:1", "sha256:"+hex64, "c", testTime)
	f.Add(good)
	f.Add([]byte(`{"critical":{"type":"atomic container signature","image":{"docker-manifest-digest":"sha512:` + hex64 + hex64 + `"},"identity":{"docker-reference":"x"}},"optional":{"timestamp":-1}}`))
	f.Add([]byte(`{"critical":{},"critical":{}}`))
	f.Add([]byte(`[[[[[[[[[[`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ocisign.ParsePayload(b)
		if err != nil {
			return
		}
		var v map[string]any
		if json.Unmarshal(b, &v) != nil {
			t.Fatalf("accepted invalid JSON %q", b)
		}
		if !strings.HasPrefix(c.ManifestDigest, "sha256:") && !strings.HasPrefix(c.ManifestDigest, "sha512:") {
			t.Fatalf("accepted the digest %q", c.ManifestDigest)
		}
	})
}

// Any signature bytes: Verify never panics and never accepts a signature
// that is not the trusted key's.
func FuzzVerify(f *testing.F) {
	key := nix2aciKey(f)
	m := []byte(testManifest)
	good := signed(f, key, m, "example.com/app:1")
	f.Add(good)
	f.Add(good[:40])
	f.Add(append(bytes.Clone(good), good...))
	f.Add([]byte{0xa3, 0x01, 0x63, 0x60}) // a compressed packet
	keyring := openpgp.EntityList{publicOnly(f, key)}
	f.Fuzz(func(t *testing.T, sig []byte) {
		v, err := ocisign.Verify(sig, keyring, m, "example.com/app:1")
		if err == nil && (v.ManifestDigest != digestOf(m) || v.Reference != "example.com/app:1") {
			t.Fatalf("accepted %+v", v)
		}
	})
}

// Any repository and digest: ReadLookasideRepo never panics, refuses or
// reads inside the tree only, and LookasideDir names a path inside it.
func FuzzReadLookasideRepo(f *testing.F) {
	root := f.TempDir()
	tree := filepath.Join(root, "tree")
	os.MkdirAll(filepath.Join(tree, "app@sha256="+hex64), 0o755)
	os.WriteFile(filepath.Join(tree, "app@sha256="+hex64, "signature-1"), []byte("sig"), 0o644)
	os.WriteFile(filepath.Join(root, "secret@sha256="+hex64), []byte("x"), 0o644)
	for _, s := range []string{"app", "../secret", "a/../../secret", "/etc", "a/b", "app@sha256=" + hex64} {
		f.Add(s, "sha256:"+hex64)
	}
	f.Add("app", "sha256:../../x")
	f.Fuzz(func(t *testing.T, repo, digest string) {
		sigs, err := ocisign.ReadLookasideRepo(tree, repo, digest)
		dir, derr := ocisign.LookasideDir(repo, digest)
		if (err == nil) != (derr == nil) {
			t.Fatalf("ReadLookasideRepo: %v, LookasideDir: %v", err, derr)
		}
		if derr != nil {
			return
		}
		if !filepath.IsLocal(dir) {
			t.Fatalf("%q, %q name %s, outside the tree", repo, digest, dir)
		}
		if len(sigs) > 0 && (repo != "app" || digest != "sha256:"+hex64) {
			t.Fatalf("%q, %q read %q", repo, digest, sigs)
		}
	})
}
