package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/nix2aci/nix2aci/aci"
)

// serve's help gives --data site: relative directories (--data, --pkgs)
// name directories of the working directory serve started in, and
// images built from a built-in recipe, a recipe of --pkgs and by the
// registry API are served and written there.
func TestServeRelativeDirectories(t *testing.T) {
	t.Parallel()
	bin := binary(t)
	dir := t.TempDir()
	testKey(t, dir)
	if err := os.Mkdir(filepath.Join(dir, "recipes"), 0o755); err != nil {
		t.Fatal(err)
	}
	tiny, err := os.ReadFile("../../serve/testdata/tiny.nix")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "recipes", "tiny.nix"), tiny, 0o644); err != nil {
		t.Fatal(err)
	}
	p := startServe(t, bin, func(cmd *exec.Cmd) {
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "NIX_PATH=", "NIX_CONFIG=substituters =")
	}, "--data", "site", "--key", "k.asc", "--pkgs", "recipes")
	addr, label, stderr := p.addr, p.label, p.stderr

	get := func(path string) {
		t.Helper()
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %s\n%s\n%s", path, resp.Status, b, stderr.String())
		}
	}
	for _, pkg := range []string{"busybox", "tiny"} {
		name := fmt.Sprintf("%s-%s-linux-amd64.aci", pkg, label)
		get("/acis/127.0.0.1/" + name)
		info, err := aci.InspectFile(filepath.Join(dir, "site", "acis", "127.0.0.1", name))
		if err != nil {
			t.Fatalf("the image in the data directory: %v", err)
		}
		if got := info.Manifest.Name.String(); got != "127.0.0.1/"+pkg {
			t.Errorf("%s is named %s", name, got)
		}
	}
	get("/v2/busybox/manifests/latest")
}
