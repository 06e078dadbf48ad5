package ocisign

import (
	"fmt"
	"strings"

	"github.com/nix2aci/nix2aci/internal/safeio"
)

// Reference is a docker reference, normalised as podman and skopeo
// normalise one: busybox:1.36 is docker.io/library/busybox:1.36.
type Reference struct {
	// Domain is the registry's host, with its port if one was given;
	// docker.io when the reference names none.
	Domain string
	// Path is the repository's path on the registry, without host, tag
	// or digest: library/busybox for busybox. It is what a registry's
	// API and a lookaside tree name the repository by.
	Path string
	Tag  string // without the colon; empty if none
	// Digest is the manifest digest, "sha256:<hex>"; empty if none.
	Digest string
}

// Name is the repository's full name, Domain/Path.
func (r Reference) Name() string { return r.Domain + "/" + r.Path }

// String is the reference in its fully explicit form, the one a signature
// names: domain/path[:tag][@digest].
func (r Reference) String() string {
	s := r.Name()
	if r.Tag != "" {
		s += ":" + r.Tag
	}
	if r.Digest != "" {
		s += "@" + r.Digest
	}
	return s
}

// ReferenceError reports a string that is not a docker reference, or not
// one that can be used where it was given.
type ReferenceError struct {
	Ref string // the string given
	Msg string // what is wrong and how to write it instead
}

func (e *ReferenceError) Error() string {
	return fmt.Sprintf("image reference %s: %s", safeio.QuoteAlways(e.Ref), e.Msg)
}

const (
	defaultDomain = "docker.io"
	// maxNameLength bounds a normalised repository name (domain and
	// path), as docker's reference grammar does.
	maxNameLength = 255
	maxTagLength  = 128
)

// ParseReference parses s as a docker reference (host[:port]/path[:tag]
// [@digest]) and normalises it: a name whose first component is not a
// host (no dot or colon in it, and not localhost) is on docker.io, and a
// one-component name on docker.io is under library/. Repository paths are
// lowercase components of letters and digits joined by ".", "_", "__" or
// dashes; a tag is up to 128 letters, digits, "_", "." and "-", not
// starting with "." or "-"; a digest is sha256 or sha512 in lowercase
// hex. Bracketed IPv6 hosts are not supported.
func ParseReference(s string) (Reference, error) {
	bad := func(format string, args ...any) (Reference, error) {
		return Reference{}, &ReferenceError{Ref: s, Msg: fmt.Sprintf(format, args...)}
	}
	if s == "" {
		return bad("it is empty; give a name like registry.example.com/app:1.0")
	}
	if len(s) > 1024 {
		return bad("it is %d bytes long, too long for a reference (a repository name is at most %d bytes)", len(s), maxNameLength)
	}
	var r Reference
	rest := s
	if i := strings.IndexByte(rest, '@'); i >= 0 {
		d := rest[i+1:]
		if _, _, err := parseDigest(d); err != nil {
			return bad("its digest %s", err.Error())
		}
		r.Digest, rest = d, rest[:i]
	}
	if i := strings.LastIndexByte(rest, ':'); i > strings.LastIndexByte(rest, '/') {
		r.Tag, rest = rest[i+1:], rest[:i]
		if !validTag(r.Tag) {
			return bad("tag %s is not valid: a tag is 1 to 128 letters, digits, '_', '.' and '-', and starts with a letter, digit or '_'", safeio.QuoteAlways(r.Tag))
		}
	}
	if rest == "" {
		return bad("it names no repository")
	}
	first, remainder, found := strings.Cut(rest, "/")
	if !found || !strings.ContainsAny(first, ".:") && first != "localhost" && strings.ToLower(first) == first {
		r.Domain, r.Path = defaultDomain, rest
	} else {
		r.Domain, r.Path = first, remainder
		if !validDomain(r.Domain) {
			return bad("registry host %s is not valid: a host is dot-separated names of letters, digits and inner dashes, with an optional :PORT", safeio.QuoteAlways(r.Domain))
		}
	}
	if r.Domain == "index.docker.io" {
		r.Domain = defaultDomain
	}
	if strings.ToLower(r.Path) != r.Path {
		return bad("repository names must be lowercase (%s)", safeio.QuoteAlways(strings.ToLower(r.Path)))
	}
	if !validPath(r.Path) {
		return bad("repository path %s is not valid: it is components of lowercase letters and digits, separated inside by '.', '_', '__' or dashes, joined by '/'", safeio.QuoteAlways(r.Path))
	}
	if r.Domain == defaultDomain && !strings.Contains(r.Path, "/") {
		if isHex64(r.Path) && !strings.Contains(s, "/") {
			return bad("it is a 64-digit hexadecimal string, which names an image ID, not a repository")
		}
		r.Path = "library/" + r.Path
	}
	if n := len(r.Name()); n > maxNameLength {
		return bad("the repository name is %d bytes long, more than the %d allowed", n, maxNameLength)
	}
	return r, nil
}

