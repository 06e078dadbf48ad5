package fetch_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/appc/spec/discovery"
	"github.com/appc/spec/schema/types"

	"github.com/nix2aci/nix2aci/fetch"
	"github.com/nix2aci/nix2aci/internal/testsupport"
	"github.com/nix2aci/nix2aci/nixstore/nixtest"
	"github.com/nix2aci/nix2aci/pipeline"
	"github.com/nix2aci/nix2aci/publish"
	"github.com/nix2aci/nix2aci/sign"
)

// fixture is what every test publishes: two fat images of one real Nix
// closure, 127.0.0.1/base and 127.0.0.1/other, built unsigned, and the
// publisher's key, which signs them while publishing.
type fixture struct {
	key, stranger *openpgp.Entity
	images        []string // the built .aci files
	base, other   *pipeline.Result
}

var (
	fixOnce sync.Once
	fix     fixture
	fixErr  error
)

func getFixture(t *testing.T) *fixture {
	t.Helper()
	nixtest.Require(t)
	fixOnce.Do(func() {
		store := nixtest.Hello(t)
		dir, err := os.MkdirTemp("", "nix2aci-fetch-test-")
		if err != nil {
			fixErr = err
			return
		}
		for _, app := range []struct {
			name string
			res  **pipeline.Result
		}{{"127.0.0.1/base", &fix.base}, {"127.0.0.1/other", &fix.other}} {
			out := filepath.Join(dir, strings.ReplaceAll(app.name, "/", "_"))
			*app.res, err = pipeline.Build(context.Background(), pipeline.Request{Target: store, Kind: pipeline.Fat, Name: app.name, OutDir: out, NoExecCheck: true})
			if err != nil {
				fixErr = err
				return
			}
			fix.images = append(fix.images, (*app.res).ACI)
		}
		if fix.key, err = sign.GenerateKey(sign.KeyOptions{Name: "Publisher", Email: "pub@example.com"}); err != nil {
			fixErr = err
			return
		}
		fix.stranger, fixErr = sign.GenerateKey(sign.KeyOptions{Name: "Stranger", Email: "stranger@example.com", Algorithm: sign.Ed25519})
	})
	if fixErr != nil {
		t.Fatal(fixErr)
	}
	return &fix
}

// site is a published tree served on a loopback port of its own, as a
// static web server or object store serves it. A test may answer some
// requests itself (hook) and see which were made.
type site struct {
	*fixture
	dir    string
	url    string
	port   uint
	client *http.Client // for a TLS site: one that trusts its certificate
	srv    *httptest.Server

	mu       sync.Mutex
	hook     func(w http.ResponseWriter, r *http.Request) bool
	requests []string
}

func newSite(t *testing.T, tls bool) *site {
	t.Helper()
	s := &site{fixture: getFixture(t), dir: t.TempDir()}
	files := http.FileServer(http.Dir(s.dir))
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.requests = append(s.requests, r.Method+" "+r.URL.RequestURI())
		hook := s.hook
		s.mu.Unlock()
		if hook != nil && hook(w, r) {
			return
		}
		files.ServeHTTP(w, r)
	})
	s.srv = httptest.NewUnstartedServer(h)
	// Discovery with InsecureHTTP tries plain http on a TLS port too.
	s.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	if tls {
		s.srv.StartTLS()
		s.client = s.srv.Client()
	} else {
		s.srv.Start()
	}
	t.Cleanup(s.srv.Close)
	s.url = s.srv.URL
	_, p, _ := net.SplitHostPort(s.srv.Listener.Addr().String())
	n, _ := strconv.Atoi(p)
	s.port = uint(n)
	if _, err := publish.Publish(context.Background(), s.images, publish.Options{Site: s.dir, BaseURL: s.url + "/acis", Key: s.key}); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *site) setHook(h func(w http.ResponseWriter, r *http.Request) bool) {
	s.mu.Lock()
	s.hook = h
	s.mu.Unlock()
}

