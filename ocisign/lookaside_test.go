package ocisign_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/nix2aci/nix2aci/ocisign"
)

func TestLookasideLayout(t *testing.T) {
	key := nix2aciKey(t)
	m := []byte(testManifest)
	d := digestOf(m)
	sig1 := signed(t, key, m, "busybox:1")
	sig2 := signed(t, key, m, "busybox:latest")
	root := filepath.Join(t.TempDir(), "sigs")
	if err := ocisign.WriteLookaside(root, "busybox:1", d, sig1, sig2); err != nil {
		t.Fatal(err)
	}
	// The path containers/image reads: the repository path without the
	// registry, "@", the digest with "=" for ":", signature-N.
	dir := filepath.Join(root, "library", "busybox@sha256="+strings.TrimPrefix(d, "sha256:"))
	for i, want := range [][]byte{sig1, sig2} {
		got, err := os.ReadFile(filepath.Join(dir, "signature-"+strconv.Itoa(i+1)))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("signature-%d: %v", i+1, err)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 2 {
		t.Errorf("%d files in %s, want 2 (no temporary files left)", len(ents), dir)
	}
	got, err := ocisign.ReadLookaside(root, "docker.io/library/busybox:other", d)
	if err != nil || len(got) != 2 || !bytes.Equal(got[1], sig2) {
		t.Fatalf("ReadLookaside: %d, %v", len(got), err)
	}
	got, err = ocisign.ReadLookasideRepo(root, "library/busybox", d)
	if err != nil || len(got) != 2 {
		t.Fatalf("ReadLookasideRepo: %d, %v", len(got), err)
	}
	// Writing fewer replaces them all.
	if err := ocisign.WriteLookaside(root, "busybox:1", d, sig2); err != nil {
		t.Fatal(err)
	}
	if got, err := ocisign.ReadLookaside(root, "busybox", d); err != nil || len(got) != 1 || !bytes.Equal(got[0], sig2) {
		t.Errorf("after writing one: %d, %v", len(got), err)
	}
	if _, err := os.Stat(filepath.Join(dir, "signature-2")); !os.IsNotExist(err) {
		t.Errorf("signature-2 is left: %v", err)
	}
	// An image with no signatures has none, and that is no error.
	if got, err := ocisign.ReadLookaside(root, "busybox", "sha256:"+hex64); err != nil || len(got) != 0 {
		t.Errorf("no signatures: %d, %v", len(got), err)
	}
	// A registry with a port: the path has no host.
	if err := ocisign.WriteLookaside(root, "localhost:5000/a/b:1", d, sig1); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "a", "b@sha256="+strings.TrimPrefix(d, "sha256:"), "signature-1")); err != nil {
		t.Error(err)
	}
}

func TestWriteLookasideRefuses(t *testing.T) {
	m := []byte(testManifest)
	sig := signed(t, nix2aciKey(t), m, "example.com/app:1")
	root := t.TempDir()
	for name, err := range map[string]error{
		"no signatures":        ocisign.WriteLookaside(root, "example.com/app:1", digestOf(m)),
		"not a signature":      ocisign.WriteLookaside(root, "example.com/app:1", digestOf(m), []byte("hello")),
		"a bad reference":      ocisign.WriteLookaside(root, "example.com/../../etc:1", digestOf(m), sig),
		"a bad digest":         ocisign.WriteLookaside(root, "example.com/app:1", "sha256:../../x", sig),
		"too many":             ocisign.WriteLookaside(root, "example.com/app:1", digestOf(m), bytes.Split(bytes.Repeat([]byte("x,"), 65), []byte(","))...),
		"a signature, armored": ocisign.WriteLookaside(root, "example.com/app:1", digestOf(m), []byte("-----BEGIN PGP SIGNATURE-----\n")),
	} {
		if err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if ents, _ := os.ReadDir(root); len(ents) != 0 {
		t.Errorf("refused writes left %v", ents)
	}
}

// What is read is bounded and stays inside the tree: hostile repository
// names are refused, symlinks out of the tree, FIFOs (without blocking),
// huge files and endless signature lists are errors.
func TestReadLookasideHostile(t *testing.T) {
	root := t.TempDir()
	d := "sha256:" + hex64
	dir := filepath.Join(root, "app@sha256="+hex64)
	os.MkdirAll(dir, 0o755)
	for _, repo := range []string{"../x", "a/../../x", "/abs", "a//b", "A", "a/./b", "", "a@sha256=x", strings.Repeat("a", 300)} {
		var re *ocisign.ReferenceError
		if _, err := ocisign.ReadLookasideRepo(root, repo, d); !errors.As(err, &re) {
			t.Errorf("repository %q: %v", repo, err)
		}
	}
	for _, digest := range []string{"sha256:../x", "sha256:" + hex64 + "/../x", "", "sha256:" + strings.ToUpper(hex64)} {
		if _, err := ocisign.ReadLookasideRepo(root, "app", digest); err == nil {
			t.Errorf("digest %q accepted", digest)
		}
	}

	outside := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(outside, []byte("secret"), 0o644)
	os.Symlink(outside, filepath.Join(dir, "signature-1"))
	if _, err := ocisign.ReadLookasideRepo(root, "app", d); err == nil || !strings.Contains(err.Error(), "signature-1") {
		t.Errorf("a symlink out of the tree: %v", err)
	}
	os.Remove(filepath.Join(dir, "signature-1"))

	if err := syscall.Mkfifo(filepath.Join(dir, "signature-1"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ocisign.ReadLookasideRepo(root, "app", d); err == nil || !strings.Contains(err.Error(), "FIFO") {
		t.Errorf("a FIFO: %v", err)
	}
	os.Remove(filepath.Join(dir, "signature-1"))

	os.WriteFile(filepath.Join(dir, "signature-1"), make([]byte, 65<<10), 0o644)
	if _, err := ocisign.ReadLookasideRepo(root, "app", d); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Errorf("a huge signature: %v", err)
	}
	for i := 1; i <= 65; i++ {
		os.WriteFile(filepath.Join(dir, "signature-"+strconv.Itoa(i)), []byte("x"), 0o644)
	}
	if _, err := ocisign.ReadLookasideRepo(root, "app", d); err == nil || !strings.Contains(err.Error(), "more than 64 signatures") {
		t.Errorf("65 signatures: %v", err)
	}
	if _, err := ocisign.ReadLookasideRepo(filepath.Join(root, "missing"), "app", d); err == nil {
		t.Error("a missing root is no error")
	}
}

func TestExtensionSignatures(t *testing.T) {
	d := "sha256:" + hex64
	b, err := ocisign.ExtensionSignatures(d, [][]byte{[]byte("sig")})
	if err != nil {
		t.Fatal(err)
	}
	// sha256("sig"), first 16 bytes.
	want := `{"signatures":[{"schemaVersion":2,"type":"atomic","name":"` + d + `@` + digestOf([]byte("sig"))[7:39] + `","content":"c2ln"}]}`
	if string(b) != want {
		t.Errorf("got  %s\nwant %s", b, want)
	}
	if b, err := ocisign.ExtensionSignatures(d, nil); err != nil || string(b) != `{"signatures":[]}` {
		t.Errorf("no signatures: %s, %v", b, err)
	}
	if _, err := ocisign.ExtensionSignatures("sha256:x/../y", nil); err == nil {
		t.Error("a bad digest is accepted")
	}
}