// validTag reports whether t matches [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}.
func validTag(t string) bool {
	if t == "" || len(t) > maxTagLength || t[0] == '.' || t[0] == '-' {
		return false
	}
	for i := 0; i < len(t); i++ {
		if c := t[i]; !isWord(c) && c != '.' && c != '-' {
			return false
		}
	}
	return true
}

func isWord(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_'
}

func isLowerAlnum(c byte) bool { return 'a' <= c && c <= 'z' || '0' <= c && c <= '9' }

// validDomain reports whether d is host[:port], host being dot-separated
// labels of letters and digits with dashes inside.
func validDomain(d string) bool {
	host, port, hasPort := strings.Cut(d, ":")
	if hasPort {
		if port == "" || len(port) > 5 {
			return false
		}
		for i := 0; i < len(port); i++ {
			if port[i] < '0' || port[i] > '9' {
				return false
			}
		}
	}
	if host == "" {
		return false
	}
	for _, label := range strings.Split(host, ".") {
		if label == "" || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			if c := label[i]; !isLowerAlnum(c) && !('A' <= c && c <= 'Z') && c != '-' {
				return false
			}
		}
	}
	return true
}

// validPath reports whether p is path-components joined by "/", each
// lowercase letters and digits separated by one of ".", "_", "__" or a
// run of dashes. No component can be empty, "." or "..", so a valid path
// never leaves the directory it is joined to.
func validPath(p string) bool {
	if p == "" {
		return false
	}
	for _, comp := range strings.Split(p, "/") {
		if !validComponent(comp) {
			return false
		}
	}
	return true
}

func validComponent(c string) bool {
	if c == "" || !isLowerAlnum(c[0]) || !isLowerAlnum(c[len(c)-1]) {
		return false
	}
	for i := 0; i < len(c); {
		if isLowerAlnum(c[i]) {
			i++
			continue
		}
		// A separator: ".", "_", "__", or one or more dashes, between
		// alphanumerics (the ends are alphanumeric, checked above).
		switch {
		case c[i] == '.':
			i++
		case c[i] == '_':
			i++
			if c[i] == '_' {
				i++
			}
		case c[i] == '-':
			for c[i] == '-' {
				i++
			}
		default:
			return false
		}
		if !isLowerAlnum(c[i]) {
			return false
		}
	}
	return true
}

func isHex64(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isLowerHex(s[i]) {
			return false
		}
	}
	return true
}

func isLowerHex(c byte) bool { return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' }

// parseDigest splits a manifest digest "sha256:<64 hex>" or
// "sha512:<128 hex>" (lowercase, as the OCI image spec requires for
// these) into its algorithm and hex.
func parseDigest(d string) (algo, hex string, err error) {
	algo, hex, ok := strings.Cut(d, ":")
	if !ok {
		return "", "", fmt.Errorf("%s is not ALGORITHM:HEX (sha256:…)", safeio.QuoteAlways(d))
	}
	var want int
	switch algo {
	case "sha256":
		want = 64
	case "sha512":
		want = 128
	default:
		return "", "", fmt.Errorf("%s uses %s; only sha256 and sha512 digests are supported", safeio.QuoteAlways(d), safeio.QuoteAlways(algo))
	}
	if len(hex) != want {
		return "", "", fmt.Errorf("%s has %d hex digits, not the %d of %s", safeio.QuoteAlways(d), len(hex), want, algo)
	}
	for i := 0; i < len(hex); i++ {
		if !isLowerHex(hex[i]) {
			return "", "", fmt.Errorf("%s is not lowercase hexadecimal", safeio.QuoteAlways(d))
		}
	}
	return algo, hex, nil
}
