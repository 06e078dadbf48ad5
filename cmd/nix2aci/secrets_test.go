package main

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// leakNix is what an attacker's Nix code does with the environment it is
// evaluated in: builtins.getEnv each secret, into a store path and so
// into the image.
const leakNix = `derivation {
  name = "leak-1";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" ''
    export PATH=/bin:/usr/bin
    mkdir -p $out/bin
    echo '%s' > $out/leaked
    cp /bin/busybox $out/bin/leak
  '' ];
}`

// TestSecretsReachNoChild: with every secret nix2aci reads from the
// environment set, build --sign, sign, publish, key export and serve run
// Nix's programs (wrappers first in PATH that record their environment)
// with none of them, and Nix code that reads them with builtins.getEnv
// writes nothing of them into an image.
func TestSecretsReachNoChild(t *testing.T) {
	t.Parallel()
	bin := binary(t)
	dir := t.TempDir()
	key := filepath.Join(dir, "key.asc")
	pub := filepath.Join(dir, "pub.asc")
	gen := exec.Command(bin, "key", "generate", "--name", "Leak", "--email", "leak@example.com", "--out", key, "--public", pub)
	gen.Env = append(os.Environ(), "NIX2ACI_KEY_PASSPHRASE=passphrase-of-the-test-key")
	if out, err := gen.CombinedOutput(); err != nil {
		t.Fatalf("key generate: %v\n%s", err, out)
	}
	armored, err := os.ReadFile(key)
	if err != nil {
		t.Fatal(err)
	}
	secrets := map[string]string{
		"NIX2ACI_SIGNING_KEY":    string(armored),
		"NIX2ACI_KEY_PASSPHRASE": "passphrase-of-the-test-key",
		"NIX2ACI_CACHE_KEY_HEX":  strings.Repeat("5ec7e7", 10) + "abcd",
		"AWS_ACCESS_KEY_ID":      "AKIALEAKTESTKEYID",
		"AWS_SECRET_ACCESS_KEY":  "aws-secret-of-the-test",
		"AWS_SESSION_TOKEN":      "aws-session-token-of-the-test",
	}
	if len(secrets) != len(secretNames) {
		t.Fatalf("the test sets %d secrets, nix2aci knows %d", len(secrets), len(secretNames))
	}

	// Wrappers for Nix's programs record the environment they were
	// started with, then run the real program.
	wrappers := filepath.Join(dir, "wrappers")
	records := filepath.Join(dir, "records")
	os.MkdirAll(wrappers, 0o755)
	os.MkdirAll(records, 0o755)
	for _, p := range []string{"nix", "nix-build", "nix-instantiate", "nix-store", "nix-env", "nix-hash"} {
		real, err := exec.LookPath(p)
		if err != nil {
			t.Fatalf("%s not found: run the tests with scripts/test, which installs Nix", p)
		}
		sh := fmt.Sprintf("#!/bin/sh\nenv > %q/%s.$$\nexec %q \"$@\"\n", records, p, real)
		if err := os.WriteFile(filepath.Join(wrappers, p), []byte(sh), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var leak []string
	for _, v := range []string{"NIX2ACI_SIGNING_KEY", "NIX2ACI_KEY_PASSPHRASE", "NIX2ACI_CACHE_KEY_HEX", "AWS_SECRET_ACCESS_KEY"} {
		leak = append(leak, fmt.Sprintf(`${builtins.hashString "sha256" (builtins.getEnv "%s")}`, v))
	}
	leakFile := filepath.Join(dir, "leak.nix")
	os.WriteFile(leakFile, []byte(fmt.Sprintf(leakNix, strings.Join(leak, " "))), 0o644)
	env := []string{"PATH=" + wrappers + ":" + os.Getenv("PATH"), "HOME=" + filepath.Join(dir, "home"), "XDG_CACHE_HOME=" + filepath.Join(dir, "cache")}
	for _, e := range os.Environ() {
		if n, _, _ := strings.Cut(e, "="); n != "PATH" && n != "HOME" && n != "XDG_CACHE_HOME" {
			env = append(env, e)
		}
	}
	for n, v := range secrets {
		env = append(env, n+"="+v)
	}
	nix2aci := func(args ...string) []byte {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env, cmd.Dir = env, dir
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("nix2aci %s: %v\n%s", strings.Join(args, " "), err, exitStderr(err))
		}
		return out
	}

	out := nix2aci("build", leakFile, "--fat", "--sign", "--out", "acis", "--no-link", "--name", "example.com/leak")
	img := filepath.Join(dir, strings.TrimSpace(string(out)))
	nix2aci("build", leakFile, "--layered", "--out", "layered", "--no-link", "--name", "example.com/leak")
	nix2aci("sign", img)
	nix2aci("key", "export")
	nix2aci("publish", "--out", "site", "--base-url", "https://example.com/acis", img)

	// serve: a recipe that reads the secrets, asked for over HTTP.
	recipes := filepath.Join(dir, "recipes")
	os.MkdirAll(recipes, 0o755)
	os.WriteFile(filepath.Join(recipes, "leak.nix"), []byte(`{ pkgs }: { packages = [ (import `+leakFile+`) ]; exec = [ "/bin/leak" "true" ]; }`), 0o644)
	serve := startServe(t, bin, func(c *exec.Cmd) { c.Env, c.Dir = env, dir }, "--data", filepath.Join(dir, "data"), "--pkgs", recipes)
	resp, err := http.Get(serve.url("127.0.0.1/leak"))
	if err != nil {
		t.Fatal(err)
	}
	served, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("serve answered %s for the leak image: %s\n%s", resp.Status, served, serve.stderr.String())
	}
	serve.kill()

	// Every Nix program ran without a secret.
	seen := map[string]int{}
	files, _ := os.ReadDir(records)
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(records, f.Name()))
		if err != nil {
			t.Fatal(err)
		}
		prog, _, _ := strings.Cut(f.Name(), ".")
		seen[prog]++
		for n, v := range secrets {
			for _, line := range strings.Split(string(b), "\n") {
				if strings.HasPrefix(line, n+"=") {
					t.Errorf("%s ran with %s in its environment", prog, n)
				}
			}
			if strings.Contains(string(b), firstLine(v)) {
				t.Errorf("%s ran with the value of %s in its environment", prog, n)
			}
		}
	}
	for _, p := range []string{"nix-instantiate", "nix-store"} {
		if seen[p] == 0 {
			t.Errorf("no %s ran through the wrappers (%v): the test checks nothing", p, seen)
		}
	}
	// And nothing Nix code read went into an image: the digests of the
	// secrets are not in the store path the images hold; those of empty
	// strings are.
	empty := fmt.Sprintf("%x", sha256sum(""))
	for _, f := range []string{img, filepath.Join(dir, "data")} {
		raw := unpackAll(t, f)
		for n, v := range secrets {
			if bytes.Contains(raw, []byte(fmt.Sprintf("%x", sha256sum(v)))) {
				t.Errorf("%s holds what Nix code read of %s", f, n)
			}
		}
		if !bytes.Contains(raw, []byte(empty)) {
			t.Errorf("%s does not hold the leak path's file: the test checks nothing", f)
		}
	}
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	if strings.HasPrefix(l, "-----BEGIN") {
		// The armor's header is no secret: look for the key's body.
		lines := strings.Split(s, "\n")
		for _, x := range lines[1:] {
			if len(x) > 40 {
				return x
			}
		}
	}
	return l
}

func exitStderr(err error) []byte {
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.Stderr
	}
	return nil
}

func sha256sum(s string) [32]byte { return sha256.Sum256([]byte(s)) }

// unpackAll returns the uncompressed bytes of the image at path, or of
// every image under the directory path.
func unpackAll(t *testing.T, path string) []byte {
	t.Helper()
	var all bytes.Buffer
	err := filepath.WalkDir(path, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".aci") {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		zr, err := gzip.NewReader(f)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		_, err = io.Copy(&all, zr)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return all.Bytes()
}