func (s *site) requested(prefix string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.requests {
		if strings.HasPrefix(r, prefix) {
			return true
		}
	}
	return false
}

func (s *site) requestedExactly(req string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.requests {
		if r == req {
			return true
		}
	}
	return false
}

// path is where the site serves an image of name and version.
func (s *site) path(name, version string) string {
	host, rest, _ := strings.Cut(name, "/")
	return filepath.Join(s.dir, "acis", host, rest+"-"+version+"-linux-amd64.aci")
}

// options fetch from s into a new directory, trusting the publisher's
// key for the site's host (rkt trust --prefix 127.0.0.1).
func (s *site) options(t *testing.T) fetch.Options {
	trust := sign.NewTrust()
	trust.AddPrefix("127.0.0.1", s.key)
	return fetch.Options{Dir: t.TempDir(), Trust: trust, InsecureHTTP: s.client == nil, Port: s.port, Client: s.client}
}

func (s *site) labels() map[string]string {
	return map[string]string{"version": s.base.Version, "os": "linux", "arch": "amd64"}
}

func entries(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// The base published by nix2aci publish comes back, proven, with the
// image ID it was built with, under its flat file name.
func TestFetchPublishedBase(t *testing.T) {
	s := newSite(t, false)
	// The trust store as rkt keeps it: rkt trust --prefix 127.0.0.1.
	trustDir := t.TempDir()
	if _, err := sign.WriteTrust(trustDir, "127.0.0.1", false, s.key); err != nil {
		t.Fatal(err)
	}
	trust, err := sign.LoadTrustDir(trustDir)
	if err != nil {
		t.Fatal(err)
	}
	o := s.options(t)
	o.Trust = trust
	f, err := fetch.Image(context.Background(), "127.0.0.1/base", s.labels(), o)
	if err != nil {
		t.Fatal(err)
	}
	flat := "127.0.0.1_base-" + s.base.Version + "-linux-amd64.aci"
	if f.ImageID != s.base.ImageID {
		t.Errorf("fetched image ID %s, built %s", f.ImageID, s.base.ImageID)
	}
	if got := entries(t, o.Dir); strings.Join(got, " ") != flat+" "+flat+".asc" {
		t.Errorf("the directory holds %v, want %s and its .asc", got, flat)
	}
	if f.ACI != filepath.Join(o.Dir, flat) || f.Signature != f.ACI+".asc" {
		t.Errorf("fetched %s and %s", f.ACI, f.Signature)
	}
	if f.Signer != sign.Fingerprint(s.key) || f.TrustedAs != "127.0.0.1" || f.Manifest.Name.String() != "127.0.0.1/base" {
		t.Errorf("signer %s as %s, name %s", f.Signer, f.TrustedAs, f.Manifest.Name)
	}
	if want := s.url + "/acis/127.0.0.1/base-" + s.base.Version + "-linux-amd64.aci"; f.URL != want || f.SignatureURL != want+".asc" {
		t.Errorf("URLs %s %s, want %s", f.URL, f.SignatureURL, want)
	}
	// What is in the directory verifies on its own, as rkt would check it.
	img, _ := os.ReadFile(f.ACI)
	asc, _ := os.ReadFile(f.Signature)
	v, err := sign.Verify(bytes.NewReader(img), bytes.NewReader(asc), trust, time.Time{})
	if err != nil || v.ImageID != s.base.ImageID {
		t.Fatalf("the fetched files: %v", err)
	}
	built, _ := os.ReadFile(s.base.ACI)
	if !bytes.Equal(img, built) {
		t.Error("the fetched image is not the built file")
	}
	// Fetching again replaces the files with the same ones.
	if _, err := fetch.Image(context.Background(), "127.0.0.1/base", s.labels(), o); err != nil {
		t.Fatal(err)
	}
	if got := entries(t, o.Dir); len(got) != 2 {
		t.Errorf("after a second fetch the directory holds %v", got)
	}
}

// Over https, with no plain http at all; a site that only speaks http is
// then not found; a template that sends the image to plain http refused.
func TestFetchOverHTTPS(t *testing.T) {
	s := newSite(t, true)
	o := s.options(t)
	f, err := fetch.Image(context.Background(), "127.0.0.1/base", s.labels(), o)
	if err != nil {
		t.Fatal(err)
	}
	if f.ImageID != s.base.ImageID || !strings.HasPrefix(f.URL, "https://") {
		t.Errorf("fetched %s from %s", f.ImageID, f.URL)
	}

	plain := newSite(t, false)
	o = plain.options(t)
	o.InsecureHTTP = false
	_, err = fetch.Image(context.Background(), "127.0.0.1/base", plain.labels(), o)
	var de *fetch.DiscoveryError
	if !errors.As(err, &de) || !strings.Contains(err.Error(), "over https only") {
		t.Errorf("an http-only site without InsecureHTTP: %v", err)
	}
	if got := entries(t, o.Dir); len(got) != 0 {
		t.Errorf("the directory holds %v", got)
	}

	// An https page whose template says http.
	s.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Query().Get("ac-discovery") == "" {
			return false
		}
		fmt.Fprintf(w, `<meta name="ac-discovery" content="127.0.0.1 %s/acis/{name}-{version}-{os}-{arch}.{ext}">`, plain.url)
		return true
	})
	o = s.options(t)
	_, err = fetch.Image(context.Background(), "127.0.0.1/base", s.labels(), o)
	if !errors.As(err, &de) || !strings.Contains(err.Error(), "is plain http") {
		t.Errorf("a template sending to http: %v", err)
	}
	if plain.requested("GET /acis/") {
		t.Error("the plain http URL was fetched")
	}
}

