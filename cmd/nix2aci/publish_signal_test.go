package main

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/nix2aci/nix2aci/nixstore/nixtest"
)

// SIGTERM while publishing: exit 130, and what the message says was
// written is what the site holds (stdout lists exactly the images
// published), every image there complete; no staging directory is left.
func TestPublishInterruptedSaysWhatWasWritten(t *testing.T) {
	t.Parallel()
	bin := binary(t)
	big := bigStorePath(t)
	small := nixtest.Build(t, `mk "small-1.0" "mkdir -p $out/bin; cp /bin/busybox $out/bin/small"`)
	dir := t.TempDir()
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
			t.Fatalf("nix2aci %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	key, _ := testKey(t, dir)
	// The small app's images come first: published before the big one
	// is staged, they would be in the site when the signal comes.
	run("build", small, "--layered", "--name", "example.com/small", "--out", filepath.Join(dir, "a"), "--no-link")
	run("build", big, "--name", "example.com/big", "--out", filepath.Join(dir, "b"), "--no-link", "--level", "1")

	site := filepath.Join(dir, "site")
	cmd := exec.Command(bin, "publish", "--out", site, "--base-url", "https://example.com/acis", "--key", key, filepath.Join(dir, "a"), filepath.Join(dir, "b"))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Once the big image is being staged.
	waitFor(t, func() bool {
		m, _ := filepath.Glob(filepath.Join(site, ".nix2aci-publish-*", "*.aci"))
		for _, f := range m {
			if fi, err := os.Stat(f); err == nil && fi.Size() > 50<<20 {
				return true
			}
		}
		return false
	})
	cmd.Process.Signal(syscall.SIGTERM)
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitInterrupted {
		t.Fatalf("publish ended with %v, want exit %d\n%s", err, exitInterrupted, stderr.String())
	}
	var inSite []string
	filepath.WalkDir(site, func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasSuffix(p, ".aci") && !strings.Contains(p, "/.nix2aci-publish-") {
			if _, err := os.Stat(p + ".asc"); err != nil {
				t.Errorf("%s has no signature", p)
			}
			inSite = append(inSite, p)
		}
		return nil
	})
	listed := strings.Fields(stdout.String())
	msg := stderr.String()
	if !strings.Contains(msg, "interrupted by SIGTERM") {
		t.Errorf("stderr: %s", msg)
	}
	if m := regexp.MustCompile(`publishing interrupted after (\d+) of \d+ images`).FindStringSubmatch(msg); m != nil {
		if n, _ := strconv.Atoi(m[1]); n != len(listed) || n != len(inSite) {
			t.Errorf("the message says %s images were published; stdout lists %d, the site holds %d", m[1], len(listed), len(inSite))
		}
	} else if !strings.Contains(msg, "nothing was written") || len(listed) != 0 || len(inSite) != 0 {
		t.Errorf("stderr %q, stdout %q; the site holds %v", msg, listed, inSite)
	}
	if m, _ := filepath.Glob(filepath.Join(site, ".nix2aci-publish-*")); len(m) != 0 {
		t.Errorf("staging left: %v", m)
	}
}
