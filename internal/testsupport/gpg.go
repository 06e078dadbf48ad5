package testsupport

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// GPG is a GnuPG home of its own, for tests that check signatures or
// keys with the real gpg.
type GPG struct {
	t    testing.TB
	Home string // the home directory: GNUPGHOME for other clients
}

// NewGPG makes a GnuPG home in a new temporary directory with a short
// path (gpg-agent's socket must fit in a sockaddr), and stops its agent
// and removes it when the test ends. A missing gpg is fatal.
func NewGPG(t testing.TB) *GPG {
	t.Helper()
	if _, err := exec.LookPath("gpg"); err != nil {
		t.Fatal("gpg not found: run the tests with scripts/test, which installs gnupg")
	}
	home, err := os.MkdirTemp("", "gpg")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		exec.Command("gpgconf", "--homedir", home, "--kill", "all").Run()
		os.RemoveAll(home)
	})
	return &GPG{t, home}
}

// Run runs gpg in the home in batch mode, stdin on its standard input,
// any passphrase taken from the command line (loopback pinentry: pass
// --passphrase), and returns what Try returns. Failing is fatal.
func (g *GPG) Run(stdin []byte, args ...string) []byte {
	g.t.Helper()
	out, err := g.Try(stdin, args...)
	if err != nil {
		g.t.Fatalf("gpg %v: %v\n%s", args, err, out)
	}
	return out
}

// Try runs gpg as Run does and returns its standard output, or its
// standard error where it wrote nothing else (gpg --verify reports
// there) or failed.
func (g *GPG) Try(stdin []byte, args ...string) ([]byte, error) {
	cmd := exec.Command("gpg", append([]string{"--homedir", g.Home, "--batch", "--yes", "--pinentry-mode", "loopback"}, args...)...)
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return errb.Bytes(), err
	}
	if out.Len() == 0 {
		return errb.Bytes(), nil
	}
	return out.Bytes(), nil
}

// File writes data to the file name in the home, readable by its owner
// only, and returns its path.
func (g *GPG) File(name string, data []byte) string {
	g.t.Helper()
	p := filepath.Join(g.Home, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		g.t.Fatal(err)
	}
	return p
}
