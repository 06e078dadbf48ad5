package publish

import (
	"fmt"
	"net"
	"net/url"
	"path"
	"strconv"
	"strings"

	"github.com/nix2aci/nix2aci/internal/safeio"
)

// The template puts an image's name and labels into its URL and its path
// in the tree as they are (appc's discovery substitutes them without
// escaping). Both must then be one literal path: nothing in them may be
// something a URL parser or a web server decodes or normalises (%xx, '+',
// '?', '#', spaces, backslashes, non-ASCII, "." and ".." segments), nor a
// file name a file system or a static host treats specially. What is left
// are RFC 3986's unreserved characters.

// literal says whether s is non-empty and made only of ASCII letters,
// digits and - . _ ~.
func literal(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~') {
			return false
		}
	}
	return s != ""
}

// maxSegment is the longest file name a file system takes.
const maxSegment = 255

// literalPath says whether every "/"-separated segment of p is literal,
// does not start with "." (no ".", "..", nor hidden files, which static
// hosts often refuse to serve) and fits a file name.
func literalPath(p string) bool {
	for _, seg := range strings.Split(p, "/") {
		if !literal(seg) || seg[0] == '.' || len(seg) > maxSegment {
			return false
		}
	}
	return true
}

// literalRule is how the error messages state the rule.
const literalRule = "only ASCII letters, digits and - . _ ~ are the same in a URL, on a web server and in a file name"

// imageFile returns an image's path in the tree (under dir, the base
// URL's path without its leading "/") and its URL (base, the base URL),
// or false if they would not be one literal path.
func imageFile(base, dir, name, version, os, arch string) (rel, u string, ok bool) {
	last := name[strings.LastIndex(name, "/")+1:]
	file := last + "-" + version + "-" + os + "-" + arch + ".aci"
	rel = path.Join(dir, path.Dir(name), file)
	if !literal(version) || !literal(os) || !literal(arch) || !literalPath(rel) || rel != path.Clean(rel) {
		return "", "", false
	}
	return rel, base + "/" + name + "-" + version + "-" + os + "-" + arch + ".aci", true
}

// ParseBaseURL checks a base URL and returns it without a trailing slash,
// its host in lower case: http or https, a host that is a DNS name or an
// IP address, an optional port from 1 to 65535, no user, query or
// fragment, and a canonical path of literal segments.
func ParseBaseURL(s string) (*url.URL, error) {
	bad := func(format string, args ...any) error {
		return &UsageError{fmt.Sprintf("base URL %s ", safeio.Quote(s)) + fmt.Sprintf(format, args...)}
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Opaque != "" {
		return nil, bad("is not an http(s) URL with a host, like https://example.com/acis")
	}
	if u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.User != nil {
		return nil, bad("has a query, fragment or user: give a plain https://HOST/PATH")
	}
	host, err := checkHost(u)
	if err != nil {
		return nil, bad("%v", err)
	}
	p := u.Path
	if u.EscapedPath() != p {
		return nil, bad("has characters in its path that a URL escapes or a server decodes (%%xx, spaces, non-ASCII): %s", literalRule)
	}
	if p == "" {
		p = "/"
	}
	clean := path.Clean(p)
	if !strings.HasPrefix(p, "/") || clean != strings.TrimSuffix(p, "/") && !(clean == "/" && p == "/") {
		return nil, bad("has a path that is not canonical (no //, . or ..)")
	}
	if clean != "/" {
		for _, c := range strings.Split(strings.TrimPrefix(clean, "/"), "/") {
			if !literalPath(c) {
				return nil, bad("has the path component %s, which cannot be a directory of the tree: %s, and it must not start with a dot", safeio.Quote(c), literalRule)
			}
		}
	}
	u.Host = host
	u.Path = strings.TrimSuffix(clean, "/")
	u.RawPath = ""
	return u, nil
}

// checkHost checks the host and port of u and returns them as they are
// written in a canonical URL.
func checkHost(u *url.URL) (string, error) {
	h, port := u.Hostname(), u.Port()
	written := h
	if strings.HasPrefix(u.Host, "[") {
		written = "[" + h + "]"
	}
	if port != "" {
		written += ":" + port
	}
	if u.Host != written {
		return "", fmt.Errorf("has the host and port %s, which are not HOST or HOST:PORT: give a port from 1 to 65535 after the colon, or none", safeio.Quote(u.Host))
	}
	var host string
	switch ip := net.ParseIP(h); {
	case strings.HasPrefix(u.Host, "["):
		if ip == nil || ip.To4() != nil || !strings.Contains(h, ":") {
			return "", fmt.Errorf("has %s in brackets, which is not an IPv6 address (no zone): write an IPv4 address without brackets, or a host name", safeio.Quote(h))
		}
		host = "[" + ip.String() + "]"
	case ip != nil:
		host = ip.String()
	default:
		host = strings.ToLower(h)
		if !dnsName(host) {
			return "", fmt.Errorf("has the host %s, which is neither a DNS name (labels of letters, digits and -, joined by dots, the last not all digits) nor an IP address: give one such as example.com or 192.0.2.1 (an internationalised name in its xn-- form)", safeio.Quote(h))
		}
	}
	if port != "" {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 || port[0] == '0' {
			return "", fmt.Errorf("has the port %s: give a number from 1 to 65535, or no port", safeio.Quote(port))
		}
		host += ":" + port
	}
	return host, nil
}

// dnsName says whether h is a lower-case DNS host name.
func dnsName(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	labels := strings.Split(h, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			if c := l[i]; !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
				return false
			}
		}
	}
	// "127.1" or "0x7f.1" would be taken for an address by some resolvers.
	last := labels[len(labels)-1]
	hex, isHex := strings.CutPrefix(last, "0x")
	return strings.Trim(last, "0123456789") != "" && !(isHex && strings.Trim(hex, "0123456789abcdef") == "")
}
