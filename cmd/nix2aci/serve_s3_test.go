package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nix2aci/nix2aci/internal/testsupport"
	"github.com/nix2aci/nix2aci/objstore"
	"github.com/nix2aci/nix2aci/objstore/objstoretest"
)

// replicas holds the binary and a key made once per test.
type replicas struct {
	bin, key, pkgs string
	g              *objstoretest.Gateway
}

func newReplicas(t *testing.T) *replicas {
	t.Helper()
	r := &replicas{bin: binary(t)}
	r.key, _ = testKey(t, t.TempDir())
	r.pkgs, _ = filepath.Abs("../../serve/testdata")
	r.g = objstoretest.Start(t)
	return r
}

// env is the environment of a replica: the gateway's credentials, no
// shared AWS files, no instance metadata.
func (r *replicas) env(secret string) []string {
	dir := os.TempDir()
	return append(os.Environ(), "AWS_ACCESS_KEY_ID="+objstoretest.AccessKey, "AWS_SECRET_ACCESS_KEY="+secret, "AWS_REGION=us-east-1",
		"AWS_CONFIG_FILE="+filepath.Join(dir, "nix2aci-no-aws-config"), "AWS_SHARED_CREDENTIALS_FILE="+filepath.Join(dir, "nix2aci-no-aws-credentials"),
		"AWS_EC2_METADATA_DISABLED=true", "NIX_CONFIG=substituters =")
}

// start runs a replica on bucket, in its own process group.
func (r *replicas) start(t *testing.T, bucket string, extra ...string) *serveProc {
	t.Helper()
	return startServe(t, r.bin, func(c *exec.Cmd) { c.Env = r.env(objstoretest.SecretKey) },
		append([]string{"--data", filepath.Join(t.TempDir(), "data"), "--key", r.key, "--pkgs", r.pkgs,
			"--store", "s3://" + bucket, "--s3-endpoint", r.g.Endpoint}, extra...)...)
}