// Every way an image can fail to be proven is an error saying so and how
// to fix it, and the directory holds nothing afterwards.
func TestFetchRefuses(t *testing.T) {
	s := newSite(t, false)
	basePath := s.path("127.0.0.1/base", s.base.Version)
	info, _ := os.Stat(basePath)
	for _, tc := range []struct {
		name string
		// change the site (undone after the case) or the request
		site   func() (undo func())
		opts   func(*fetch.Options)
		fetch  string
		labels map[string]string
		check  func(error) bool
		want   string
		noGET  bool // the image itself must not have been downloaded
	}{
		{name: "no trust store", opts: func(o *fetch.Options) { o.Trust = nil },
			check: isUsage, want: "no trust store", noGET: true},
		{name: "key not trusted at all", opts: func(o *fetch.Options) { o.Trust = sign.NewTrust(); o.Trust.AddRoot(s.stranger) },
			check: reason(sign.ReasonUnknownKey), want: "rkt trust --prefix 127.0.0.1/base", noGET: true},
		{name: "signature not a signature", site: func() func() {
			asc, _ := os.ReadFile(basePath + ".asc")
			os.WriteFile(basePath+".asc", []byte("<html>not found</html>"), 0o644)
			return func() { os.WriteFile(basePath+".asc", asc, 0o644) }
		}, check: reason(sign.ReasonMalformed), want: "not an armored OpenPGP signature", noGET: true},
		{name: "key trusted for another prefix", opts: func(o *fetch.Options) { o.Trust = sign.NewTrust(); o.Trust.AddPrefix("127.0.0.1/other", s.key) },
			check: reason(sign.ReasonUntrusted), want: "nix2aci trust --prefix 127.0.0.1/base KEY.asc --trust-dir"},
		{name: "image changed after signing", site: func() func() {
			data, _ := os.ReadFile(basePath)
			bad := bytes.Clone(data)
			for i := len(bad) / 2; i < len(bad)/2+16; i++ {
				bad[i] ^= 0xff
			}
			os.WriteFile(basePath, bad, 0o644)
			return func() { os.WriteFile(basePath, data, 0o644) }
		}, check: reason(sign.ReasonBadSignature), want: "does not match"},
		{name: "another version served under the one asked", site: func() func() {
			p := s.path("127.0.0.1/base", "9.9")
			testsupport.CopyFile(t, basePath, p)
			testsupport.CopyFile(t, basePath+".asc", p+".asc")
			return func() { os.Remove(p); os.Remove(p + ".asc") }
		}, labels: map[string]string{"version": "9.9", "os": "linux", "arch": "amd64"},
			check: isMismatch("version"), want: "version label is " + s.base.Version + ", not 9.9 as asked"},
		{name: "another image served under the name", site: func() func() {
			data, _ := os.ReadFile(basePath)
			asc, _ := os.ReadFile(basePath + ".asc")
			other := s.path("127.0.0.1/other", s.other.Version)
			testsupport.CopyFile(t, other, basePath)
			testsupport.CopyFile(t, other+".asc", basePath+".asc")
			return func() { os.WriteFile(basePath, data, 0o644); os.WriteFile(basePath+".asc", asc, 0o644) }
		}, check: isMismatch("name"), want: "holds the image 127.0.0.1/other, not 127.0.0.1/base"},
		{name: "no signature", site: func() func() {
			asc, _ := os.ReadFile(basePath + ".asc")
			os.Remove(basePath + ".asc")
			return func() { os.WriteFile(basePath+".asc", asc, 0o644) }
		}, check: reason(sign.ReasonMissing), want: "has no signature", noGET: true},
		{name: "a signature of 2 MiB", site: func() func() {
			asc, _ := os.ReadFile(basePath + ".asc")
			os.WriteFile(basePath+".asc", bytes.Repeat([]byte("A"), 2<<20), 0o644)
			return func() { os.WriteFile(basePath+".asc", asc, 0o644) }
		}, check: isTooLarge, want: "the signature at", noGET: true},
		{name: "not published", labels: map[string]string{"version": "7.7", "os": "linux", "arch": "amd64"},
			check: isStatus(404), want: "not published there", noGET: true},
		{name: "image file over MaxSize", opts: func(o *fetch.Options) { o.MaxSize = info.Size() / 2 },
			check: isTooLarge, want: "the image at"},
		{name: "uncompressed image over MaxSize", opts: func(o *fetch.Options) { o.MaxSize = info.Size() + 1 },
			check: reason(sign.ReasonInvalidImage), want: "uncompressed archive is larger than"},
		{name: "name not an AC Identifier", fetch: "127.0.0.1/../base", check: isUsage, want: "not an AC Identifier", noGET: true},
		{name: "label with a slash", labels: map[string]string{"version": "../x"}, check: isUsage, want: "cannot be asked for", noGET: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.site != nil {
				defer tc.site()()
			}
			s.mu.Lock()
			s.requests = nil
			s.mu.Unlock()
			o := s.options(t)
			if tc.opts != nil {
				tc.opts(&o)
			}
			name, labels := "127.0.0.1/base", s.labels()
			if tc.fetch != "" {
				name = tc.fetch
			}
			if tc.labels != nil {
				labels = tc.labels
			}
			f, err := fetch.Image(context.Background(), name, labels, o)
			if err == nil || !tc.check(err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("fetched %+v, %v; want an error with %q", f, err, tc.want)
			}
			if got := entries(t, o.Dir); len(got) != 0 {
				t.Errorf("after %v the directory holds %v", err, got)
			}
			if tc.noGET && s.requestedExactly("GET "+strings.TrimPrefix(basePath, s.dir)) {
				t.Errorf("the image was downloaded: %v", s.requests)
			}
		})
	}
}

