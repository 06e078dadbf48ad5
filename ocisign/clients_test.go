package ocisign_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"

	"github.com/nix2aci/nix2aci/internal/testsupport"
	"github.com/nix2aci/nix2aci/internal/testsupport/ocitest"
	"github.com/nix2aci/nix2aci/ocisign"
	"github.com/nix2aci/nix2aci/sign"
)

// The tests in this file check signatures with the real clients: skopeo
// 1.9 and podman 4.3 (GnuPG through gpgme), against a docker-registry on
// a loopback port. A missing tool fails the test.

// image is an OCI image layout holding one image under a tag.
type image struct {
	layout   string // the layout's directory
	tag      string
	manifest []byte
	digest   string
}

// writeBlob stores b in layout's blob store and returns its digest.
func writeBlob(t testing.TB, layout string, b []byte) string {
	t.Helper()
	d := digestOf(b)
	testsupport.WriteFile(t, filepath.Join(layout, "blobs", "sha256", strings.TrimPrefix(d, "sha256:")), b)
	return d
}

var (
	layerOnce         sync.Once
	layerGz, layerTar []byte
)

// busyboxLayer is a gzipped layer holding the static busybox as
// /bin/busybox, and its uncompressed tar.
func busyboxLayer(t testing.TB) (gz, raw []byte) {
	layerOnce.Do(func() {
		bin, err := os.ReadFile("/bin/busybox")
		if err != nil {
			t.Fatalf("reading the static busybox (package busybox-static): %v", err)
		}
		var tb bytes.Buffer
		tw := tar.NewWriter(&tb)
		tw.WriteHeader(&tar.Header{Name: "bin/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: time.Unix(1, 0)})
		tw.WriteHeader(&tar.Header{Name: "bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(bin)), ModTime: time.Unix(1, 0)})
		tw.Write(bin)
		tw.Close()
		var zb bytes.Buffer
		zw := gzip.NewWriter(&zb)
		zw.Write(tb.Bytes())
		zw.Close()
		layerGz, layerTar = zb.Bytes(), tb.Bytes()
	})
	return layerGz, layerTar
}

// makeImage writes an OCI layout in dir holding a one-layer busybox
// image tagged tag; annotation, if not empty, is set on the manifest so
// that its bytes differ.
func makeImage(t testing.TB, dir, tag, annotation string) *image {
	t.Helper()
	gz, raw := busyboxLayer(t)
	layer := writeBlob(t, dir, gz)
	config, _ := json.Marshal(map[string]any{
		"architecture": runtime.GOARCH, "os": "linux",
		"config": map[string]any{"Cmd": []string{"/bin/busybox", "echo", "hello from a signed image"}},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{digestOf(raw)}},
	})
	cfg := writeBlob(t, dir, config)
	m := map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg, "size": len(config)},
		"layers":        []any{map[string]any{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer, "size": len(gz)}},
	}
	if annotation != "" {
		m["annotations"] = map[string]string{"org.example.note": annotation}
	}
	manifest, _ := json.Marshal(m)
	md := writeBlob(t, dir, manifest)
	index, _ := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"manifests": []any{map[string]any{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": len(manifest),
			"annotations": map[string]string{"org.opencontainers.image.ref.name": tag}}},
	})
	os.WriteFile(filepath.Join(dir, "index.json"), index, 0o644)
	os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644)
	return &image{layout: dir, tag: tag, manifest: manifest, digest: md}
}

// importKey imports key's public part into the GnuPG home g.
func importKey(t testing.TB, g *testsupport.GPG, key *openpgp.Entity) {
	t.Helper()
	g.Run(nil, "--passphrase", "", "--import", g.File("import.asc", armoredPublic(t, key)))
}

// gpgKey is an RSA key made by gpg, whose primary key signs, perhaps
// with a signing subkey beside it (which gpg, and skopeo through gpgme,
// would sign with). Its secret part is loaded as nix2aci loads a key
// file.
type gpgKey struct {
	g      *testsupport.GPG
	secret *openpgp.Entity
	fpr    string // uppercase, as skopeo wants it
}

