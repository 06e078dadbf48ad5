package testsupport_test

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/nix2aci/nix2aci/internal/testsupport"
)

// A LockedBuffer with Max keeps what was written up to the write that
// took it past Max, and drops the rest.
func TestLockedBufferMax(t *testing.T) {
	b := testsupport.LockedBuffer{Max: 4}
	for _, s := range []string{"abc", "de", "fg"} {
		if n, err := b.Write([]byte(s)); n != len(s) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", s, n, err)
		}
	}
	if got := b.String(); got != "abcde" {
		t.Fatalf("kept %q, want abcde", got)
	}
}

// GetAll answers in the order of its URLs, with each body cut at the
// limit and the host that answered.
func TestGetAll(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/missing" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprint(w, strings.Repeat(r.URL.Path[1:], 10))
	}))
	defer srv.Close()
	urls := []string{srv.URL + "/a", srv.URL + "/missing", srv.URL + "/b"}
	got := testsupport.GetAll(t, nil, urls, 4)
	host := strings.TrimPrefix(srv.URL, "http://")
	for i, want := range []struct {
		code int
		body string
	}{{200, "aaaa"}, {404, "404 "}, {200, "bbbb"}} {
		if r := got[i]; r.StatusCode != want.code || string(r.Body) != want.body || r.Host != host {
			t.Errorf("%s: %d %q from %s, want %d %q from %s", urls[i], r.StatusCode, r.Body, r.Host, want.code, want.body, host)
		}
	}
	if b := testsupport.Get(t, urls[0]); string(b) != strings.Repeat("a", 10) {
		t.Errorf("Get: %q", b)
	}
}

// FreeAddr is a loopback address nothing listens on.
func TestFreeAddr(t *testing.T) {
	addr := testsupport.FreeAddr(t)
	if !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Fatalf("FreeAddr = %s", addr)
	}
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Fatalf("something listens on %s", addr)
	}
}
