package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nix2aci/nix2aci/nixstore/nixtest"
)

// A FIFO given where a file is read (an image, a key, a signature, a
// keyring) is refused at once with a clear message; nothing blocks.
func TestFIFOsAreRefusedAtOnce(t *testing.T) {
	dir := t.TempDir()
	testKey(t, dir) // k.asc, p.asc; before Chdir: it builds the CLI from the package directory
	t.Chdir(dir)
	if err := syscall.Mkfifo("fifo", 0o644); err != nil {
		t.Fatal(err)
	}
	os.WriteFile("x.aci", []byte("not read"), 0o644)
	os.Mkdir("recipes", 0o755)
	if err := syscall.Mkfifo("recipes/x.nix", 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"inspect", "fifo"}, exitInvalid},
		{[]string{"sign", "fifo", "--key", "k.asc"}, exitInvalid},
		{[]string{"sign", "x.aci", "--key", "fifo"}, exitKey},
		{[]string{"verify", "fifo", "--keyring", "p.asc", "--signature", "p.asc"}, exitInvalid},
		{[]string{"verify", "x.aci", "--keyring", "p.asc", "--signature", "fifo"}, exitVerify},
		{[]string{"verify", "x.aci", "--keyring", "fifo", "--signature", "p.asc"}, exitKey},
		{[]string{"trust", "fifo", "--root", "--trust-dir", "trust"}, exitKey},
		{[]string{"key", "export", "fifo"}, exitKey},
		{[]string{"build", "x", "--pkgs", "fifo"}, exitFailure},
		{[]string{"build", "x", "--pkgs", "recipes"}, exitFailure},
		{[]string{"pkgs", "list", "--pkgs", "recipes"}, exitFailure},
	} {
		done := make(chan int, 1)
		go func() { done <- run(append([]string{"nix2aci"}, tc.args...)) }()
		select {
		case code := <-done:
			if code != tc.code {
				t.Errorf("nix2aci %s exited %d, want %d", strings.Join(tc.args, " "), code, tc.code)
			}
		case <-time.After(3 * time.Second):
			t.Fatalf("nix2aci %s blocked on a FIFO", strings.Join(tc.args, " "))
		}
	}
}

var (
	binOnce sync.Once
	binPath string
	binDir  string // removed when the tests end
	binErr  error
)