func newGPGKey(t testing.TB, signingSubkey bool) *gpgKey {
	g := testsupport.NewGPG(t)
	gpg := func(args ...string) []byte {
		t.Helper()
		return g.Run(nil, append([]string{"--passphrase", ""}, args...)...)
	}
	gpg("--quick-gen-key", "GPG Signer <gpg@example.com>", "rsa3072", "sign", "never")
	var fpr string
	for _, line := range strings.Split(string(gpg("--with-colons", "--list-secret-keys")), "\n") {
		if f := strings.Split(line, ":"); f[0] == "fpr" && fpr == "" {
			fpr = f[9]
		}
	}
	if signingSubkey {
		gpg("--quick-add-key", fpr, "rsa3072", "sign", "never")
	}
	secret, err := sign.ReadSigningKey(bytes.NewReader(gpg("--armor", "--export-secret-keys")), func() ([]byte, error) { return nil, nil })
	if err != nil {
		t.Fatal(err)
	}
	if want := map[bool]int{true: 1}[signingSubkey]; len(secret.Subkeys) != want || strings.ToLower(fpr) != sign.Fingerprint(secret) {
		t.Fatalf("the gpg key %s has %d subkeys", fpr, len(secret.Subkeys))
	}
	return &gpgKey{g: g, secret: secret, fpr: fpr}
}

