package fetch

import (
	"net/url"
	"strings"
	"testing"
)

// The redirect policy, hop by hop.
func TestRedirectPolicy(t *testing.T) {
	for _, tc := range []struct {
		from, to string
		insecure bool
		ok       bool
	}{
		{"https://example.com/a.aci", "https://cdn.example.net/a.aci", false, true},
		{"https://example.com/a.aci", "https://example.com:8443/a.aci", false, true},
		{"https://example.com/a.aci", "http://example.com/a.aci", true, false},
		{"https://example.com/a.aci", "ftp://example.com/a.aci", true, false},
		{"https://example.com/a.aci", "file:///etc/passwd", true, false},
		{"http://example.com/a.aci", "https://example.com/a.aci", true, true},
		{"http://example.com/a.aci", "https://cdn.example.net/a.aci", true, false},
		{"http://example.com:8080/a.aci", "http://example.com:8080/b.aci", true, true},
		{"http://example.com:8080/a.aci", "http://example.com:8081/b.aci", true, false},
		{"http://example.com/a.aci", "http://localhost/a.aci", true, false},
		{"http://example.com/a.aci", "http://example.com/b.aci", false, false},
	} {
		from, _ := url.Parse(tc.from)
		to, _ := url.Parse(tc.to)
		err := redirectAllowed(from, to, tc.insecure)
		if (err == nil) != tc.ok {
			t.Errorf("%s -> %s (insecure %v): %v, want allowed %v", tc.from, tc.to, tc.insecure, err, tc.ok)
		}
	}
}

// What discovery gives is checked before it is asked for.
func TestDiscoveredURLs(t *testing.T) {
	secure, insecure := &call{}, &call{insecureHTTP: true}
	for _, tc := range []struct {
		c    *call
		raw  string
		want string // "" for accepted
	}{
		{secure, "https://example.com/acis/a-1.0-linux-amd64.aci", ""},
		{secure, "http://example.com/a.aci", "plain http"},
		{insecure, "http://example.com/a.aci", ""},
		{insecure, "file:///etc/passwd", "not an http(s) URL"},
		{insecure, "https:///a.aci", "not an http(s) URL"},
		{insecure, "https://user:secret@example.com/a.aci", "user name or password"},
		{insecure, "https:opaque", "not an http(s) URL"},
		{insecure, "%zz", "not an http(s) URL"},
	} {
		_, err := tc.c.checkURL(tc.raw)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.raw, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want %q", tc.raw, err, tc.want)
		case err != nil && strings.Contains(err.Error(), "secret"):
			t.Errorf("%s: the error shows the password: %v", tc.raw, err)
		}
	}
}
