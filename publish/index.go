package publish

import (
	"bytes"
	"fmt"
	"html"
	"sort"
	"strings"
)

// renderIndex makes index.html from what s serves, all of it checked:
// for each prefix with an image in the tree, the discovery meta tag of the
// site's template and one pubkeys tag per key of the prefix that is in the
// tree; and a list of the images for people.
func renderIndex(s *site) []byte {
	esc := html.EscapeString
	r := s.record()
	var images []Published
	for _, im := range s.images {
		images = append(images, im)
	}
	sort.Slice(images, func(i, j int) bool { return images[i].Path < images[j].Path })
	var buf bytes.Buffer
	buf.WriteString("<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n<title>App Container Images</title>\n")
	for _, p := range sortedKeys(r.Prefixes) {
		fmt.Fprintf(&buf, "<meta name=\"ac-discovery\" content=\"%s %s\">\n", esc(p), esc(r.Prefixes[p].Template))
		for _, k := range r.Prefixes[p].PubKeys {
			fmt.Fprintf(&buf, "<meta name=\"ac-discovery-pubkeys\" content=\"%s %s\">\n", esc(p), esc(k))
		}
	}
	buf.WriteString("</head>\n<body>\n<h1>App Container Images</h1>\n<p>With rkt: <code>rkt trust --prefix PREFIX</code>, then <code>rkt fetch NAME:VERSION</code>.</p>\n<ul>\n")
	for _, im := range images {
		fmt.Fprintf(&buf, "<li><a href=\"%s\">%s:%s</a> (%s/%s, %s)</li>\n", esc(im.URL), esc(im.Name), esc(im.Version), esc(im.OS), esc(im.Arch), esc(im.ImageID))
	}
	buf.WriteString("</ul>\n</body>\n</html>\n")
	return buf.Bytes()
}

// DiscoveryTags returns the ac-discovery and ac-discovery-pubkeys meta
// tags that make prefix's names found in a tree served at base (a
// canonical base URL, see ParseBaseURL) with the keys of fingerprints:
// the tags index.html carries, for a server that answers discovery
// itself (package serve).
func DiscoveryTags(prefix, base string, fingerprints []string) string {
	esc := html.EscapeString
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "<meta name=\"ac-discovery\" content=\"%s %s\">\n", esc(prefix), esc(base+"/"+fileTemplate))
	for _, fp := range fingerprints {
		fmt.Fprintf(&buf, "<meta name=\"ac-discovery-pubkeys\" content=\"%s %s\">\n", esc(prefix), esc(base+"/pubkeys/"+strings.ToLower(fp)+".asc"))
	}
	return buf.String()
}