func armoredPublic(t testing.TB, key *openpgp.Entity) []byte {
	var b bytes.Buffer
	if err := sign.WritePublicKey(&b, key); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func signFor(t testing.TB, key *openpgp.Entity, digest, ref string) []byte {
	t.Helper()
	p, err := ocisign.Payload(ref, digest, "nix2aci test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := ocisign.Sign(&b, key, p); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// skopeo standalone-verify (GnuPG through gpgme, keys from GNUPGHOME)
// accepts our signatures, made with a key nix2aci generates and with one
// gpg made, and refuses them for a changed manifest or another identity;
// ocisign.Verify agrees with it on every case.
func TestSkopeoStandaloneVerifyAcceptsOurs(t *testing.T) {
	ocitest.Need(t, "skopeo")
	gk := newGPGKey(t, true)
	nk := nix2aciKey(t)
	dir := t.TempDir()
	img := makeImage(t, filepath.Join(dir, "layout"), "1.0", "")
	const ref = "registry.example.com/nix2aci/busybox:1.0"
	manifest := testsupport.WriteFile(t, filepath.Join(dir, "manifest.json"), img.manifest)
	altered := testsupport.WriteFile(t, filepath.Join(dir, "altered.json"), append(bytes.Clone(img.manifest), '\n'))
	for name, key := range map[string]*openpgp.Entity{"nix2aci key": nk, "gpg key": gk.secret} {
		t.Run(name, func(t *testing.T) {
			g := testsupport.NewGPG(t)
			importKey(t, g, key)
			env := []string{"GNUPGHOME=" + g.Home}
			fpr := strings.ToUpper(sign.Fingerprint(key))
			sigBytes := signFor(t, key, img.digest, ref)
			sig := testsupport.WriteFile(t, filepath.Join(t.TempDir(), "signature-1"), sigBytes)
			keyring := openpgp.EntityList{publicOnly(t, key)}

			out, ok := testsupport.Run(t, env, "skopeo", "standalone-verify", manifest, ref, fpr, sig)
			if !ok || !strings.Contains(out, "Signature verified, digest "+img.digest) {
				t.Fatalf("skopeo refuses our signature:\n%s", out)
			}
			if _, err := ocisign.Verify(sigBytes, keyring, img.manifest, ref); err != nil {
				t.Errorf("ocisign.Verify: %v", err)
			}
			for _, c := range []struct {
				name, manifest, ref string
				mbytes              []byte
				skopeo              string
			}{
				{"changed manifest", altered, ref, append(bytes.Clone(img.manifest), '\n'), "does not match"},
				{"another tag", manifest, "registry.example.com/nix2aci/busybox:2.0", img.manifest, "does not match"},
			} {
				out, ok := testsupport.Run(t, env, "skopeo", "standalone-verify", c.manifest, c.ref, fpr, sig)
				if ok || !strings.Contains(out, c.skopeo) {
					t.Errorf("%s: skopeo standalone-verify: ok=%v\n%s", c.name, ok, out)
				}
				if _, err := ocisign.Verify(sigBytes, keyring, c.mbytes, c.ref); err == nil {
					t.Errorf("%s: ocisign.Verify accepts it", c.name)
				}
			}
		})
	}
}

// Signatures skopeo standalone-sign makes (gpg's, compressed) verify with
// ocisign.Verify, and fail it where they should. Given a key with a
// signing subkey, skopeo signs with the subkey, and then refuses its own
// signature, as ocisign.Verify does; Sign, with the same key, signs with
// the primary key, which skopeo accepts.
func TestSkopeoSignaturesVerifyHere(t *testing.T) {
	ocitest.Need(t, "skopeo")
	dir := t.TempDir()
	img := makeImage(t, filepath.Join(dir, "layout"), "1.0", "")
	const ref = "registry.example.com/nix2aci/busybox:1.0"
	manifest := testsupport.WriteFile(t, filepath.Join(dir, "manifest.json"), img.manifest)
	standaloneSign := func(gk *gpgKey) []byte {
		sigPath := filepath.Join(t.TempDir(), "skopeo.sig")
		if out, ok := testsupport.Run(t, []string{"GNUPGHOME=" + gk.g.Home}, "skopeo", "standalone-sign", manifest, ref, gk.fpr, "-o", sigPath); !ok {
			t.Fatalf("skopeo standalone-sign:\n%s", out)
		}
		sig, err := os.ReadFile(sigPath)
		if err != nil {
			t.Fatal(err)
		}
		return sig
	}

	gk := newGPGKey(t, false)
	sig := standaloneSign(gk)
	keyring := openpgp.EntityList{publicOnly(t, gk.secret)}
	v, err := ocisign.Verify(sig, keyring, img.manifest, ref)
	if err != nil {
		t.Fatalf("ocisign.Verify of skopeo's signature: %v", err)
	}
	if v.Fingerprint != strings.ToLower(gk.fpr) || v.ManifestDigest != img.digest || !strings.HasPrefix(v.Creator, "atomic ") {
		t.Errorf("got %+v", v)
	}
	var ve *sign.VerifyError
	if _, err := ocisign.Verify(sig, keyring, append(bytes.Clone(img.manifest), ' '), ref); !errors.As(err, &ve) || ve.Reason != ocisign.ReasonOtherManifest {
		t.Errorf("a changed manifest: %v", err)
	}
	if _, err := ocisign.Verify(sig, keyring, img.manifest, "registry.example.com/nix2aci/busybox:2.0"); !errors.As(err, &ve) || ve.Reason != ocisign.ReasonIdentity {
		t.Errorf("another identity: %v", err)
	}
	if _, err := ocisign.Verify(sig, openpgp.EntityList{publicOnly(t, nix2aciKey(t))}, img.manifest, ref); !errors.As(err, &ve) || ve.Reason != sign.ReasonUnknownKey {
		t.Errorf("an untrusted key: %v", err)
	}

	sk := newGPGKey(t, true)
	env := []string{"GNUPGHOME=" + sk.g.Home}
	subSig := standaloneSign(sk)
	if out, ok := testsupport.Run(t, env, "skopeo", "standalone-verify", manifest, ref, sk.fpr, testsupport.WriteFile(t, filepath.Join(dir, "subkey.sig"), subSig)); ok || !strings.Contains(out, "does not match expected fingerprint") {
		t.Errorf("skopeo standalone-verify of a signature by a subkey: accepted=%v\n%s", ok, out)
	}
	if _, err := ocisign.Verify(subSig, openpgp.EntityList{publicOnly(t, sk.secret)}, img.manifest, ref); !errors.As(err, &ve) || ve.Reason != ocisign.ReasonSubkey || !strings.Contains(err.Error(), "primary key") {
		t.Errorf("a signature by a subkey: %v", err)
	}
	ours := testsupport.WriteFile(t, filepath.Join(dir, "ours.sig"), signFor(t, sk.secret, img.digest, ref))
	if out, ok := testsupport.Run(t, env, "skopeo", "standalone-verify", manifest, ref, sk.fpr, ours); !ok {
		t.Errorf("skopeo refuses our signature by a key with a signing subkey:\n%s", out)
	}
}

// registry is a docker-registry on a loopback port, for the test's life.
type registry struct{ host string }

func startRegistry(t *testing.T) *registry {
	t.Helper()
	return &registry{host: ocitest.StartT(t).Host}
}

// push copies img to the registry as repo:tag without signing, and checks
// that the registry holds the manifest's very bytes.
func (r *registry) push(t *testing.T, img *image, repoTag string) string {
	t.Helper()
	dir := t.TempDir()
	policy := testsupport.WriteFile(t, filepath.Join(dir, "policy.json"), []byte(`{"default":[{"type":"insecureAcceptAnything"}]}`))
	ref := r.host + "/" + repoTag
	if out, ok := testsupport.Run(t, nil, "skopeo", "copy", "--policy", policy, "--registries.d", dir, "--dest-tls-verify=false", "oci:"+img.layout+":"+img.tag, "docker://"+ref); !ok {
		t.Fatalf("skopeo copy to the registry:\n%s", out)
	}
	repo, tag, _ := strings.Cut(repoTag, ":")
	req, _ := http.NewRequest("GET", "http://"+r.host+"/v2/"+repo+"/manifests/"+tag, nil)
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, _ := io.ReadAll(resp.Body)
	if !bytes.Equal(got, img.manifest) {
		t.Fatalf("the registry holds another manifest for %s:\n%s", ref, got)
	}
	return ref
}

// The clients themselves: with a policy.json requiring signedBy our key
// for the registry, and the lookaside tree WriteLookaside wrote named in
// registries.d, skopeo copy and podman pull accept the signed image and
// refuse one unsigned, one whose manifest was changed after signing, one
// signed for another identity and one signed by a key the policy does
// not name.
func TestClientsEnforceOurSignatures(t *testing.T) {
	ocitest.Need(t, "skopeo", "podman", "docker-registry")
	reg := startRegistry(t)
	dir := t.TempDir()
	nk := nix2aciKey(t)
	gk := newGPGKey(t, true)
	stranger := rsaKey(t, 2048, nil)

	img := makeImage(t, filepath.Join(dir, "layout"), "latest", "")
	changed := makeImage(t, filepath.Join(dir, "changed"), "latest", "changed after signing")
	lookaside := filepath.Join(dir, "lookaside")

	signedRef := reg.push(t, img, "nix2aci/busybox:signed")
	gpgRef := reg.push(t, img, "nix2aci/busybox:gpg")
	unsignedRef := reg.push(t, img, "nix2aci/unsigned:latest")
	changedRef := reg.push(t, changed, "nix2aci/changed:latest")
	renamedRef := reg.push(t, img, "nix2aci/renamed:latest")
	strangerRef := reg.push(t, img, "nix2aci/stranger:latest")

	// The signed tags share one manifest, so their signatures share the
	// lookaside directory: one per tag.
	if err := ocisign.WriteLookaside(lookaside, signedRef, img.digest, signFor(t, nk, img.digest, signedRef), signFor(t, gk.secret, img.digest, gpgRef)); err != nil {
		t.Fatal(err)
	}
	// The original manifest's signature, put beside the changed one.
	if err := ocisign.WriteLookaside(lookaside, changedRef, changed.digest, signFor(t, nk, img.digest, changedRef)); err != nil {
		t.Fatal(err)
	}
	// A good signature for another name.
	if err := ocisign.WriteLookaside(lookaside, renamedRef, img.digest, signFor(t, nk, img.digest, signedRef)); err != nil {
		t.Fatal(err)
	}
	if err := ocisign.WriteLookaside(lookaside, strangerRef, img.digest, signFor(t, stranger, img.digest, strangerRef)); err != nil {
		t.Fatal(err)
	}

	registriesD := fmt.Sprintf("docker:\n  %s:\n    lookaside: file://%s\n", reg.host, lookaside)
	keys := testsupport.WriteFile(t, filepath.Join(dir, "keys.asc"), append(armoredPublic(t, nk), armoredPublic(t, gk.secret)...))
	policy, _ := json.Marshal(map[string]any{
		"default": []any{map[string]string{"type": "reject"}},
		"transports": map[string]any{"docker": map[string]any{
			reg.host: []any{map[string]string{"type": "signedBy", "keyType": "GPGKeys", "keyPath": keys}},
		}},
	})
	policyPath := testsupport.WriteFile(t, filepath.Join(dir, "policy.json"), policy)
	regD := filepath.Join(dir, "registries.d")
	testsupport.WriteFile(t, filepath.Join(regD, "nix2aci.yaml"), []byte(registriesD))

	// podman reads registries.d from $HOME/.config/containers; its
	// storage and configuration are the test's own.
	home := filepath.Join(dir, "home")
	testsupport.WriteFile(t, filepath.Join(home, ".config", "containers", "registries.d", "nix2aci.yaml"), []byte(registriesD))
	registriesConf := testsupport.WriteFile(t, filepath.Join(dir, "registries.conf"), []byte("unqualified-search-registries = []\n"))
	storage := filepath.Join(dir, "storage")
	// podman wants a run root of at most 50 characters.
	runroot, err := os.MkdirTemp("", "podman")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(runroot) })
	podmanEnv := []string{"HOME=" + home, "CONTAINERS_REGISTRIES_CONF=" + registriesConf, "XDG_RUNTIME_DIR=" + filepath.Join(dir, "run")}
	podman := func(args ...string) (string, bool) {
		return testsupport.Run(t, podmanEnv, "podman", append([]string{"--root", filepath.Join(storage, "root"), "--runroot", runroot, "--storage-driver", "vfs", "--events-backend", "none", "--cgroup-manager", "cgroupfs"}, args...)...)
	}

	skopeo := func(ref string) (string, bool) {
		out := filepath.Join(t.TempDir(), "out")
		o, ok := testsupport.Run(t, nil, "skopeo", "copy", "--policy", policyPath, "--registries.d", regD, "--src-tls-verify=false", "docker://"+ref, "dir:"+out)
		if ok {
			if got, err := os.ReadFile(filepath.Join(out, "manifest.json")); err != nil || !bytes.Equal(got, img.manifest) {
				t.Errorf("skopeo copied another manifest: %v", err)
			}
		}
		return o, ok
	}
	for _, ref := range []string{signedRef, gpgRef} {
		if out, ok := skopeo(ref); !ok {
			t.Errorf("skopeo copy refuses %s:\n%s", ref, out)
		}
		if out, ok := podman("pull", "--tls-verify=false", "--signature-policy", policyPath, ref); !ok {
			t.Errorf("podman pull refuses %s:\n%s", ref, out)
		}
	}
	// What podman pulled is the image signed.
	if out, ok := podman("image", "inspect", "--format", "{{.Digest}}", signedRef); !ok || strings.TrimSpace(out) != img.digest {
		t.Errorf("podman image inspect %s: %v\n%s", signedRef, ok, out)
	}
	for _, c := range []struct{ name, ref, why string }{
		{"unsigned", unsignedRef, "signature"},
		{"manifest changed after signing", changedRef, "does not match"},
		{"signed for another identity", renamedRef, "not accepted"},
		{"signed by a key the policy does not name", strangerRef, "Invalid GPG signature"},
	} {
		if out, ok := skopeo(c.ref); ok || !strings.Contains(out, c.why) {
			t.Errorf("%s: skopeo copy: accepted=%v, want a refusal saying %q:\n%s", c.name, ok, c.why, out)
		}
		if out, ok := podman("pull", "--tls-verify=false", "--signature-policy", policyPath, c.ref); ok || !strings.Contains(out, c.why) {
			t.Errorf("%s: podman pull: accepted=%v, want a refusal saying %q:\n%s", c.name, ok, c.why, out)
		}
	}
	// What the clients refused, ocisign.Verify refuses too.
	keyring := openpgp.EntityList{publicOnly(t, nk), publicOnly(t, gk.secret)}
	for _, c := range []struct {
		ref      string
		manifest []byte
		digest   string
		ok       bool
	}{
		{signedRef, img.manifest, img.digest, true},
		{changedRef, changed.manifest, changed.digest, false},
		{renamedRef, img.manifest, img.digest, false},
		{strangerRef, img.manifest, img.digest, false},
	} {
		sigs, err := ocisign.ReadLookaside(lookaside, c.ref, c.digest)
		if err != nil || len(sigs) == 0 {
			t.Fatalf("%s: %d signatures, %v", c.ref, len(sigs), err)
		}
		_, err = ocisign.VerifyWith(sigs[0], keyring, c.manifest, c.ref, ocisign.VerifyOptions{Identity: ocisign.MatchRepoDigestOrExact})
		if (err == nil) != c.ok {
			t.Errorf("%s: ocisign.Verify: %v", c.ref, err)
		}
	}
}

// A registry that offers the signature extension (its /v2/ answer says
// X-Registry-Supports-Signatures: 1) is asked for signatures at
// /extensions/v2/<repo>/signatures/<digest>; answered with
// ExtensionSignatures of what ReadLookasideRepo reads, skopeo copy with a
// signedBy policy and no lookaside configured accepts the signed image and
// refuses an unsigned one.
func TestSkopeoReadsSignaturesFromTheExtension(t *testing.T) {
	ocitest.Need(t, "skopeo", "docker-registry")
	reg := startRegistry(t)
	dir := t.TempDir()
	nk := nix2aciKey(t)
	img := makeImage(t, filepath.Join(dir, "layout"), "latest", "")
	reg.push(t, img, "nix2aci/busybox:signed")
	reg.push(t, img, "nix2aci/unsigned:latest")
	lookaside := filepath.Join(dir, "lookaside")

	var asked []string
	var mu sync.Mutex
	target, _ := url.Parse("http://" + reg.host)
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.ModifyResponse = func(resp *http.Response) error {
		if resp.Request.URL.Path == "/v2/" {
			resp.Header.Set("X-Registry-Supports-Signatures", "1")
		}
		return nil
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rest, ok := strings.CutPrefix(r.URL.Path, "/extensions/v2/")
		if !ok {
			proxy.ServeHTTP(w, r)
			return
		}
		mu.Lock()
		asked = append(asked, r.URL.Path)
		mu.Unlock()
		i := strings.LastIndex(rest, "/signatures/")
		if i < 0 {
			http.NotFound(w, r)
			return
		}
		digest := rest[i+len("/signatures/"):]
		sigs, err := ocisign.ReadLookasideRepo(lookaside, rest[:i], digest)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body, err := ocisign.ExtensionSignatures(digest, sigs)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	signedRef := host + "/nix2aci/busybox:signed"
	if err := ocisign.WriteLookaside(lookaside, signedRef, img.digest, signFor(t, nk, img.digest, signedRef)); err != nil {
		t.Fatal(err)
	}
	policy, _ := json.Marshal(map[string]any{
		"default": []any{map[string]string{"type": "reject"}},
		"transports": map[string]any{"docker": map[string]any{
			host: []any{map[string]string{"type": "signedBy", "keyType": "GPGKeys", "keyPath": testsupport.WriteFile(t, filepath.Join(dir, "key.asc"), armoredPublic(t, nk))}},
		}},
	})
	policyPath := testsupport.WriteFile(t, filepath.Join(dir, "policy.json"), policy)
	regD := filepath.Join(dir, "registries.d") // empty: no lookaside
	os.MkdirAll(regD, 0o755)
	copyFrom := func(ref string) (string, bool) {
		return testsupport.Run(t, nil, "skopeo", "copy", "--policy", policyPath, "--registries.d", regD, "--src-tls-verify=false", "docker://"+ref, "dir:"+filepath.Join(t.TempDir(), "out"))
	}
	if out, ok := copyFrom(signedRef); !ok {
		t.Errorf("skopeo copy refuses the image signed through the extension:\n%s", out)
	}
	if out, ok := copyFrom(host + "/nix2aci/unsigned:latest"); ok || !strings.Contains(out, "signature") {
		t.Errorf("skopeo copy of an unsigned image: accepted=%v\n%s", ok, out)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := "/extensions/v2/nix2aci/busybox/signatures/" + img.digest; len(asked) == 0 || asked[0] != want {
		t.Errorf("skopeo asked for %v, want %s", asked, want)
	}
}
