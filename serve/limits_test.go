package serve_test

import (
	"context"
	"crypto/sha256"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nix2aci/nix2aci/internal/testsupport"
	"github.com/nix2aci/nix2aci/serve"
)

// TestConcurrentRequestsBuildOnce: 50 concurrent GETs of one new image
// start one build and get 50 identical bodies.
func TestConcurrentRequestsBuildOnce(t *testing.T) {
	e := start(t, nil)
	url := e.url("127.0.0.1/busybox-static", "aci")
	const n = 50
	got := testsupport.GetAll(t, nil, slices.Repeat([]string{url}, n), 0)
	sums := make([][32]byte, n)
	codes := make([]int, n)
	for i, r := range got {
		codes[i], sums[i] = r.StatusCode, sha256.Sum256(r.Body)
	}
	for i := range n {
		if codes[i] != 200 || sums[i] != sums[0] {
			t.Fatalf("response %d: status %d, sha256 %x; the first: %x", i, codes[i], sums[i], sums[0])
		}
	}
	if got := e.built.Load(); got != 1 {
		t.Fatalf("%d builds for %d concurrent requests, want 1", got, n)
	}
}

// tree lists the files and directories under dir with their sizes.
func tree(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, _ := d.Info()
		out = append(out, strings.TrimPrefix(p, dir)+" "+fi.Mode().String())
		return nil
	})
	sort.Strings(out)
	return out
}

// TestBadNamesAreRefused: names with .., upper case, empty components,
// unknown packages and oversized paths get 4xx, with a reason, and leave
// nothing on disk; an unknown package starts no build, however often it
// is asked for.
func TestBadNamesAreRefused(t *testing.T) {
	e := start(t, nil)
	before := tree(t, e.data)
	srv := strings.TrimSuffix(e.base, "/acis")
	long := strings.Repeat("a", 600)
	for _, c := range []struct {
		path, want string
		status     int
	}{
		{"/acis/127.0.0.1/../busybox-" + version + "-linux-amd64.aci", "", 0}, // the client cleans it; below, raw
		{"/acis/127.0.0.1/Busybox-" + version + "-linux-amd64.aci", "upper case", 400},
		{"/acis/127.0.0.1//busybox-" + version + "-linux-amd64.aci", "empty component", 400},
		{"/acis/127.0.0.1/busybox/..-" + version + "-linux-amd64.aci", "no ..", 400},
		{"/acis/127.0.0.1/" + long + "-" + version + "-linux-amd64.aci", "over 512 bytes", 414},
		{"/acis/127.0.0.1/" + strings.Repeat("a/", 20) + "b-" + version + "-linux-amd64.aci", "components", 400},
		{"/acis/127.0.0.1/nosuchpkg/busybox-" + version + "-linux-amd64.aci", "nosuchpkg", 404},
		{"/acis/127.0.0.1/busybox-v0other-linux-amd64.aci", "this server builds version " + version, 404},
		{"/acis/127.0.0.1/busybox-" + version + "-linux-s390x.aci", "nix2aci builds linux images for", 404},
		{"/acis/example.com/busybox-" + version + "-linux-amd64.aci", "not under the prefix", 404},
		{"/Busybox?ac-discovery=1", "upper case", 400},
	} {
		if c.status == 0 {
			continue
		}
		resp, body := get(t, srv+c.path)
		if resp.StatusCode != c.status || !strings.Contains(string(body), c.want) || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
			t.Errorf("GET %s: %s %q, want %d and a plain-text reason with %q", c.path[:min(len(c.path), 80)], resp.Status, body[:min(len(body), 200)], c.status, c.want)
		}
	}
	// Raw request paths, as a client that neither cleans nor escapes
	// them sends them.
	for _, raw := range []string{
		"/acis/127.0.0.1/../../busybox-" + version + "-linux-amd64.aci",
		"/acis/127.0.0.1/%2e%2e/busybox-" + version + "-linux-amd64.aci",
		"/acis/127.0.0.1/busyb%6fx-" + version + "-linux-amd64.aci",
	} {
		req, _ := http.NewRequest("GET", srv+"/", nil)
		req.URL.Opaque = raw
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("GET %s: %s, want 400", raw, resp.Status)
		}
	}
	builds := e.built.Load()
	// Asking again starts no build either.
	for range 5 {
		resp, body := get(t, srv+"/acis/127.0.0.1/nosuchpkg/busybox-"+version+"-linux-amd64.aci")
		if resp.StatusCode != 404 || !strings.Contains(string(body), "nosuchpkg") {
			t.Fatalf("again: %s %q", resp.Status, body)
		}
	}
	if e.built.Load() != builds || builds != 0 {
		t.Fatalf("%d builds, then %d after asking again for an unknown name; want none", builds, e.built.Load())
	}
	if after := tree(t, e.data); strings.Join(after, "\n") != strings.Join(before, "\n") {
		t.Fatalf("the data directory changed:\nbefore %q\nafter  %q", before, after)
	}
}