func isUsage(err error) bool { var u *fetch.UsageError; return errors.As(err, &u) }
func isTooLarge(err error) bool {
	var e *fetch.TooLargeError
	return errors.As(err, &e)
}
func isStatus(code int) func(error) bool {
	return func(err error) bool { var e *fetch.DownloadError; return errors.As(err, &e) && e.Status == code }
}
func isMismatch(field string) func(error) bool {
	return func(err error) bool { var e *fetch.MismatchError; return errors.As(err, &e) && e.Field == field }
}
func reason(r sign.Reason) func(error) bool {
	return func(err error) bool { var e *sign.VerifyError; return errors.As(err, &e) && e.Reason == r }
}

// Redirects: within a plain http host followed; to another host, or from
// https down to http, refused; https to https followed across hosts.
func TestFetchRedirects(t *testing.T) {
	s := newSite(t, false)
	imgURI := "/acis/127.0.0.1/base-" + s.base.Version + "-linux-amd64.aci"
	redirect := func(to string) func(w http.ResponseWriter, r *http.Request) bool {
		return func(w http.ResponseWriter, r *http.Request) bool {
			if r.URL.Path == imgURI {
				http.Redirect(w, r, to, http.StatusFound)
				return true
			}
			if r.URL.Path == "/moved.aci" {
				http.ServeFile(w, r, s.path("127.0.0.1/base", s.base.Version))
				return true
			}
			return false
		}
	}
	s.setHook(redirect("/moved.aci"))
	if f, err := fetch.Image(context.Background(), "127.0.0.1/base", s.labels(), s.options(t)); err != nil || f.ImageID != s.base.ImageID {
		t.Fatalf("a redirect on the same host: %v", err)
	}
	if !s.requested("GET /moved.aci") {
		t.Fatal("the redirect was not followed")
	}

	// To another host (the same server, named otherwise).
	s.setHook(redirect(fmt.Sprintf("http://localhost:%d/moved.aci", s.port)))
	o := s.options(t)
	_, err := fetch.Image(context.Background(), "127.0.0.1/base", s.labels(), o)
	var de *fetch.DownloadError
	if !errors.As(err, &de) || !strings.Contains(err.Error(), "refused a redirect") {
		t.Errorf("a redirect to another host: %v", err)
	}
	if got := entries(t, o.Dir); len(got) != 0 {
		t.Errorf("the directory holds %v", got)
	}

	// From https down to http, even with InsecureHTTP.
	tls := newSite(t, true)
	tls.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == imgURI {
			http.Redirect(w, r, s.url+"/moved.aci", http.StatusFound)
			return true
		}
		return false
	})
	o = tls.options(t)
	o.InsecureHTTP = true
	_, err = fetch.Image(context.Background(), "127.0.0.1/base", tls.labels(), o)
	if !errors.As(err, &de) || !strings.Contains(err.Error(), "refused a redirect from") {
		t.Errorf("a redirect from https to http: %v", err)
	}

	// https to https on another server: followed.
	mirror := newSite(t, true)
	tls.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == imgURI {
			http.Redirect(w, r, mirror.url+imgURI, http.StatusFound)
			return true
		}
		return false
	})
	o = tls.options(t)
	if f, err := fetch.Image(context.Background(), "127.0.0.1/base", tls.labels(), o); err != nil || f.ImageID != s.base.ImageID {
		t.Fatalf("a redirect from https to https: %v", err)
	}
	if !mirror.requested("GET " + imgURI) {
		t.Fatal("the mirror was not asked")
	}
}

