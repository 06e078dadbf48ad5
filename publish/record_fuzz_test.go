package publish

import (
	"context"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/appc/spec/schema/types"
)

// validRecord is a record as publish writes it.
const validRecord = `{
 "images": {
  "acis/example.com/app-1.0-linux-amd64.aci": {
   "name": "example.com/app",
   "version": "1.0",
   "os": "linux",
   "arch": "amd64",
   "imageID": "sha512-` + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" + `",
   "path": "acis/example.com/app-1.0-linux-amd64.aci",
   "url": "https://example.com/acis/example.com/app-1.0-linux-amd64.aci",
   "depends": ["sha512-0123456789abcdef"]
  }
 },
 "prefixes": {
  "example.com": {
   "template": "https://example.com/acis/{name}-{version}-{os}-{arch}.{ext}",
   "pubkeys": ["https://example.com/acis/pubkeys/0123456789abcdef0123456789abcdef01234567.asc"]
  }
 }
}`

// Whatever bytes the site's record holds, reading it fails with an error
// that names it, or yields only checked data: URLs under one canonical
// base URL, plain names and literal labels at the paths the template
// gives them (inside the site), image IDs; and index.html made from it,
// read through a real tree or taken as it is, holds nothing else.
func FuzzSiteRecord(f *testing.F) {
	f.Add([]byte(validRecord))
	for _, r := range [][2]string{
		{`"url": "https://example.com/acis/example.com/app-1.0-linux-amd64.aci"`, `"url": "javascript:alert(1)"`},
		{`.asc"]`, `.asc", "https://evil.example/key.asc"]`},
		{`"version": "1.0"`, `"version": "1%2e0"`},
		{`acis/example.com/app-1.0`, `../../etc/app-1.0`},
		{`{ext}"`, `{ext}?<b>"`},
		{`"name": "example.com/app"`, `"name": "example.com/app\"><script>"`},
		{`"imageID": "sha512-`, `"imageID": "sha512-<i>`},
	} {
		f.Add([]byte(strings.Replace(validRecord, r[0], r[1], 1)))
	}
	for _, s := range []string{"", "{", "null", "[]", `{"prefixes":{"a":null}}`, `{"prefixes":{"../x":{}}}`, `{"images":{"x.aci":{}}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := parseRecord(data)
		if err != nil {
			if !strings.Contains(err.Error(), stateFile) || len(err.Error()) > 2000 {
				t.Fatalf("error %q", err)
			}
			return
		}
		checkRecord(t, r)
		// Taken as it is, as if the tree held everything it names.
		s := &site{base: r.base, keys: map[string]*openpgp.Entity{}, prefixes: map[string]map[string]bool{}, images: r.images}
		if r.base != "" {
			u, _ := url.Parse(r.base)
			s.dir = strings.TrimPrefix(u.Path, "/")
		}
		for h, fps := range r.keys {
			s.addKey(h, "")
			for _, fp := range fps {
				s.keys[fp] = &openpgp.Entity{} // stands for the key's file
				s.addKey(h, fp)
			}
		}
		checkIndex(t, renderIndex(s), r.base, true)

		// Read through a real tree (which holds none of it).
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, stateFile), data, 0o644); err != nil {
			t.Fatal(err)
		}
		root, err := os.OpenRoot(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer root.Close()
		base := r.base
		if base == "" {
			base = "https://example.com/acis"
		}
		u, err := ParseBaseURL(base)
		if err != nil {
			t.Fatal(err)
		}
		loaded, err := loadSite(context.Background(), root, u)
		if err != nil {
			t.Fatalf("a record that parses, in its own site: %v", err)
		}
		if len(loaded.images) != 0 {
			t.Fatalf("an empty tree serves %v", loaded.images)
		}
		checkIndex(t, renderIndex(loaded), base, false)
	})
}

