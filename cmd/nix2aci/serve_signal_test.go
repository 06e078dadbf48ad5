package main

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// SIGTERM while serve builds an image: the build is cancelled, the
// request waiting on it answered 503, the process exits 0 and leaves no
// build staged.
func TestServeStopsCleanlyOnSIGTERM(t *testing.T) {
	t.Parallel()
	bin := binary(t)
	dir := t.TempDir()
	key, _ := testKey(t, dir)
	pkgsDir, _ := filepath.Abs("../../serve/testdata")
	data := filepath.Join(dir, "data")
	p := startServe(t, bin, nil, "--data", data, "--key", key, "--pkgs", pkgsDir)
	stderr := p.stderr
	got := make(chan int, 1)
	go func() {
		resp, err := http.Get(p.url("127.0.0.1/slow"))
		if err != nil {
			got <- 0
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		got <- resp.StatusCode
	}()
	waitFor(t, func() bool {
		m, _ := filepath.Glob(filepath.Join(data, ".nix2aci-serve", "build-*"))
		return len(m) > 0
	})
	time.Sleep(time.Second)
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		if p.err != nil {
			t.Fatalf("serve ended with %v after SIGTERM, want exit 0\n%s", p.err, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("serve still running 20 s after SIGTERM\n%s", stderr.String())
	}
	if code := <-got; code != http.StatusServiceUnavailable {
		t.Errorf("the request waiting on the build got %d, want 503", code)
	}
	if m, _ := filepath.Glob(filepath.Join(data, ".nix2aci-serve", "build-*")); len(m) != 0 {
		t.Errorf("builds left staged: %v", m)
	}
	if ents, _ := os.ReadDir(data); len(ents) != 1 {
		t.Errorf("the data directory holds %d entries, want only the work directory", len(ents))
	}
	for _, want := range []string{"msg=request", "status=503", "msg=build", "msg=stopped"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("the log has no %q:\n%s", want, stderr.String())
		}
	}
}
