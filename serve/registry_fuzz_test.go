package serve

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/nix2aci/nix2aci/internal/testsupport/testkey"
	"github.com/nix2aci/nix2aci/pipeline"
	"github.com/nix2aci/nix2aci/sign"
)

// FuzzRegistry: whatever method, path and Host a client sends to the
// registry API, the answer is never a 500, every error is the spec's JSON
// with a code and a message and the length it says, and nothing is
// written into the data directory but by a build (here every build
// fails).
func FuzzRegistry(f *testing.F) {
	const zero = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
	for _, seed := range []struct{ method, path, host string }{
		{"GET", "/v2/", "127.0.0.1:5000"},
		{"HEAD", "/v2/busybox/manifests/latest", "localhost:5000"},
		{"GET", "/v2/busybox/jq/manifests/vfuzz", "localhost"},
		{"GET", "/v2/busybox/manifests/" + zero, "example.com"},
		{"GET", "/v2/busybox/manifests/sha256:zz", "example.com"},
		{"GET", "/v2/busybox/blobs/" + zero, "x"},
		{"GET", "/v2/nosuch/blobs/sha512:00", "x"},
		{"GET", "/extensions/v2/busybox/signatures/" + zero, "Registry.Example.com:1"},
		{"GET", "/v2/../busybox/manifests/latest", "x"},
		{"PUT", "/v2/busybox/manifests/latest", "x"},
		{"GET", "/v2/shell/arm64/busybox/manifests/latest", "x"},
		{"GET", "/v2/busybox/tags/list", "x"},
	} {
		f.Add(seed.method, seed.path, seed.host)
	}
	if testing.Short() {
		f.Skip("reads the offline package set's names with Nix")
	}
	key := testkey.Key(f, sign.KeyOptions{Name: "Fuzz", Email: "fuzz@example.com"})
	data := filepath.Join(f.TempDir(), "data")
	s, err := New(Options{
		Prefix: "127.0.0.1", BaseURL: "http://127.0.0.1:1/acis", Key: key, Data: data, Version: "vfuzz", NoCache: true,
		Build: func(context.Context, pipeline.Request) (*pipeline.Result, error) {
			return nil, errors.New("no builds in the fuzz test")
		},
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(s.Close)
	f.Fuzz(func(t *testing.T, method, p, host string) {
		u, err := url.Parse("http://127.0.0.1:1" + p)
		if err != nil || !isRegistryPath(u.Path) || method == "" {
			return
		}
		req, err := http.NewRequest(method, u.String(), nil)
		if err != nil {
			return
		}
		req.Host = host
		w := httptest.NewRecorder()
		s.ServeHTTP(w, req)
		res := w.Result()
		if res.StatusCode >= 500 && res.StatusCode != http.StatusBadGateway {
			t.Fatalf("%s %q (Host %q): %d\n%s", method, p, host, res.StatusCode, w.Body.Bytes())
		}
		if n, err := strconv.Atoi(res.Header.Get("Content-Length")); res.Header.Get("Content-Length") != "" && (err != nil || method != http.MethodHead && n != w.Body.Len()) {
			t.Fatalf("%s %q: Content-Length %q for %d bytes", method, p, res.Header.Get("Content-Length"), w.Body.Len())
		}
		if res.StatusCode >= 400 && method != http.MethodHead {
			var body struct {
				Errors []struct{ Code, Message string }
			}
			if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || len(body.Errors) != 1 || body.Errors[0].Code == "" || body.Errors[0].Message == "" || res.Header.Get("Content-Type") != "application/json" {
				t.Fatalf("%s %q: %d with the body %q (%v)", method, p, res.StatusCode, w.Body.Bytes(), err)
			}
		}
		ents, _ := os.ReadDir(data)
		for _, e := range ents {
			if e.Name() != ".nix2aci-serve" {
				t.Fatalf("%s %q: %s was written into the data directory", method, p, e.Name())
			}
		}
	})
}
