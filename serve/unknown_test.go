package serve_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nix2aci/nix2aci/internal/testsupport"
	"github.com/nix2aci/nix2aci/internal/testsupport/testkey"
	"github.com/nix2aci/nix2aci/pkgs"
	"github.com/nix2aci/nix2aci/serve"
	"github.com/nix2aci/nix2aci/sign"
)

// countEvaluations puts a nix-instantiate first in PATH that appends a
// line to a file for each run, then runs the real one; it returns a
// function that counts the runs so far.
func countEvaluations(t *testing.T) func() int {
	t.Helper()
	real, err := exec.LookPath("nix-instantiate")
	if err != nil {
		t.Fatal("nix-instantiate not found: run the tests with scripts/test, which installs what they need")
	}
	dir := t.TempDir()
	log := filepath.Join(dir, "evaluations")
	sh := fmt.Sprintf("#!/bin/sh\necho run >> %q\nexec %q \"$@\"\n", log, real)
	if err := os.WriteFile(filepath.Join(dir, "nix-instantiate"), []byte(sh), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+":"+os.Getenv("PATH"))
	return func() int {
		b, _ := os.ReadFile(log)
		return bytes.Count(b, []byte("\n"))
	}
}

// storm asks for every url at once, each on a connection of its own,
// and returns the statuses and bodies.
func storm(t *testing.T, urls []string) ([]int, []string) {
	t.Helper()
	c := &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{DisableKeepAlives: true}}
	codes, bodies := make([]int, len(urls)), make([]string, len(urls))
	for i, r := range testsupport.GetAll(t, c, urls, 64<<10) {
		codes[i], bodies[i] = r.StatusCode, string(r.Body)
	}
	return codes, bodies
}

// TestUnknownNamesTakeNoBuildSlot: 100 distinct unknown names asked for
// at once, while a real new image builds on a server of one build slot
// and a queue of one, are all answered 404 naming them, none 503, each
// without a Nix evaluation; the real image is built (200). Discovery
// answers 404 for an unknown name too, and as before for known names
// and layers.
func TestUnknownNamesTakeNoBuildSlot(t *testing.T) {
	evaluations := countEvaluations(t)
	recipes, _ := filepath.Abs("testdata")
	e := start(t, func(o *serve.Options) { o.Recipes = recipes; o.MaxBuilds = 1; o.Queue = 1 })
	srv := strings.TrimSuffix(e.base, "/acis")

	real := make(chan string, 1)
	go func() {
		resp, err := (&http.Client{Timeout: 5 * time.Minute}).Get(e.url("127.0.0.1/tiny", "aci"))
		if err != nil {
			real <- err.Error()
			return
		}
		resp.Body.Close()
		real <- resp.Status
	}()
	for deadline := time.Now().Add(time.Minute); e.built.Load() == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the build of 127.0.0.1/tiny did not start within a minute")
		}
	}

	check := func(what string, names, urls []string) {
		t.Helper()
		codes, bodies := storm(t, urls)
		wrong, unavailable := 0, 0
		for i, code := range codes {
			if code == http.StatusServiceUnavailable {
				unavailable++
			}
			if code != http.StatusNotFound || !strings.Contains(bodies[i], names[i]) {
				if wrong++; wrong <= 3 {
					t.Errorf("%s: GET %s: %d %q, want 404 naming %s", what, urls[i][len(e.base):], code, bodies[i], names[i])
				}
			}
		}
		if wrong > 0 {
			t.Errorf("%s: %d of %d unknown names were not answered 404 naming them, %d of them 503", what, wrong, len(urls), unavailable)
		}
	}
	var names, urls []string
	for i := range 100 {
		n := fmt.Sprintf("nosuch-%03d", i)
		names, urls = append(names, n), append(urls, e.url("127.0.0.1/"+n, "aci"))
	}
	check("while a build runs", names, urls)
	select {
	case status := <-real:
		if status != "200 OK" {
			t.Fatalf("the real image asked for during the storm: %s, want 200", status)
		}
	case <-time.After(5 * time.Minute):
		t.Fatal("the real image asked for during the storm was not answered within 5 minutes")
	}

	// Again with nothing building: no evaluation at all. A dotted name
	// is unknown by its first part, and one unknown name among known
	// ones is named alone.
	before := evaluations()
	names, urls = nil, nil
	for i := range 100 {
		n := fmt.Sprintf("nosuch-%03d", 100+i)
		name := "127.0.0.1/" + n
		switch i % 3 {
		case 1:
			n = "nosuchset.attr" + fmt.Sprint(i)
			name = "127.0.0.1/" + n
		case 2:
			name = "127.0.0.1/busybox/" + n
		}
		names, urls = append(names, n), append(urls, e.url(name, "aci"))
	}
	check("with nothing building", names, urls)
	resp, body := get(t, srv+"/nosuch-discovered?ac-discovery=1")
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(body), "nosuch-discovered") {
		t.Errorf("discovery of an unknown name: %s %q, want 404 naming it", resp.Status, body)
	}
	if n := evaluations() - before; n != 0 {
		t.Errorf("%d Nix evaluations for unknown names, want none", n)
	}
	if n := e.built.Load(); n != 1 {
		t.Errorf("%d builds, want 1: unknown names build nothing", n)
	}
	for _, p := range []string{"/", "/tiny", "/shell/busybox", "/nix/tiny-1-layer"} {
		if resp, body := get(t, srv+p+"?ac-discovery=1"); resp.StatusCode != 200 || !strings.Contains(string(body), "ac-discovery") {
			t.Errorf("discovery of %s: %s %q, want 200 with the templates", p, resp.Status, body)
		}
	}
}