// buildsStarted reads nix2aci_serve_builds_started_total from /metrics.
func (p *serveProc) buildsStarted(t *testing.T) int {
	t.Helper()
	resp, err := http.Get("http://" + p.addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^nix2aci_serve_builds_started_total (\d+)`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("no builds_started in /metrics:\n%s", b)
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

func (r *replicas) bucket(t *testing.T, name string) *objstore.S3 {
	return r.g.Bucket(t, name, objstore.S3Options{})
}

// Two replicas on one bucket: 50 concurrent requests for one new image,
// spread over both, build it once; every answer is a redirect to the same
// bytes.
func TestServeReplicasBuildOnce(t *testing.T) {
	t.Parallel()
	r := newReplicas(t)
	r.bucket(t, "images")
	a := r.start(t, "images", "--lease", "10s")
	b := r.start(t, "images", "--lease", "10s")
	const n = 50
	urls := make([]string, n)
	for i := range n {
		urls[i] = a.url("127.0.0.1/tiny")
		if i%2 == 1 {
			urls[i] = b.url("127.0.0.1/tiny")
		}
	}
	sums := make([][32]byte, n)
	codes := make([]int, n)
	for i, resp := range testsupport.GetAll(t, nil, urls, 0) {
		if resp.StatusCode == 0 {
			continue // the GET failed, and GetAll said so
		}
		codes[i], sums[i] = resp.StatusCode, sha256.Sum256(resp.Body)
		if resp.Host != r.g.Addr {
			t.Errorf("request %d was answered by %s, not by the bucket through a redirect", i, resp.Host)
		}
	}
	for i := range n {
		if codes[i] != 200 || sums[i] != sums[0] {
			t.Fatalf("response %d: status %d, sha256 %x; the first: %x\n%s\n%s", i, codes[i], sums[i], sums[0], a.stderr, b.stderr)
		}
	}
	if na, nb := a.buildsStarted(t), b.buildsStarted(t); na+nb != 1 {
		t.Fatalf("%d + %d builds for %d requests over two replicas, want 1\n%s\n%s", na, nb, n, a.stderr, b.stderr)
	}
}

// A replica killed (SIGKILL, with its Nix) while it builds: the other,
// asked for the same image, waits on its lease, takes it over within the
// lease's time and finishes the image.
func TestServeReplicaKilledMidBuild(t *testing.T) {
	t.Parallel()
	r := newReplicas(t)
	st := r.bucket(t, "images")
	const lease = 6 * time.Second
	a := r.start(t, "images", "--lease", lease.String())
	b := r.start(t, "images", "--lease", lease.String())
	go func() {
		if resp, err := http.Get(a.url("127.0.0.1/slowok")); err == nil {
			resp.Body.Close()
		}
	}()
	key := "acis/" + strings.TrimPrefix(a.url("127.0.0.1/slowok"), "http://"+a.addr+"/acis/")
	waitFor(t, func() bool {
		_, err := st.Stat(context.Background(), objstore.LeaseKey(key))
		return err == nil
	})
	got := make(chan *http.Response, 1)
	go func() {
		resp, err := http.Get(b.url("127.0.0.1/slowok"))
		if err != nil {
			t.Error(err)
			got <- nil
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		got <- resp
	}()
	time.Sleep(2 * time.Second)
	if n := b.buildsStarted(t); n != 0 {
		t.Fatalf("the second replica built while the first held the lease")
	}
	syscall.Kill(-a.cmd.Process.Pid, syscall.SIGKILL)
	killed := time.Now()
	for b.buildsStarted(t) == 0 {
		if time.Since(killed) > lease+3*time.Second {
			t.Fatalf("the second replica did not take the build over within %s of the first's death\n%s", lease+3*time.Second, b.stderr)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("taken over %s after the kill", time.Since(killed).Round(100*time.Millisecond))
	select {
	case resp := <-got:
		if resp == nil || resp.StatusCode != 200 || resp.Request.URL.Host != r.g.Addr {
			t.Fatalf("the waiting request: %+v\n%s", resp, b.stderr)
		}
	case <-time.After(3 * time.Minute):
		t.Fatalf("the second replica did not finish\n%s", b.stderr)
	}
	if _, err := objstore.Complete(context.Background(), st, key); err != nil {
		t.Fatal(err)
	}
}

// Bad credentials, a missing bucket and an unreachable endpoint stop
// serve at start, with a message naming the fix.
func TestServeStoreFailsAtStart(t *testing.T) {
	t.Parallel()
	r := newReplicas(t)
	r.bucket(t, "images")
	closed := "http://" + testsupport.FreeAddr(t)
	for _, c := range []struct {
		name, endpoint, bucket, secret string
		code                           int
		want                           string
	}{
		{"bad credentials", r.g.Endpoint, "images", "wrong", 2, "refused the credentials"},
		{"missing bucket", r.g.Endpoint, "nothere", objstoretest.SecretKey, 2, `the bucket "nothere" does not exist`},
		{"unreachable endpoint", closed, "images", objstoretest.SecretKey, 1, "cannot reach the store"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		cmd := exec.CommandContext(ctx, r.bin, "serve", "--listen", "127.0.0.1:0", "--prefix", "127.0.0.1", "--data", filepath.Join(t.TempDir(), "d"),
			"--key", r.key, "--store", "s3://"+c.bucket, "--s3-endpoint", c.endpoint)
		cmd.Env = r.env(c.secret)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		start := time.Now()
		err := cmd.Run()
		cancel()
		code := -1
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		if code != c.code || !strings.Contains(stderr.String(), c.want) || strings.Contains(stderr.String(), "serving") {
			t.Errorf("%s: exit %d (%v) after %s, want %d and %q:\n%s", c.name, code, err, time.Since(start), c.code, c.want, stderr.String())
		}
		t.Logf("%s: exit %d: %s", c.name, code, strings.TrimSpace(stderr.String()))
	}
}