// hang answers the image's request with a few bytes and then nothing,
// until the client goes away.
func hang(s *site) {
	imgURI := "/acis/127.0.0.1/base-" + s.base.Version + "-linux-amd64.aci"
	s.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != imgURI {
			return false
		}
		w.Header().Set("Content-Length", "100000")
		w.Write([]byte("\x1f\x8b"))
		w.(http.Flusher).Flush()
		<-r.Context().Done()
		return true
	})
}

// A server that stops sending fails the fetch after StallTimeout; an
// interrupted fetch stops at once. Nothing is left behind either way.
func TestFetchStallsAndInterrupts(t *testing.T) {
	s := newSite(t, false)
	hang(s)
	o := s.options(t)
	o.StallTimeout = 300 * time.Millisecond
	start := time.Now()
	_, err := fetch.Image(context.Background(), "127.0.0.1/base", s.labels(), o)
	var de *fetch.DownloadError
	if !errors.As(err, &de) || !strings.Contains(err.Error(), "sent nothing for 300ms") {
		t.Errorf("a stalled server: %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("the stalled fetch took %s", d)
	}
	if got := entries(t, o.Dir); len(got) != 0 {
		t.Errorf("the directory holds %v", got)
	}

	o = s.options(t)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(300*time.Millisecond, cancel)
	start = time.Now()
	_, err = fetch.Image(ctx, "127.0.0.1/base", s.labels(), o)
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "interrupted") {
		t.Errorf("an interrupted fetch: %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("the interrupted fetch took %s", d)
	}
	if got := entries(t, o.Dir); len(got) != 0 {
		t.Errorf("the directory holds %v", got)
	}
}

// A discovery page is read up to 1 MiB, however long the server goes on.
func TestDiscoveryPageIsBounded(t *testing.T) {
	s := newSite(t, false)
	var sent sync.Map
	s.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Query().Get("ac-discovery") == "" {
			return false
		}
		chunk := []byte("<html><head><title>" + strings.Repeat("x", 64<<10))
		var n int64
		for r.Context().Err() == nil && n < 1<<30 {
			k, err := w.Write(chunk)
			n += int64(k)
			if err != nil {
				break
			}
		}
		sent.Store(r.URL.String(), n)
		return true
	})
	o := s.options(t)
	_, err := fetch.Image(context.Background(), "127.0.0.1/base", s.labels(), o)
	var de *fetch.DiscoveryError
	if !errors.As(err, &de) || !strings.Contains(err.Error(), "was cut at 1048576 bytes") {
		t.Fatalf("an endless discovery page: %v", err)
	}
	sent.Range(func(k, v any) bool {
		if v.(int64) >= 1<<30 {
			t.Errorf("the server sent %s %d bytes", k, v)
		}
		return true
	})
	if got := entries(t, o.Dir); len(got) != 0 {
		t.Errorf("the directory holds %v", got)
	}
}

