package serve_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"

	"github.com/nix2aci/nix2aci/internal/testsupport/testkey"
	"github.com/nix2aci/nix2aci/objstore"
	"github.com/nix2aci/nix2aci/objstore/objstoretest"
	"github.com/nix2aci/nix2aci/ocisign"
	"github.com/nix2aci/nix2aci/serve"
	"github.com/nix2aci/nix2aci/sign"
)

// regError is the code and message of a registry's JSON error.
func regError(t *testing.T, method, url string) (int, string, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Errors []struct{ Code, Message string }
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil && method != "HEAD" {
		t.Fatalf("%s %s: %s with no JSON error body: %v", method, url, resp.Status, err)
	}
	if len(body.Errors) == 0 {
		return resp.StatusCode, "", ""
	}
	return resp.StatusCode, body.Errors[0].Code, body.Errors[0].Message
}

// podmanIn is podman with a store, configuration and run state of its
// own under dir, and the signature policy policy.
func podmanIn(t *testing.T, dir, policy string) func(args ...string) (string, bool) {
	t.Helper()
	for _, tool := range []string{"podman", "skopeo", "runc"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: run the tests with scripts/test, which installs it", tool)
		}
	}
	// podman wants a run root of at most 50 characters.
	runroot, err := os.MkdirTemp("", "podman")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(runroot) })
	conf := filepath.Join(dir, "registries.conf")
	os.WriteFile(conf, []byte("unqualified-search-registries = []\n"), 0o644)
	env := append(os.Environ(), "HOME="+filepath.Join(dir, "home"), "CONTAINERS_REGISTRIES_CONF="+conf, "XDG_RUNTIME_DIR="+filepath.Join(dir, "run"))
	return func(args ...string) (string, bool) {
		if args[0] == "pull" {
			args = append([]string{"pull", "--tls-verify=false", "--signature-policy", policy}, args[1:]...)
		}
		args = append([]string{"--root", filepath.Join(dir, "root"), "--runroot", runroot, "--storage-driver", "vfs", "--events-backend", "none", "--cgroup-manager", "cgroupfs"}, args...)
		cmd := exec.Command("podman", args...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		return string(out), err == nil
	}
}

// signedByPolicy is a policy.json that accepts images from host signed by
// key only, and rejects everything else.
func signedByPolicy(t *testing.T, dir, host string, key *openpgp.Entity) string {
	t.Helper()
	var b bytes.Buffer
	if err := sign.WritePublicKey(&b, key); err != nil {
		t.Fatal(err)
	}
	keys := filepath.Join(dir, "keys.asc")
	os.WriteFile(keys, b.Bytes(), 0o644)
	policy, _ := json.Marshal(map[string]any{
		"default": []any{map[string]string{"type": "reject"}},
		"transports": map[string]any{"docker": map[string]any{
			host: []any{map[string]string{"type": "signedBy", "keyType": "GPGKeys", "keyPath": keys}},
		}},
	})
	p := filepath.Join(dir, "policy.json")
	os.WriteFile(p, policy, 0o644)
	return p
}

