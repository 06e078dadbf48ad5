package serve

import (
	"path"
	"strings"
	"testing"

	"github.com/appc/spec/schema/types"
)

// FuzzParseFile: whatever path a client asks for, a request parseFile
// accepts names a file inside the image directory (clean, relative, no
// "..") and an image whose name is an AC Identifier and whose packages
// are its components after the first, each a recipe or attribute name
// with nothing Nix or a shell would read as syntax.
func FuzzParseFile(f *testing.F) {
	for _, seed := range []string{
		"127.0.0.1/busybox-v1-linux-amd64.aci",
		"127.0.0.1/busybox/jq-v1-linux-amd64.aci.asc",
		"127.0.0.1/nix/busybox-1.36.1-abc-linux-amd64.aci",
		"127.0.0.1/../x-v-linux-amd64.aci",
		"127.0.0.1//x-v-linux-amd64.aci",
		"a/B-v-linux-amd64.aci",
		"a/x\"${y}-v-linux-amd64.aci",
	} {
		f.Add(seed)
	}
	s := &Server{o: Options{Prefix: "127.0.0.1"}}
	f.Fuzz(func(t *testing.T, rel string) {
		q, err := s.parseFile(rel)
		if err != nil {
			return
		}
		if q.rel != path.Clean(q.rel) || strings.HasPrefix(q.rel, "/") || strings.Contains(q.rel, "..") {
			t.Fatalf("%q: the file %q is not a clean path inside the directory", rel, q.rel)
		}
		if _, err := types.NewACIdentifier(q.name); err != nil {
			t.Fatalf("%q: the name %q is not an AC Identifier: %v", rel, q.name, err)
		}
		if len(q.packages) == 0 || strings.Join(q.packages, "/") != q.name[strings.Index(q.name, "/")+1:] {
			t.Fatalf("%q: packages %q of the name %q", rel, q.packages, q.name)
		}
		for _, p := range q.packages {
			if strings.ContainsAny(p, "\"\\$/{}'` \n") || p == "" {
				t.Fatalf("%q: the package name %q", rel, p)
			}
		}
		if strings.Contains(q.version, "-") || strings.Contains(q.os, "-") || strings.Contains(q.arch, "-") {
			t.Fatalf("%q: version %q os %q arch %q", rel, q.version, q.os, q.arch)
		}
	})
}
