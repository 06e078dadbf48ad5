package ocisign_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/nix2aci/nix2aci/ocisign"
)

const hex64 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func TestParseReferenceNormalises(t *testing.T) {
	for in, want := range map[string][2]string{
		"busybox":                                 {"docker.io/library/busybox", "library/busybox"},
		"busybox:1.36":                            {"docker.io/library/busybox:1.36", "library/busybox"},
		"library/busybox:latest":                  {"docker.io/library/busybox:latest", "library/busybox"},
		"index.docker.io/foo/bar:x":               {"docker.io/foo/bar:x", "foo/bar"},
		"docker.io/busybox":                       {"docker.io/library/busybox", "library/busybox"},
		"localhost/app:1":                         {"localhost/app:1", "app"},
		"localhost:5000/a/b/c:v1.0-rc_2":          {"localhost:5000/a/b/c:v1.0-rc_2", "a/b/c"},
		"127.0.0.1:43123/nix2aci/busybox:tag":     {"127.0.0.1:43123/nix2aci/busybox:tag", "nix2aci/busybox"},
		"Registry.Example.com/a__b/c--d.e:_t":     {"Registry.Example.com/a__b/c--d.e:_t", "a__b/c--d.e"},
		"example.com/app@sha256:" + hex64:         {"example.com/app@sha256:" + hex64, "app"},
		"example.com/app:1@sha256:" + hex64:       {"example.com/app:1@sha256:" + hex64, "app"},
		"quay.io/" + hex64 + ":t":                 {"quay.io/" + hex64 + ":t", hex64},
		"localhost:5000":                          {"docker.io/library/localhost:5000", "library/localhost"},
		"foo/bar":                                 {"docker.io/foo/bar", "foo/bar"},
		"example.com/" + strings.Repeat("a", 200): {"example.com/" + strings.Repeat("a", 200), strings.Repeat("a", 200)},
	} {
		r, err := ocisign.ParseReference(in)
		if err != nil {
			t.Errorf("%q: %v", in, err)
			continue
		}
		if r.String() != want[0] || r.Path != want[1] {
			t.Errorf("%q: got %s (path %s), want %s (path %s)", in, r.String(), r.Path, want[0], want[1])
		}
	}
}

func TestParseReferenceRefuses(t *testing.T) {
	for in, msg := range map[string]string{
		"":                     "empty",
		"Busybox":              "lowercase",
		"example.com/App:1":    "lowercase",
		"example.com/a/../b:1": "not valid",
		"example.com/./b":      "not valid",
		"example.com//b":       "not valid",
		"example.com/b/":       "not valid",
		"example.com/-b":       "not valid",
		"example.com/a...b":    "not valid",
		"example.com/a___b":    "not valid",
		"example.com/a:":       "tag",
		"example.com/a:.x":     "tag",
		"example.com/a:" + strings.Repeat("t", 129):      "tag",
		"example.com/a@sha256:abc":                       "digest",
		"example.com/a@md5:" + hex64:                     "sha256 and sha512",
		"example.com/a@sha256:" + strings.ToUpper(hex64): "lowercase",
		hex64:                  "image ID",
		"exa_mple.com/a":       "host",
		"-example.com/a":       "host",
		"example.com:/a":       "host",
		"example.com:99999x/a": "host",
		"[::1]:5000/a":         "host",
		"example.com/a b":      "not valid",
		"example.com/ä":        "not valid",
		"example.com/" + strings.Repeat("a", 250): "255",
		"@sha256:" + hex64:                        "no repository",
	} {
		_, err := ocisign.ParseReference(in)
		var re *ocisign.ReferenceError
		if !errors.As(err, &re) || !strings.Contains(err.Error(), msg) {
			t.Errorf("%q: got %v, want a ReferenceError saying %q", in, err, msg)
		}
	}
}