// TestRegistryPullSignedRun: podman pull HOST/busybox from the server,
// with a policy.json requiring the server's key and nothing else (no
// lookaside, no registries.d), builds the image once, accepts its
// signature for the name asked (127.0.0.1 and localhost alike, by tag
// and by digest), and the image runs; a policy naming another key
// refuses it. Bad requests are answered with the spec's JSON errors and
// take no build.
func TestRegistryPullSignedRun(t *testing.T) {
	e := start(t, nil)
	v2 := fmt.Sprintf("http://127.0.0.1:%d/v2/", e.port)

	resp, _ := get(t, v2)
	if resp.StatusCode != 200 || resp.Header.Get("X-Registry-Supports-Signatures") != "1" {
		t.Fatalf("GET /v2/: %s, X-Registry-Supports-Signatures %q", resp.Status, resp.Header.Get("X-Registry-Supports-Signatures"))
	}
	const zero = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
	for _, c := range []struct {
		method, path string
		status       int
		code, says   string
	}{
		{"GET", "nosuchpackage/manifests/latest", 404, "NAME_UNKNOWN", "nosuchpackage"},
		{"HEAD", "busybox/nosuchpackage/blobs/" + zero, 404, "", ""},
		{"GET", "busybox/manifests/1.0", 404, "MANIFEST_UNKNOWN", "latest and " + version},
		{"GET", "busybox/manifests/" + zero, 404, "MANIFEST_UNKNOWN", zero},
		{"GET", "busybox/manifests/sha256:nothex", 400, "DIGEST_INVALID", "sha256:nothex"},
		{"GET", "busybox/blobs/sha256:nothex", 400, "DIGEST_INVALID", "sha256:nothex"},
		{"GET", "busybox/blobs/" + zero, 404, "BLOB_UNKNOWN", zero},
		{"GET", "Busybox/manifests/latest", 400, "NAME_INVALID", "Busybox"},
		{"DELETE", "busybox/manifests/latest", 405, "UNSUPPORTED", "read-only"},
	} {
		status, code, msg := regError(t, c.method, v2+c.path)
		if status != c.status || code != c.code || !strings.Contains(msg, c.says) {
			t.Errorf("%s /v2/%s: %d %s %q, want %d %s naming %q", c.method, c.path, status, code, msg, c.status, c.code, c.says)
		}
	}
	if n := e.built.Load(); n != 0 {
		t.Fatalf("bad requests started %d builds", n)
	}
	// Discovery of a name whose package is v2 is still discovery.
	if resp, body := get(t, fmt.Sprintf("http://127.0.0.1:%d/v2?ac-discovery=1", e.port)); resp.StatusCode != 404 || !strings.Contains(string(body), "attribute is named v2") {
		t.Errorf("discovery of 127.0.0.1/v2: %s\n%s", resp.Status, body)
	}

	dir := t.TempDir()
	host := fmt.Sprintf("127.0.0.1:%d", e.port)
	local := fmt.Sprintf("localhost:%d", e.port)
	if root := mustGet(t, "http://"+local+"/"); !strings.Contains(string(root), "podman pull "+local+"/busybox") {
		t.Errorf("the root page does not say how to pull through the host asked:\n%s", root)
	}
	policy := signedByPolicy(t, dir, host, e.key)
	// The same key for localhost, in the same policy.
	var p map[string]any
	b, _ := os.ReadFile(policy)
	json.Unmarshal(b, &p)
	docker := p["transports"].(map[string]any)["docker"].(map[string]any)
	docker[local] = docker[host]
	b, _ = json.Marshal(p)
	os.WriteFile(policy, b, 0o644)
	podman := podmanIn(t, dir, policy)

	if out, ok := podman("pull", host+"/busybox:latest"); !ok {
		t.Fatalf("podman pull %s/busybox:latest:\n%s", host, out)
	}
	out, ok := podman("run", "--rm", "--runtime", "runc", "--network", "none", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", host+"/busybox:latest", "echo", "pulled")
	if !ok || strings.TrimSpace(out) != "pulled" {
		t.Fatalf("podman run: %v\n%s", ok, out)
	}
	for _, ref := range []string{host + "/busybox:" + version, local + "/busybox:latest"} {
		if out, ok := podman("pull", ref); !ok {
			t.Fatalf("podman pull %s:\n%s", ref, out)
		}
	}
	digest, _ := podman("image", "inspect", "--format", "{{.Digest}}", host+"/busybox:latest")
	digest = strings.TrimSpace(digest)
	if out, ok := podman("pull", host+"/busybox@"+digest); !ok {
		t.Fatalf("podman pull by digest %s:\n%s", digest, out)
	}
	if n := e.built.Load(); n != 1 {
		t.Fatalf("%d builds for four pulls of one image, want 1", n)
	}

	// The manifest is the same bytes every time, under both tags, and
	// its digest is the one served; the signatures name the host asked.
	m1 := mustGet(t, v2+"busybox/manifests/latest")
	m2 := mustGet(t, v2+"busybox/manifests/"+version)
	m3 := mustGet(t, v2+"busybox/manifests/"+digest)
	if !bytes.Equal(m1, m2) || !bytes.Equal(m1, m3) {
		t.Fatal("the manifest differs between requests")
	}
	var sigs struct {
		Signatures []struct {
			SchemaVersion int
			Type, Name    string
			Content       string
		}
	}
	json.Unmarshal(mustGet(t, fmt.Sprintf("http://%s/extensions/v2/busybox/signatures/%s", local, digest)), &sigs)
	if len(sigs.Signatures) != 2 {
		t.Fatalf("%d signatures, want 2 (latest and %s)", len(sigs.Signatures), version)
	}
	for _, tag := range []string{"latest", version} {
		ok := false
		for _, s := range sigs.Signatures {
			sig, _ := base64.StdEncoding.DecodeString(s.Content)
			if _, err := ocisign.Verify(sig, openpgp.EntityList{e.key}, m1, local+"/busybox:"+tag); err == nil && s.Type == "atomic" && s.SchemaVersion == 2 && strings.HasPrefix(s.Name, digest+"@") {
				ok = true
			}
		}
		if !ok {
			t.Errorf("no signature verifies for %s/busybox:%s", local, tag)
		}
	}
	// Asked through 127.0.0.1, the signatures name 127.0.0.1: none
	// passes for localhost, which a policy takes for another registry.
	json.Unmarshal(mustGet(t, fmt.Sprintf("http://%s/extensions/v2/busybox/signatures/%s", host, digest)), &sigs)
	forHost := 0
	for _, s := range sigs.Signatures {
		sig, _ := base64.StdEncoding.DecodeString(s.Content)
		if _, err := ocisign.Verify(sig, openpgp.EntityList{e.key}, m1, host+"/busybox:latest"); err == nil {
			forHost++
		}
		if _, err := ocisign.Verify(sig, openpgp.EntityList{e.key}, m1, local+"/busybox:latest"); err == nil {
			t.Errorf("a signature asked through %s verifies for %s", host, local)
		}
	}
	if forHost != 1 {
		t.Errorf("%d signatures asked through %s verify for %s/busybox:latest, want 1", forHost, host, host)
	}
	none := mustGet(t, fmt.Sprintf("http://%s/extensions/v2/busybox/signatures/%s", local, zero))
	if strings.TrimSpace(string(none)) != `{"signatures":[]}` {
		t.Errorf("signatures of a digest not served: %s", none)
	}

	// The ACI of the same name is served beside it, from the same data
	// directory, which stays a publish tree.
	if got := mustGet(t, e.url("127.0.0.1/busybox", "aci")); len(got) == 0 {
		t.Fatal("no ACI beside the OCI image")
	}

	// A policy naming another key refuses the image.
	other := testkey.Key(t, sign.KeyOptions{Name: "Other", Email: "other@example.com"})
	dir2 := t.TempDir()
	podman2 := podmanIn(t, dir2, signedByPolicy(t, dir2, host, other))
	if out, ok := podman2("pull", host+"/busybox:latest"); ok || !strings.Contains(out, "signature") {
		t.Fatalf("podman pull with a policy naming another key: ok=%v\n%s", ok, out)
	}
}

// TestStoreRedirectsBlobs: with a bucket, an OCI image's blobs are
// uploaded after its build and each blob request is answered with a
// redirect to a signed URL of the bucket; skopeo copy following them,
// with a policy requiring the server's signature, gets the image whole.
// A replica on the same bucket with an empty disk serves the same
// manifest without building.
func TestStoreRedirectsBlobs(t *testing.T) {
	if _, err := exec.LookPath("skopeo"); err != nil {
		t.Fatal("skopeo not found: run the tests with scripts/test, which installs it")
	}
	g := objstoretest.Start(t)
	st := g.Bucket(t, "images", objstore.S3Options{Expiry: 5 * time.Minute})
	e := start(t, func(o *serve.Options) { o.Store = st })
	host := fmt.Sprintf("127.0.0.1:%d", e.port)
	dir := t.TempDir()
	policy := signedByPolicy(t, dir, host, e.key)
	out := filepath.Join(dir, "image")
	copyFrom := func(host, policy, out string) []byte {
		t.Helper()
		cmd := exec.Command("skopeo", "copy", "--policy", policy, "--registries.d", t.TempDir(), "--src-tls-verify=false", "docker://"+host+"/busybox:latest", "dir:"+out)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("skopeo copy from %s: %v\n%s", host, err, b)
		}
		manifest, err := os.ReadFile(filepath.Join(out, "manifest.json"))
		if err != nil {
			t.Fatal(err)
		}
		return manifest
	}
	manifest := copyFrom(host, policy, out)
	if served := mustGet(t, "http://"+host+"/v2/busybox/manifests/latest"); !bytes.Equal(served, manifest) {
		t.Fatal("skopeo copied another manifest than the server serves")
	}
	var m struct {
		Config struct{ Digest string }
		Layers []struct{ Digest string }
	}
	json.Unmarshal(manifest, &m)
	blobs := []string{m.Config.Digest}
	for _, l := range m.Layers {
		blobs = append(blobs, l.Digest)
	}
	for _, d := range blobs {
		code, loc := redirectOf(t, "http://"+host+"/v2/busybox/blobs/"+d)
		u, err := url.Parse(loc)
		if code != http.StatusTemporaryRedirect || err != nil || u.Host != g.Addr || u.Query().Get("X-Amz-Signature") == "" {
			t.Errorf("GET of the blob %s: %d to %q, want 307 to a signed URL of %s", d, code, loc, g.Addr)
		}
		o, err := st.Stat(context.Background(), "oci/blobs/sha256/"+strings.TrimPrefix(d, "sha256:"))
		if err != nil || "sha256:"+o.SHA256 != d {
			t.Errorf("the bucket's blob %s: %+v, %v", d, o, err)
		}
	}

	if n := e.built.Load(); n != 1 {
		t.Fatalf("%d builds, want 1", n)
	}

	// A replica with an empty disk: the manifest from the bucket, the
	// same bytes, signed by it for the name asked; no build.
	e2 := start(t, func(o *serve.Options) { o.Store = st; o.Key = e.key })
	host2 := fmt.Sprintf("127.0.0.1:%d", e2.port)
	dir2 := t.TempDir()
	if got := copyFrom(host2, signedByPolicy(t, dir2, host2, e.key), filepath.Join(dir2, "image")); !bytes.Equal(got, manifest) {
		t.Fatal("the replica served another manifest")
	}
	if n := e2.built.Load(); n != 0 {
		t.Fatalf("the replica with an empty disk built %d images, want 0", n)
	}
}
