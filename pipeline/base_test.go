package pipeline_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp"

	"github.com/nix2aci/nix2aci/fetch"
	"github.com/nix2aci/nix2aci/internal/testsupport/testkey"
	"github.com/nix2aci/nix2aci/nixstore/nixtest"
	"github.com/nix2aci/nix2aci/pipeline"
	"github.com/nix2aci/nix2aci/publish"
	"github.com/nix2aci/nix2aci/sign"
)

// An app built on a base named as rkt names images: the base is found by
// appc discovery on a published site, kept only when its signature
// verifies with a key trusted for its name, and the app depends on it by
// image ID and holds none of its store paths.
func TestBaseByName(t *testing.T) {
	app := nixtest.Build(t, `let lib = mk "baselib-1.0" "mkdir -p $out/share; echo lib > $out/share/lib"; in
mk "onbase-1.0" "mkdir -p $out/bin; echo ${lib} > $out/bin/onbase"`)
	refs, err := exec.Command("nix-store", "-q", "--references", app).Output()
	if err != nil {
		t.Fatal(err)
	}
	lib := strings.TrimSpace(string(refs))
	work := t.TempDir()
	ctx := context.Background()
	build := func(r pipeline.Request) (*pipeline.Result, error) {
		r.NoExecCheck = true
		return pipeline.Build(ctx, r)
	}
	group, err := build(pipeline.Request{Target: lib, GroupOnly: "libs", LayerPrefix: "127.0.0.1/nix", OutDir: filepath.Join(work, "groups")})
	if err != nil {
		t.Fatal(err)
	}
	fat, err := build(pipeline.Request{Target: app, Name: "127.0.0.1/nix/fat", OutDir: filepath.Join(work, "fat")})
	if err != nil {
		t.Fatal(err)
	}
	key := testkey.Key(t, sign.KeyOptions{Name: "Publisher", Email: "pub@example.com"})
	stranger := testkey.Key(t, sign.KeyOptions{Name: "Stranger", Email: "s@example.com"})
	site := filepath.Join(work, "site")
	srv := httptest.NewServer(http.FileServer(http.Dir(site)))
	defer srv.Close()
	_, p, _ := net.SplitHostPort(srv.Listener.Addr().String())
	port, _ := strconv.Atoi(p)
	if _, err := publish.Publish(ctx, []string{group.ACI, fat.ACI}, publish.Options{Site: site, BaseURL: srv.URL + "/acis", Key: key}); err != nil {
		t.Fatal(err)
	}
	trusting := func(k *openpgp.Entity) fetch.Options {
		trust := sign.NewTrust()
		trust.AddPrefix("127.0.0.1", k)
		return fetch.Options{Trust: trust, InsecureHTTP: true, Port: uint(port)}
	}
	baseName := "127.0.0.1/nix/libs:" + group.Version

	out := filepath.Join(work, "app")
	res, err := build(pipeline.Request{Target: app, Name: "127.0.0.1/app", OutDir: out, Base: baseName, BaseFetch: trusting(key)})
	if err != nil {
		t.Fatal(err)
	}
	if res.StorePaths != 1 || res.Deps == "" {
		t.Errorf("the app holds %d store paths and lists its base in %q; want 1 and a .deps", res.StorePaths, res.Deps)
	}
	deps, _ := os.ReadFile(res.Deps)
	fetched := filepath.Join(out, strings.TrimSpace(string(deps)))
	if got, err := os.ReadFile(fetched); err != nil || !sameFile(t, got, group.ACI) {
		t.Errorf("the base in %s is not the published image: %v", out, err)
	}
	if _, err := os.Stat(fetched + ".asc"); err != nil {
		t.Errorf("the base's signature is not beside it: %v", err)
	}

	for _, tc := range []struct {
		what string
		req  pipeline.Request
		want func(error) bool
	}{
		{"an untrusted key", pipeline.Request{Base: baseName, BaseFetch: trusting(stranger)},
			func(err error) bool { var v *sign.VerifyError; return errors.As(err, &v) }},
		{"no version", pipeline.Request{Base: "127.0.0.1/nix/libs", BaseFetch: trusting(key)}, pipeline.IsUsage},
		{"a base that lists no store paths", pipeline.Request{Base: "127.0.0.1/nix/fat:" + fat.Version, BaseFetch: trusting(key)},
			func(err error) bool {
				return err != nil && strings.Contains(err.Error(), "does not say which store paths it holds")
			}},
	} {
		tc.req.Target, tc.req.Name, tc.req.OutDir = app, "127.0.0.1/app", filepath.Join(work, "bad")
		if _, err := build(tc.req); !tc.want(err) {
			t.Errorf("%s: %v", tc.what, err)
		}
		if _, err := os.Stat(filepath.Join(work, "bad")); err == nil {
			t.Errorf("%s: the build left %s behind", tc.what, filepath.Join(work, "bad"))
		}
	}
	// Tampered after signing: refused.
	published := filepath.Join(site, "acis", "127.0.0.1", "nix", "libs-"+group.Version+"-linux-amd64.aci")
	data, err := os.ReadFile(published)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0xff
	os.WriteFile(published, data, 0o644)
	if _, err := build(pipeline.Request{Target: app, Name: "127.0.0.1/app", OutDir: filepath.Join(work, "bad"), Base: baseName, BaseFetch: trusting(key)}); err == nil {
		t.Error("a tampered base was built on")
	}
}

func sameFile(t *testing.T, got []byte, path string) bool {
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(got) == string(want)
}