// TestBuildPastItsDeadline: a build that takes longer than the deadline
// is answered 504 with a reason, cancelled, and leaves nothing behind.
func TestBuildPastItsDeadline(t *testing.T) {
	pkgsDir, _ := filepath.Abs("testdata")
	e := start(t, func(o *serve.Options) { o.Recipes = pkgsDir; o.BuildTimeout = 3 * time.Second })
	before := tree(t, e.data)
	began := time.Now()
	resp, body := get(t, e.url("127.0.0.1/slow", "aci"))
	took := time.Since(began)
	if resp.StatusCode != http.StatusGatewayTimeout || !strings.Contains(string(body), "build deadline of 3s") {
		t.Fatalf("%s %q, want 504 naming the deadline", resp.Status, body)
	}
	if took > 20*time.Second {
		t.Fatalf("answered after %s: the build was not cancelled at its deadline", took)
	}
	if after := tree(t, e.data); strings.Join(after, "\n") != strings.Join(before, "\n") {
		t.Fatalf("the data directory changed:\nbefore %q\nafter  %q", before, after)
	}
}

// TestShutdownDuringBuild: closing the server (what SIGTERM does) during
// a build cancels it promptly, answers the waiting request 503, and
// leaves nothing behind.
func TestShutdownDuringBuild(t *testing.T) {
	pkgsDir, _ := filepath.Abs("testdata")
	e := start(t, func(o *serve.Options) { o.Recipes = pkgsDir })
	before := tree(t, e.data)
	done := make(chan int, 1)
	go func() {
		resp, _, err := request(e.url("127.0.0.1/slow", "aci"))
		if err != nil {
			t.Errorf("the slow build's request: %v", err)
			done <- 0
			return
		}
		done <- resp.StatusCode
	}()
	for e.built.Load() == 0 {
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(time.Second)
	began := time.Now()
	e.s.Close()
	if took := time.Since(began); took > 15*time.Second {
		t.Fatalf("Close took %s", took)
	}
	if code := <-done; code != http.StatusServiceUnavailable {
		t.Fatalf("the request waiting on the build: %d, want 503", code)
	}
	if after := tree(t, e.data); strings.Join(after, "\n") != strings.Join(before, "\n") {
		t.Fatalf("the data directory changed:\nbefore %q\nafter  %q", before, after)
	}
	_ = os.Remove
}

// TestQueueIsBounded: with one build at a time and no queue, a request
// for another new image while one builds gets 503 with Retry-After, and
// /metrics counts what happened.
func TestQueueIsBounded(t *testing.T) {
	pkgsDir, _ := filepath.Abs("testdata")
	e := start(t, func(o *serve.Options) {
		o.Recipes = pkgsDir
		o.MaxBuilds = 1
		o.Queue = 0
		o.BuildTimeout = 4 * time.Second
	})
	done := make(chan int, 1)
	go func() {
		resp, _, err := request(e.url("127.0.0.1/slow", "aci"))
		if err != nil {
			t.Errorf("the slow build's request: %v", err)
			done <- 0
			return
		}
		done <- resp.StatusCode
	}()
	for e.built.Load() == 0 {
		time.Sleep(50 * time.Millisecond)
	}
	resp, body := get(t, e.url("127.0.0.1/busybox", "aci"))
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || !strings.Contains(string(body), "try again") {
		t.Fatalf("a second build beyond the queue: %s (Retry-After %q) %q, want 503", resp.Status, resp.Header.Get("Retry-After"), body)
	}
	if code := <-done; code != http.StatusGatewayTimeout {
		t.Fatalf("the slow build: %d, want 504", code)
	}
	// Remembered: the slow name fails again at once, without a build.
	began := time.Now()
	if resp, _ := get(t, e.url("127.0.0.1/slow", "aci")); resp.StatusCode != http.StatusGatewayTimeout || time.Since(began) > time.Second {
		t.Fatalf("asking again: %s after %s", resp.Status, time.Since(began))
	}
	_, m := get(t, strings.TrimSuffix(e.base, "/acis")+"/metrics")
	for _, want := range []string{
		"nix2aci_serve_builds_started_total 1",
		`nix2aci_serve_builds_failed_total{code="504"} 1`,
		`nix2aci_serve_requests_total{code="503"} 1`,
		`nix2aci_serve_requests_total{code="504"} 2`,
		`nix2aci_serve_cache_hits_total{kind="failure"} 1`,
		"nix2aci_serve_build_duration_seconds_count 1",
	} {
		if !strings.Contains(string(m), want) {
			t.Errorf("/metrics has no %q:\n%s", want, m)
		}
	}
}

// stalledLog is a log sink that hangs on request lines until released,
// as a full pipe or a stalled journal does.
type stalledLog struct{ release chan struct{} }

func (h stalledLog) Enabled(context.Context, slog.Level) bool { return true }
func (h stalledLog) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h stalledLog) WithGroup(string) slog.Handler            { return h }
func (h stalledLog) Handle(_ context.Context, r slog.Record) error {
	if r.Message == "request" {
		<-h.release
	}
	return nil
}

// TestAnswerPrecedesItsLogLine: a request is answered before its log line
// is written, so that a slow log is not a slow answer. (The connection
// waits for the line: each GET here is on a connection of its own.)
func TestAnswerPrecedesItsLogLine(t *testing.T) {
	log := stalledLog{make(chan struct{})}
	e := start(t, func(o *serve.Options) { o.Logger = slog.New(log) })
	defer close(log.release)
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for _, u := range []string{
		"http://127.0.0.1:" + strconv.Itoa(int(e.port)) + "/curl?ac-discovery=1",
		e.base + "/127.0.0.1/Bad-Name-" + version + "-linux-amd64.aci",
	} {
		resp, err := c.Get(u)
		if err != nil {
			t.Fatalf("GET %s while the log is stalled: %v", u, err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || len(b) == 0 {
			t.Fatalf("GET %s while the log is stalled: %d bytes, %v", u, len(b), err)
		}
	}
}