// TestPackageSetThatFailsStopsTheStart: a package set whose names cannot
// be read (a nixpkgs that throws, a flake whose packages do) stops the
// server at start with Nix's reason and what to give instead, and
// leaves no data directory behind.
func TestPackageSetThatFailsStopsTheStart(t *testing.T) {
	key := testkey.Key(t, sign.KeyOptions{Name: "Server", Email: "serve@example.com"})
	dir := t.TempDir()
	nixpkgs := filepath.Join(dir, "nixpkgs")
	os.MkdirAll(nixpkgs, 0o755)
	os.WriteFile(filepath.Join(nixpkgs, "default.nix"), []byte(`{ ... }: throw "this nixpkgs is broken"`+"\n"), 0o644)
	flake := filepath.Join(dir, "flake")
	os.MkdirAll(flake, 0o755)
	os.WriteFile(filepath.Join(flake, "flake.nix"), []byte(`{ outputs = { self }: { packages = throw "this flake is broken"; }; }`+"\n"), 0o644)
	lock, err := pkgs.LockFlake(context.Background(), "path:"+flake)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		what, nixPath, flake, want string
	}{
		{"a nixpkgs that throws", "nixpkgs=" + nixpkgs, "", "this nixpkgs is broken"},
		{"a flake whose packages throw", "", lock.URL, "this flake is broken"},
	} {
		t.Setenv("NIX_PATH", c.nixPath)
		data := filepath.Join(t.TempDir(), "data")
		s, err := serve.New(serve.Options{Prefix: "127.0.0.1", BaseURL: "http://127.0.0.1/acis", Key: key, Data: data, Version: version, Flake: c.flake})
		if err == nil {
			s.Close()
			t.Errorf("%s: the server started", c.what)
			continue
		}
		var u *serve.UsageError
		if !errors.As(err, &u) || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "--nixpkgs") {
			t.Errorf("%s: %v, want a UsageError with Nix's reason and what to give", c.what, err)
		}
		if _, err := os.Stat(data); err == nil {
			t.Errorf("%s: the data directory was made", c.what)
		}
	}
}
