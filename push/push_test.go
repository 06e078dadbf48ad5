package push_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"

	"github.com/nix2aci/nix2aci/internal/testsupport"
	"github.com/nix2aci/nix2aci/internal/testsupport/ocitest"
	"github.com/nix2aci/nix2aci/push"
	"github.com/nix2aci/nix2aci/sign"
)

// gzLayer is a gzipped tar holding one file of size pseudo-random bytes
// from seed (random, so that gzip keeps its size).
func gzLayer(t testing.TB, name string, size int, seed uint64) []byte {
	t.Helper()
	data := make([]byte, size)
	r := rand.New(rand.NewPCG(seed, seed))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	tw := tar.NewWriter(zw)
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(size), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	tw.Write(data)
	tw.Close()
	zw.Close()
	return b.Bytes()
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

func diffID(t testing.TB, gz []byte) string {
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return sha(b)
}

// must returns v, or panics with err (which fails the test).
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

type layout struct {
	dir    string
	digest string
	layers [][]byte
}

// makeLayout writes an OCI image layout of one image, its layers the
// gzipped tars given, under tag, as nix2aci build --format oci lays one
// out.
func makeLayout(t testing.TB, dir, tag string, layers ...[]byte) *layout {
	t.Helper()
	blob := func(b []byte) string {
		d := sha(b)
		testsupport.WriteFile(t, filepath.Join(dir, "blobs", "sha256", strings.TrimPrefix(d, "sha256:")), b)
		return d
	}
	var diffIDs, descs []any
	for _, l := range layers {
		diffIDs = append(diffIDs, diffID(t, l))
		descs = append(descs, map[string]any{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": blob(l), "size": len(l)})
	}
	cfg := must(json.Marshal(map[string]any{"architecture": "amd64", "os": "linux", "config": map[string]any{"Cmd": []string{"/app"}}, "rootfs": map[string]any{"type": "layers", "diff_ids": diffIDs}}))
	m := must(json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": blob(cfg), "size": len(cfg)}, "layers": descs}))
	md := blob(m)
	testsupport.WriteFile(t, filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`))
	testsupport.WriteFile(t, filepath.Join(dir, "index.json"), must(json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
		"manifests": []any{map[string]any{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": len(m), "annotations": map[string]string{"org.opencontainers.image.ref.name": tag}}}})))
	return &layout{dir: dir, digest: md, layers: layers}
}

func open(t testing.TB, dir string) *push.Image {
	t.Helper()
	im, err := push.OpenLayout(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { im.Close() })
	return im
}

func testKey(t testing.TB) *openpgp.Entity {
	e, err := openpgp.NewEntity("Push Test", "", "push@example.com", &packet.Config{Algorithm: packet.PubKeyAlgoRSA, RSABits: 2048, DefaultHash: crypto.SHA256})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// One registry, two apps on two shared layers: the first push uploads
// every blob, a second of the same image none, the second app (its
// repository mounting from the first's) only its own layer and config;
// skopeo, with a policy that wants our key's signature and the lookaside
// tree push wrote, accepts what push signed and refuses what it pushed
// unsigned.
func TestPush(t *testing.T) {
	ocitest.Need(t, "skopeo", "docker-registry")
	reg := ocitest.StartT(t)
	dir := t.TempDir()
	shared1, shared2 := gzLayer(t, "lib1", 200<<10, 1), gzLayer(t, "lib2", 200<<10, 2)
	app1 := makeLayout(t, filepath.Join(dir, "app1.oci"), "1.0", shared1, shared2, gzLayer(t, "app1", 1<<10, 3))
	app2 := makeLayout(t, filepath.Join(dir, "app2.oci"), "1.0", shared1, shared2, gzLayer(t, "app2", 1<<10, 4))
	key := testKey(t)
	sigstore := filepath.Join(dir, "sigstore")
	ctx := context.Background()

	ref1 := reg.Host + "/nix2aci/app1:1.0"
	res, err := push.Push(ctx, open(t, app1.dir), push.Options{Dest: "docker://" + ref1, SigStore: sigstore, Key: key, Creator: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Digest != app1.digest || res.Uploaded != 4 || res.Skipped != 0 || res.Signatures != 1 || !res.Signed {
		t.Errorf("first push: %+v", res)
	}
	out, ok := testsupport.Run(t, nil, "skopeo", "inspect", "--tls-verify=false", "--format", "{{.Digest}}", "docker://"+ref1)
	if !ok || strings.TrimSpace(out) != app1.digest {
		t.Errorf("skopeo inspect %s: %s, want %s", ref1, out, app1.digest)
	}

	// Again: nothing to send.
	res, err = push.Push(ctx, open(t, app1.dir), push.Options{Dest: ref1, SigStore: sigstore, Key: key})
	if err != nil {
		t.Fatal(err)
	}
	if res.Uploaded != 0 || res.Skipped != 4 || res.UploadedBytes != 0 || res.Signatures != 1 {
		t.Errorf("second push of the same image: %+v", res)
	}

	// The second app sends its own blobs only.
	before := must(reg.Blobs())
	ref2 := reg.Host + "/nix2aci/app2:1.0"
	res, err = push.Push(ctx, open(t, app2.dir), push.Options{Dest: ref2, SigStore: sigstore, Key: key, MountFrom: reg.Host + "/nix2aci/app1"})
	if err != nil {
		t.Fatal(err)
	}
	after := must(reg.Blobs())
	if res.Uploaded != 2 || res.Mounted != 2 || res.Skipped != 2 || len(after)-len(before) != 3 { // its layer, its config, its manifest
		t.Errorf("second app: %+v; the registry had %d blobs, has %d", res, len(before), len(after))
	}
	if ratio := float64(res.UploadedBytes) / float64(res.UploadedBytes+res.SkippedBytes); ratio > 0.01 {
		t.Errorf("the second app sent %.2f%% of its bytes (%+v)", 100*ratio, res)
	}
	// In the same repository under another tag, nothing is sent.
	res, err = push.Push(ctx, open(t, app2.dir), push.Options{Dest: reg.Host + "/nix2aci/app1:app2"})
	if err != nil || res.Uploaded != 2 || res.Skipped != 2 {
		// Its config and own layer are new to nix2aci/app1.
		t.Errorf("app2 into app1's repository: %+v, %v", res, err)
	}

	// Unsigned.
	unsigned := reg.Host + "/nix2aci/app1:unsigned"
	if _, err := push.Push(ctx, open(t, app1.dir), push.Options{Dest: unsigned}); err != nil {
		t.Fatal(err)
	}

	keys := testsupport.WriteFile(t, filepath.Join(dir, "keys.asc"), func() []byte {
		var b bytes.Buffer
		if err := sign.WritePublicKey(&b, key); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}())
	policy := testsupport.WriteFile(t, filepath.Join(dir, "policy.json"), must(json.Marshal(map[string]any{
		"default": []any{map[string]string{"type": "reject"}},
		"transports": map[string]any{"docker": map[string]any{
			reg.Host: []any{map[string]string{"type": "signedBy", "keyType": "GPGKeys", "keyPath": keys}},
		}},
	})))
	regD := filepath.Join(dir, "registries.d")
	testsupport.WriteFile(t, filepath.Join(regD, "test.yaml"), fmt.Appendf(nil, "docker:\n  %s:\n    lookaside: file://%s\n", reg.Host, sigstore))
	skopeo := func(ref string) (string, bool) {
		return testsupport.Run(t, nil, "skopeo", "copy", "--policy", policy, "--registries.d", regD, "--src-tls-verify=false", "docker://"+ref, "dir:"+t.TempDir())
	}
	for _, ref := range []string{ref1, ref2} {
		if out, ok := skopeo(ref); !ok {
			t.Errorf("skopeo copy refuses %s, signed by push:\n%s", ref, out)
		}
	}
	// app1:unsigned has only the signature of app1:1.0; app1:app2 none.
	for _, ref := range []string{unsigned, reg.Host + "/nix2aci/app1:app2"} {
		if out, ok := skopeo(ref); ok || !strings.Contains(strings.ToLower(out), "signature") {
			t.Errorf("skopeo copy of %s, pushed unsigned: accepted=%v\n%s", ref, ok, out)
		}
	}

	// Without a key, push publishes the signatures that name the
	// destination, from the trees it is given; with none, it pushes
	// nothing and says how to sign.
	other := filepath.Join(dir, "other-sigstore")
	_, err = push.Push(ctx, open(t, app1.dir), push.Options{Dest: reg.Host + "/nix2aci/app1:copy", SigStore: other, SignaturesFrom: []string{sigstore}})
	var mse *push.MissingSignatureError
	if !errors.As(err, &mse) || !strings.Contains(err.Error(), "--key") || !strings.Contains(err.Error(), ref1) {
		t.Errorf("a push without a key or a signature for its name: %v", err)
	}
	if out, ok := testsupport.Run(t, nil, "skopeo", "inspect", "--tls-verify=false", "docker://"+reg.Host+"/nix2aci/app1:copy"); ok {
		t.Errorf("the refused push left a tag:\n%s", out)
	}
	res, err = push.Push(ctx, open(t, app1.dir), push.Options{Dest: ref1, SigStore: other, SignaturesFrom: []string{sigstore}})
	if err != nil || res.Signatures != 1 || res.Signed {
		t.Fatalf("copying the signature for %s: %+v, %v", ref1, res, err)
	}
	testsupport.WriteFile(t, filepath.Join(regD, "test.yaml"), fmt.Appendf(nil, "docker:\n  %s:\n    lookaside: file://%s\n", reg.Host, other))
	if out, ok := skopeo(ref1); !ok {
		t.Errorf("skopeo copy refuses %s with the copied signature:\n%s", ref1, out)
	}
}

// A layout changed after it was written, or not one at all, is refused
// with the blob named, and nothing of it is tagged in the registry.
func TestPushRefusesChangedLayouts(t *testing.T) {
	ocitest.Need(t, "skopeo", "docker-registry")
	reg := ocitest.StartT(t)
	dir := t.TempDir()
	ctx := context.Background()
	l := makeLayout(t, filepath.Join(dir, "a.oci"), "1.0", gzLayer(t, "a", 64<<10, 5))
	im := open(t, l.dir)
	// A layer rewritten in place, same size, after the layout was read.
	blob := filepath.Join(l.dir, "blobs", "sha256", strings.TrimPrefix(sha(l.layers[0]), "sha256:"))
	changed := bytes.Clone(l.layers[0])
	changed[len(changed)/2] ^= 1
	testsupport.WriteFile(t, blob, changed)
	_, err := push.Push(ctx, im, push.Options{Dest: reg.Host + "/x/a:1.0"})
	var le *push.LayoutError
	if !errors.As(err, &le) || !strings.Contains(err.Error(), "does not match its digest") {
		t.Errorf("pushing a changed layer: %v", err)
	}
	if out, ok := testsupport.Run(t, nil, "skopeo", "inspect", "--tls-verify=false", "docker://"+reg.Host+"/x/a:1.0"); ok {
		t.Errorf("the failed push left a tag:\n%s", out)
	}
	if blobs := must(reg.Blobs()); len(blobs) > 1 { // the config, at most
		t.Errorf("the registry kept %v", blobs)
	}
	// Truncated: refused when opened.
	testsupport.WriteFile(t, blob, l.layers[0][:100])
	if _, err := push.OpenLayout(l.dir); !errors.As(err, &le) || !strings.Contains(err.Error(), "bytes, but the manifest says") {
		t.Errorf("a truncated layer: %v", err)
	}

	for name, index := range map[string]string{
		"a path for a digest": `{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:../../../etc/passwd","size":10}]}`,
		"sha512":              `{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha512:` + strings.Repeat("a", 128) + `","size":10}]}`,
		"two images":          `{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"` + l.digest + `","size":10},{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"` + l.digest + `","size":10}]}`,
		"a wrong size":        `{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"` + l.digest + `","size":10}]}`,
		"huge":                `{"schemaVersion":2,"manifests":[` + strings.Repeat(" ", 2<<20) + `]}`,
	} {
		testsupport.WriteFile(t, filepath.Join(l.dir, "index.json"), []byte(index))
		if _, err := push.OpenLayout(l.dir); !errors.As(err, &le) {
			t.Errorf("index.json with %s: %v", name, err)
		}
	}
	if _, err := push.OpenLayout(blob); !errors.As(err, &le) || !strings.Contains(err.Error(), "--format oci") {
		t.Errorf("a file for a layout: %v", err)
	}
}

// A registry that is not there: a clear error.
func TestPushToNoRegistry(t *testing.T) {
	addr, err := ocitest.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	l := makeLayout(t, filepath.Join(t.TempDir(), "a.oci"), "1.0", gzLayer(t, "a", 1<<10, 6))
	_, err = push.Push(context.Background(), open(t, l.dir), push.Options{Dest: addr + "/x/a:1.0"})
	var re *push.RegistryError
	if !errors.As(err, &re) || !strings.Contains(err.Error(), "no registry answers") {
		t.Errorf("pushing to %s, where nothing listens: %v", addr, err)
	}
	for _, dest := range []string{addr + "/x/a", addr + "/x/a@" + l.digest, "oci:somewhere", "app:1.0", "Upper/Case:1"} {
		var ue *push.UsageError
		if _, err := push.Push(context.Background(), open(t, l.dir), push.Options{Dest: dest}); !errors.As(err, &ue) {
			t.Errorf("destination %q: %v", dest, err)
		}
	}
}

// A registry not on this machine (by name: the host's name, whatever it
// resolves to) is not spoken to over plain HTTP without Insecure, and the
// error says so.
func TestPushPlainHTTPNeedsInsecure(t *testing.T) {
	ocitest.Need(t, "docker-registry")
	host := must(os.Hostname())
	addrs, err := net.LookupHost(host)
	if err != nil || len(addrs) == 0 {
		t.Fatalf("the host's name %s does not resolve: %v", host, err)
	}
	reg, err := ocitest.StartOn(t.TempDir(), addrs[0])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(reg.Stop)
	_, port := must2(net.SplitHostPort(reg.Host))
	dest := net.JoinHostPort(host, port) + "/x/a:1.0"
	l := makeLayout(t, filepath.Join(t.TempDir(), "a.oci"), "1.0", gzLayer(t, "a", 1<<10, 7))
	_, err = push.Push(context.Background(), open(t, l.dir), push.Options{Dest: dest})
	var re *push.RegistryError
	if !errors.As(err, &re) || !strings.Contains(err.Error(), "push with --insecure") {
		t.Errorf("pushing over plain HTTP to %s: %v", dest, err)
	}
	if blobs := must(reg.Blobs()); len(blobs) != 0 {
		t.Errorf("the registry got %v", blobs)
	}
	res, err := push.Push(context.Background(), open(t, l.dir), push.Options{Dest: dest, Insecure: true})
	if err != nil || res.Uploaded != 2 {
		t.Errorf("with Insecure: %+v, %v", res, err)
	}
}

func must2[T, U any](v T, w U, err error) (T, U) {
	if err != nil {
		panic(err)
	}
	return v, w
}
