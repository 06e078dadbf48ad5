package publish_test

import (
	"testing"

	"github.com/nix2aci/nix2aci/publish"
)

// Base URLs that are usable are kept, in one canonical form.
func TestParseBaseURLAccepts(t *testing.T) {
	for in, want := range map[string]string{
		"https://example.com/acis":          "https://example.com/acis",
		"https://Example.COM/acis/":         "https://example.com/acis",
		"http://127.0.0.1:8080/":            "http://127.0.0.1:8080",
		"https://[::1]:443/a":               "https://[::1]:443/a",
		"https://xn--bcher-kva.example/x~y": "https://xn--bcher-kva.example/x~y",
		"https://localhost:65535/A_b.c":     "https://localhost:65535/A_b.c",
	} {
		u, err := publish.ParseBaseURL(in)
		if err != nil || u.String() != want {
			t.Errorf("%s: %v %v; want %s", in, u, err, want)
		}
	}
}