func checkRecord(t *testing.T, r *record) {
	t.Helper()
	if r.base == "" {
		if len(r.images) != 0 || len(r.keys) != 0 {
			t.Fatalf("no base URL, yet %d images and %d prefixes", len(r.images), len(r.keys))
		}
		return
	}
	u, err := ParseBaseURL(r.base)
	if err != nil || u.String() != r.base {
		t.Fatalf("base URL %q: %v", r.base, err)
	}
	dir := strings.TrimPrefix(u.Path, "/")
	for h, fps := range r.keys {
		if !types.ValidACIdentifier.MatchString(h) || strings.Contains(h, "/") {
			t.Fatalf("prefix %q", h)
		}
		for _, fp := range fps {
			if !fingerprintRE.MatchString(fp) {
				t.Fatalf("fingerprint %q", fp)
			}
		}
	}
	for p, img := range r.images {
		if p != img.Path || !filepath.IsLocal(p) || !literalPath(p) || p != path.Clean(p) {
			t.Fatalf("path %q (%q)", p, img.Path)
		}
		if dir != "" && !strings.HasPrefix(p, dir+"/") {
			t.Fatalf("path %q outside %q", p, dir)
		}
		if !types.ValidACIdentifier.MatchString(img.Name) || r.keys[hostOf(img.Name)] == nil {
			t.Fatalf("name %q", img.Name)
		}
		for _, l := range []string{img.Version, img.OS, img.Arch} {
			if !literal(l) {
				t.Fatalf("label %q", l)
			}
		}
		if rest, ok := strings.CutPrefix(img.URL, r.base+"/"); !ok || !literalPath(rest) {
			t.Fatalf("URL %q", img.URL)
		}
		if !imageIDRE.MatchString(img.ImageID) {
			t.Fatalf("image ID %q", img.ImageID)
		}
	}
}

var (
	attrRE = regexp.MustCompile(`([a-z]+)="([^"]*)"`)
	tagRE  = regexp.MustCompile(`<(/?[!A-Za-z0-9]*)`)
	okTags = map[string]bool{"!DOCTYPE": true, "html": true, "/html": true, "head": true, "/head": true, "meta": true, "title": true, "/title": true,
		"body": true, "/body": true, "h1": true, "/h1": true, "p": true, "/p": true, "code": true, "/code": true, "ul": true, "/ul": true, "li": true, "/li": true, "a": true, "/a": true}
)

// checkIndex: every tag is one renderIndex writes, and every URL in an
// attribute is under base: the discovery template, a key
// BASE/pubkeys/FINGERPRINT.asc, or an image.
func checkIndex(t *testing.T, page []byte, base string, anyKey bool) {
	t.Helper()
	for _, m := range tagRE.FindAllSubmatch(page, -1) {
		if !okTags[string(m[1])] {
			t.Fatalf("index.html has the tag <%s:\n%s", m[1], page)
		}
	}
	for _, m := range attrRE.FindAllSubmatch(page, -1) {
		name, v := string(m[1]), string(m[2])
		switch name {
		case "charset", "name":
			if v != "utf-8" && v != "ac-discovery" && v != "ac-discovery-pubkeys" {
				t.Fatalf("%s=%q", name, v)
			}
		case "content":
			host, u, ok := strings.Cut(v, " ")
			if !ok || !types.ValidACIdentifier.MatchString(host) || strings.Contains(host, "/") {
				t.Fatalf("content=%q", v)
			}
			rest, ok := strings.CutPrefix(u, base+"/")
			if !ok {
				t.Fatalf("content=%q is not under %s", v, base)
			}
			if fp, ok := strings.CutPrefix(rest, "pubkeys/"); ok {
				fp, _ = strings.CutSuffix(fp, ".asc")
				if !fingerprintRE.MatchString(fp) || !anyKey {
					t.Fatalf("content=%q: a key the tree does not hold", v)
				}
			} else if rest != fileTemplate {
				t.Fatalf("content=%q", v)
			}
		case "href":
			if rest, ok := strings.CutPrefix(v, base+"/"); !ok || !literalPath(rest) || !strings.HasSuffix(rest, ".aci") {
				t.Fatalf("href=%q", v)
			}
		default:
			t.Fatalf("index.html has the attribute %s=%q", name, v)
		}
	}
}