// binary builds nix2aci once for the tests that signal a real process.
func binary(t *testing.T) string {
	binOnce.Do(func() {
		// A directory of this test process's own: other checkouts
		// testing at the same time must not swap the binary under it.
		dir, err := os.MkdirTemp("", "nix2aci-test-bin-")
		if err != nil {
			binErr = err
			return
		}
		binDir = dir
		binPath = filepath.Join(dir, "nix2aci")
		os.Chmod(dir, 0o755) // run as nobody too
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

var (
	keyOnce          sync.Once
	keyFile, pubFile string
	keyErr           error
)

// testKey writes an unprotected signing key and its public key, made once
// per test process by `nix2aci key generate`, into dir as k.asc and p.asc
// and returns their paths: tests that need a key, not its making, share it.
func testKey(t *testing.T, dir string) (key, pub string) {
	t.Helper()
	bin := binary(t)
	keyOnce.Do(func() {
		keyFile, pubFile = filepath.Join(binDir, "k.asc"), filepath.Join(binDir, "p.asc")
		out, err := exec.Command(bin, "key", "generate", "--name", "Test", "--email", "test@example.com", "--no-passphrase", "--out", keyFile, "--public", pubFile).CombinedOutput()
		if err != nil {
			keyErr = fmt.Errorf("key generate: %v\n%s", err, out)
		}
	})
	if keyErr != nil {
		t.Fatal(keyErr)
	}
	key, pub = filepath.Join(dir, "k.asc"), filepath.Join(dir, "p.asc")
	for _, c := range [][2]string{{keyFile, key}, {pubFile, pub}} {
		b, err := os.ReadFile(c[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(c[1], b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return key, pub
}

// bigStorePath is a store path of 160 MB of incompressible data: a build
// of it at level 9 takes seconds, long enough to be interrupted.
func bigStorePath(t *testing.T) string {
	return nixtest.Build(t, `mk "interrupt-me-1.0" "mkdir -p $out/bin; head -c 160000000 /dev/urandom > $out/blob; cp /bin/busybox $out/bin/interrupt-me"`)
}

// SIGTERM and SIGINT stop a build within 2 s with exit code 130 and leave
// nothing at the output path; a SIGKILLed build's leftovers are removed
// by the next build in that directory.
func TestSignalsStopABuildCleanly(t *testing.T) {
	bin := binary(t)
	big := bigStorePath(t)
	dir := t.TempDir()
	for _, tc := range []struct {
		sig  syscall.Signal
		name string
	}{{syscall.SIGTERM, "SIGTERM"}, {syscall.SIGINT, "SIGINT"}} {
		sig := tc.sig
		out := filepath.Join(dir, "out-"+tc.name)
		cmd := exec.Command(bin, "build", big, "--out", out, "--no-link", "--no-cache", "--level", "9", "--jobs", "1")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, func() bool { return writing(out) })
		cmd.Process.Signal(sig)
		start := time.Now()
		err := cmd.Wait()
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("%v: the build took %v to stop", sig, took)
		}
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != exitInterrupted {
			t.Errorf("%v: build ended with %v, want exit %d\n%s", sig, err, exitInterrupted, stderr.String())
		}
		if !strings.Contains(stderr.String(), "interrupted by "+tc.name) || !strings.Contains(stderr.String(), "nothing was written") {
			t.Errorf("%v: stderr %q", sig, stderr.String())
		}
		if _, err := os.Stat(out); !os.IsNotExist(err) {
			ents, _ := os.ReadDir(out)
			t.Errorf("%v: the interrupted build left %s: %v", sig, out, ents)
		}
	}

	// SIGKILL leaves a staging directory; the next build sweeps it.
	out := filepath.Join(dir, "killed")
	cmd := exec.Command(bin, "build", big, "--out", out, "--no-link", "--no-cache", "--level", "9", "--jobs", "1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return writing(out) })
	cmd.Process.Kill()
	cmd.Wait()
	if stagesIn(out) == 0 {
		t.Fatal("SIGKILL left no staging directory; the test proves nothing")
	}
	if b, err := exec.Command(bin, "build", "busybox", "--out", out, "--no-link").CombinedOutput(); err != nil {
		t.Fatalf("next build: %v\n%s", err, b)
	}
	if n := stagesIn(out); n != 0 {
		t.Errorf("the next build left %d staging directories of the killed one", n)
	}
}

func stagesIn(dir string) int {
	m, _ := filepath.Glob(filepath.Join(dir, ".nix2aci-stage-*"))
	return len(m)
}

// writing reports whether a build into out is writing its image.
func writing(out string) bool {
	m, _ := filepath.Glob(filepath.Join(out, ".nix2aci-stage-*", ".*.aci.tmp-*"))
	for _, f := range m {
		if fi, err := os.Stat(f); err == nil && fi.Size() > 0 {
			return true
		}
	}
	return false
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal("timed out waiting for the build to start writing")
}

// A rebuild that fails keeps the previous image's GC roots: a thin image
// whose root vanished would mount paths the next collection removes.
func TestFailedRebuildKeepsTheGCRoots(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	t.Setenv("NIX_CONFIG", "substituters =")
	good := nixtest.Build(t, `mk "gc-keep-1.0" "mkdir -p $out/bin; echo `+dir+` > $out/bin/gc-keep; chmod +x $out/bin/gc-keep"`)
	bad := nixtest.Build(t, `mk "gc-keep-1.0" "mkdir -p $out/share; echo `+dir+` > $out/share/no-program"`)
	if code := run([]string{"nix2aci", "build", good, "--thin", "--no-link"}); code != 0 {
		t.Fatalf("build exited %d", code)
	}
	root := filepath.Join("ACIs", "gc-keep-1.0-linux-amd64.gcroot")
	if code := run([]string{"nix2aci", "build", bad, "--thin", "--no-link"}); code == 0 {
		t.Fatal("a build of a package without a program succeeded")
	}
	if target, err := os.Readlink(root); err != nil || target != good {
		t.Fatalf("after the failed rebuild the root is %q, %v; want %s", target, err, good)
	}
	if out, err := exec.Command("nix-store", "--delete", good).CombinedOutput(); err == nil || !strings.Contains(string(out), "still alive") {
		t.Errorf("nix-store --delete %s: %v\n%s; want it refused", good, err, out)
	}
	if stagesIn("ACIs") != 0 {
		t.Error("the failed build left its staging directory")
	}
}

// A user who may not write the store and has no nix-daemon gets a hint
// naming the fix, and no empty output directory.
func TestNonRootWithoutDaemonGetsAHint(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to become another user")
	}
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("setpriv (util-linux) not found")
	}
	bin := binary(t)
	dir, err := os.MkdirTemp("", "nix2aci-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o777)
	cmd := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", bin, "build", "busybox", "--out", "out")
	cmd.Dir = dir
	cmd.Env = []string{"HOME=" + dir, "PATH=" + os.Getenv("PATH"), "NIX_PATH="}
	b, err := cmd.CombinedOutput()
	if err == nil {
		t.Skip("this machine lets nobody build: a nix-daemon runs")
	}
	if !strings.Contains(string(b), "sudo systemctl enable --now nix-daemon") {
		t.Errorf("no hint in:\n%s", b)
	}
	if _, err := os.Stat(filepath.Join(dir, "out")); !os.IsNotExist(err) {
		t.Errorf("the failed build left its output directory")
	}
}

// Nix's evaluation error reaches the user whole, but bounded: a
// megabyte-long message does not flood the terminal, and control
// characters in it are escaped.
func TestNixErrorsAreKeptButBounded(t *testing.T) {
	bin := binary(t)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "huge.nix"), []byte(`throw ("\u001b[2J" + builtins.concatStringsSep "" (builtins.genList (x: "A") 1000000))`), 0o644)
	os.WriteFile(filepath.Join(dir, "rec.nix"), []byte("let x = x + 1; in x\n"), 0o644)
	cmd := exec.Command(bin, "build", "./huge.nix")
	cmd.Dir = dir
	b, _ := cmd.CombinedOutput()
	if len(b) > 10000 || bytes.Contains(b, []byte("\x1b")) || !bytes.Contains(b, []byte("AAAA")) {
		t.Errorf("a huge Nix error gave %d bytes of output (escape sequence kept: %v)", len(b), bytes.Contains(b, []byte("\x1b")))
	}
	cmd = exec.Command(bin, "build", "./rec.nix")
	cmd.Dir = dir
	b, _ = cmd.CombinedOutput()
	if !bytes.Contains(b, []byte("infinite recursion encountered")) || !bytes.Contains(b, []byte("rec.nix:1:")) {
		t.Errorf("Nix's message was cut:\n%s", b)
	}
}

// Builds running at once in one directory share no temporary name: all
// succeed, and what is left is one consistent image, signature and link.
func TestConcurrentBuildsInOneDirectory(t *testing.T) {
	bin := binary(t)
	dir := t.TempDir()
	testKey(t, dir)
	errs := make(chan error, 4)
	for i := 0; i < 4; i++ {
		go func() {
			cmd := exec.Command(bin, "build", "busybox", "--sign", "--key", "k.asc")
			cmd.Dir = dir
			cmd.Env = append(os.Environ(), "XDG_CACHE_HOME="+filepath.Join(dir, "cache"), "NIX_PATH=")
			b, err := cmd.CombinedOutput()
			if err != nil {
				err = fmt.Errorf("%v\n%s", err, b)
			}
			errs <- err
		}()
	}
	for i := 0; i < 4; i++ {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	verify := exec.Command(bin, "verify", "result.aci", "--keyring", "p.asc")
	verify.Dir = dir
	if b, err := verify.CombinedOutput(); err != nil {
		t.Errorf("after concurrent builds, result.aci does not verify: %v\n%s", err, b)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "*tmp*")); len(m) != 0 {
		t.Errorf("temporary files left: %v", m)
	}
	if stagesIn(filepath.Join(dir, "ACIs")) != 0 {
		t.Error("staging directories left")
	}
}

// A file the user may not read (an image, a signature, a key, a trust
// store entry) is a clear error naming it, exit 1 or the command's own
// code, never a hang or a crash. Run as nobody: root reads everything.
func TestUnreadableFiles(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to become another user")
	}
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("setpriv (util-linux) not found")
	}
	bin := binary(t)
	dir, err := os.MkdirTemp("", "nix2aci-unreadable-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o777)
	for _, name := range []string{"image.aci", "image.aci.asc", "key.asc", "pub.asc"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("secret"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	readable := filepath.Join(dir, "ok.aci")
	os.WriteFile(readable, []byte("x"), 0o644)
	os.WriteFile(readable+".asc", []byte("x"), 0o644)
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"inspect", "image.aci"}, 1, "image.aci: permission denied"},
		{[]string{"verify", "image.aci", "--keyring", "pub.asc"}, 5, "pub.asc: permission denied"},
		{[]string{"sign", "ok.aci", "--key", "key.asc"}, 5, "key.asc: permission denied"},
		{[]string{"trust", "--prefix", "example.com", "pub.asc", "--trust-dir", "t"}, 5, "pub.asc: permission denied"},
		{[]string{"publish", "--out", "site", "--base-url", "https://example.com/a", "--key", "key.asc", "ok.aci"}, 5, "key.asc: permission denied"},
	} {
		cmd := exec.Command("setpriv", append([]string{"--reuid=65534", "--regid=65534", "--clear-groups", bin}, tc.args...)...)
		cmd.Dir = dir
		cmd.Env = []string{"HOME=" + dir, "PATH=" + os.Getenv("PATH")}
		out, _ := cmd.CombinedOutput()
		if code := cmd.ProcessState.ExitCode(); code != tc.code || !strings.Contains(string(out), tc.want) {
			t.Errorf("%v: exit %d, %q; want exit %d and %q", tc.args, code, out, tc.code, tc.want)
		}
	}
}
