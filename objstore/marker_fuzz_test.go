package objstore

import (
	"strings"
	"testing"
)

// FuzzParseMarker: a marker is hostile bytes: parsing never panics, and
// a marker taken names the image and its signature with sane fields.
func FuzzParseMarker(f *testing.F) {
	key := "acis/h/app-v1-linux-amd64.aci"
	f.Add([]byte(`{"nix2aci-marker":1,"imageID":"sha512-` + strings.Repeat("a", 64) + `","aci":{"key":"` + key + `","size":9,"sha256":"` + strings.Repeat("0", 64) + `"},"asc":{"key":"` + key + `.asc","size":13,"sha256":"` + strings.Repeat("1", 64) + `"}}`))
	f.Add([]byte(`{"nix2aci-marker":1,"imageID":"sha512-` + strings.Repeat("a", 64) + `","aci":{"key":"` + key + `","size":9,"sha256":"` + strings.Repeat("0", 64) + `"},"asc":{"key":"` + key + `.asc","size":13,"sha256":"` + strings.Repeat("1", 64) + `"},"depends":[{"key":"acis/h/layer-1-linux-amd64.aci","imageID":"sha512-` + strings.Repeat("b", 64) + `"},{"key":"../x"}]}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"nix2aci-marker":1,"aci":{"key":"../x"}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseMarker(b, key)
		if err != nil {
			return
		}
		if m.ACI.Key != key || m.ASC.Key != key+".asc" || m.ACI.Size <= 0 || m.ASC.Size <= 0 || len(m.ACI.SHA256) != 64 {
			t.Fatalf("taken: %+v", m)
		}
		seen := map[string]bool{key: true}
		for _, d := range m.Depends {
			if CheckKey(d.Key) != nil || seen[d.Key] || !imageIDRE.MatchString(d.ImageID) {
				t.Fatalf("taken with the dependency %+v: %+v", d, m)
			}
			seen[d.Key] = true
		}
		if len(m.Depends) > MaxDepends {
			t.Fatalf("taken with %d dependencies", len(m.Depends))
		}
	})
}