// Fetches with different options run at once, each through its own
// client, through appc's one discovery client.
func TestConcurrentFetches(t *testing.T) {
	plain, tls := newSite(t, false), newSite(t, true)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := 0; i < 4; i++ {
		for _, s := range []*site{plain, tls} {
			o := s.options(t)
			wg.Add(1)
			go func() {
				defer wg.Done()
				f, err := fetch.Image(context.Background(), "127.0.0.1/other", map[string]string{"version": s.other.Version, "os": "linux", "arch": "amd64"}, o)
				if err == nil && f.ImageID != s.other.ImageID {
					err = fmt.Errorf("fetched %s", f.ImageID)
				}
				if err != nil {
					errs <- err
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// Others using appc's discovery in the same process are not changed by
// this package: their requests go out as before.
func TestOtherDiscoveryUsersUnaffected(t *testing.T) {
	s := newSite(t, false)
	app, err := discovery.NewApp("127.0.0.1/base", map[types.ACIdentifier]string{"version": s.base.Version, "os": "linux", "arch": "amd64"})
	if err != nil {
		t.Fatal(err)
	}
	eps, _, err := discovery.DiscoverACIEndpoints(*app, nil, discovery.InsecureHTTP, s.port)
	if err != nil || len(eps) == 0 || !strings.HasSuffix(eps[0].ACI, "/acis/127.0.0.1/base-"+s.base.Version+"-linux-amd64.aci") {
		t.Fatalf("appc's own discovery: %v %v", eps, err)
	}
}
