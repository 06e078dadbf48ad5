package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp"

	"github.com/nix2aci/nix2aci/internal/testsupport"
	"github.com/nix2aci/nix2aci/internal/testsupport/testkey"
	"github.com/nix2aci/nix2aci/ocisign"
	"github.com/nix2aci/nix2aci/sign"
)

// smallLayout writes an OCI image layout of one tiny layer and returns
// its manifest's digest.
func smallLayout(t *testing.T, dir string) string {
	t.Helper()
	put := func(data string) (string, int) {
		sum := sha256.Sum256([]byte(data))
		h := hex.EncodeToString(sum[:])
		testsupport.WriteFile(t, filepath.Join(dir, "blobs", "sha256", h), []byte(data))
		return "sha256:" + h, len(data)
	}
	cd, cn := put(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`)
	ld, ln := put("a layer")
	m := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":%q,"size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":%q,"size":%d}]}`, cd, cn, ld, ln)
	md, mn := put(m)
	index := fmt.Sprintf(`{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":%q,"size":%d,"annotations":{"org.opencontainers.image.ref.name":"1.0"}}]}`, md, mn)
	for name, data := range map[string]string{"index.json": index, "oci-layout": `{"imageLayoutVersion":"1.0.0"}`} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return md
}

// Signers of one image under several identities of one repository, all
// at once, keep each other's signatures: the lookaside directory they
// share ends up with one good signature per identity.
func TestConcurrentOCISignersKeepEachOthersSignatures(t *testing.T) {
	dir := t.TempDir()
	image := filepath.Join(dir, "app.oci")
	digest := smallLayout(t, image)
	key := testkey.Key(t, sign.KeyOptions{Name: "Signer", Email: "s@example.com", Algorithm: sign.RSA4096})
	var priv bytes.Buffer
	if err := sign.WritePrivateKey(&priv, key); err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "key.asc")
	if err := os.WriteFile(keyFile, priv.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			app := newApp()
			app.Writer, app.ErrWriter = io.Discard, io.Discard
			errs[i] = app.RunContext(context.Background(), []string{"nix2aci", "sign", "--key", keyFile, "--identity", fmt.Sprintf("registry.example.com/app:%d", i), image})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("signer %d: %v", i, err)
		}
	}
	sigs, err := ocisign.ReadLookaside(filepath.Join(dir, "sigstore"), "registry.example.com/app:0", digest)
	if err != nil || len(sigs) != n {
		t.Fatalf("%d signatures in the lookaside tree (%v), want %d", len(sigs), err, n)
	}
	manifest, err := os.ReadFile(filepath.Join(image, "blobs", "sha256", digest[len("sha256:"):]))
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		ref := fmt.Sprintf("registry.example.com/app:%d", i)
		ok := false
		for _, s := range sigs {
			if _, err := ocisign.Verify(s, openpgp.EntityList{key}, manifest, ref); err == nil {
				ok = true
			}
		}
		if !ok {
			t.Errorf("no good signature for %s", ref)
		}
	}
}
