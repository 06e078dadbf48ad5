package aci

import (
	"bytes"
	"strings"
	"testing"

	appcaci "github.com/appc/spec/aci"
)

// ReadManifest reads what rkt reads: in the hidden-member file, the
// manifest of the member compress/gzip reads first, not the one a
// reader trusting N2 lengths would see.
func TestReadManifestReadsWhatRktReads(t *testing.T) {
	good := tarACI(t, "good.example/reviewed")
	evil := tarACI(t, "evil.example/app")
	a, b := members(t, nil), members(t, evil)
	file := append(append(claiming(t, nil, len(a)+len(b)), b...), members(t, good)...)
	im, err := ReadManifest(bytes.NewReader(file), 0)
	if err != nil {
		t.Fatal(err)
	}
	if im.Name != "evil.example/app" {
		t.Errorf("ReadManifest read %s; rkt reads evil.example/app", im.Name)
	}
	want, err := appcaci.ManifestFromImage(bytes.NewReader(file))
	if err != nil || want.Name != im.Name {
		t.Errorf("appc reads %v, %v", want, err)
	}
}

func TestReadManifestBounds(t *testing.T) {
	huge := entry{name: "manifest", body: manifestJSON("example.com/x") + strings.Repeat(" ", MaxManifestSize)}
	for _, tc := range []struct {
		name string
		in   []byte
		max  int64
		err  string
	}{
		{"empty", nil, 0, "the file is empty"},
		{"no manifest", tarOf(t, false, entry{name: "rootfs/"}), 0, "no manifest entry"},
		{"manifest over the cap", tarOf(t, false, huge), 0, "more than the 4194304 an ACI's manifest may be"},
		{"manifest past max size", tarOf(t, false, entry{name: "rootfs/"}, entry{name: "rootfs/big", body: strings.Repeat("x", 1<<20)}, entry{name: "manifest", body: manifestJSON("example.com/x")}), 1 << 19, "larger than the 524288 bytes allowed"},
		{"zstd", []byte{0x28, 0xb5, 0x2f, 0xfd, 0, 0}, 0, "unsupported compression: zstd"},
	} {
		_, err := ReadManifest(bytes.NewReader(tc.in), tc.max)
		if err == nil || !IsInvalid(err) || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: %v; want an InvalidError containing %q", tc.name, err, tc.err)
		}
	}
}

// FuzzReadManifestMatchesAppc: for any bytes, the manifest ReadManifest
// returns is the one appc's aci.ManifestFromImage (rkt's reader) returns,
// or ReadManifest fails.
func FuzzReadManifestMatchesAppc(f *testing.F) {
	for _, s := range memberSeeds(f) {
		f.Add(s)
	}
	evil, good := tarACI(f, "evil.example/app"), tarACI(f, "good.example/reviewed")
	f.Add(evil)
	f.Add(gz(good))
	f.Add(members(f, evil, good))
	f.Add(append(gz(evil), gz(good)...))
	f.Fuzz(func(t *testing.T, in []byte) {
		got, err := ReadManifest(bytes.NewReader(in), 64<<20)
		if err != nil {
			return
		}
		want, err := appcaci.ManifestFromImage(bytes.NewReader(in))
		if err != nil {
			t.Fatalf("we read %s where appc fails: %v", got.Name, err)
		}
		g, _ := got.MarshalJSON()
		w, _ := want.MarshalJSON()
		if !bytes.Equal(g, w) {
			t.Fatalf("we read %s, appc reads %s", g, w)
		}
	})
}
