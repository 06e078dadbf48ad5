package aci

import (
	"archive/tar"
	"bytes"
	stdgzip "compress/gzip"
	"fmt"
	"runtime"
	"strings"
	"testing"
)

// entry is one tar entry of a hand-made archive.
type entry struct {
	name, body, link string
	typ              byte
}

func manifestJSON(name string) string {
	return fmt.Sprintf(`{"acKind":"ImageManifest","acVersion":"0.8.11","name":%q,"labels":[{"name":"os","value":"linux"},{"name":"arch","value":"amd64"}]}`, name)
}

// tarOf writes entries as an uncompressed tar stream, with its
// end-of-archive marker unless noEnd.
func tarOf(t testing.TB, noEnd bool, ents ...entry) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
			if strings.HasSuffix(e.name, "/") {
				typ = tar.TypeDir
			}
		}
		h := &tar.Header{Name: e.name, Typeflag: typ, Mode: 0o644, Size: int64(len(e.body)), Linkname: e.link, Format: tar.FormatPAX}
		if typ != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if typ == tar.TypeReg {
			tw.Write([]byte(e.body))
		}
	}
	if noEnd {
		tw.Flush()
	} else {
		tw.Close()
	}
	return buf.Bytes()
}

// tarACI is a small valid uncompressed ACI named name.
func tarACI(t testing.TB, name string) []byte {
	return tarOf(t, false, entry{name: "manifest", body: manifestJSON(name)}, entry{name: "rootfs/"}, entry{name: "rootfs/data", body: name})
}

func gz(b []byte) []byte {
	var out bytes.Buffer
	zw := stdgzip.NewWriter(&out)
	zw.Write(b)
	zw.Close()
	return out.Bytes()
}

// Every hostile archive gets an InvalidError that says what is wrong.
func TestInspectRejectsHostileArchives(t *testing.T) {
	m := entry{name: "manifest", body: manifestJSON("example.com/x")}
	root := entry{name: "rootfs/"}
	valid := tarACI(t, "example.com/x")
	for _, tc := range []struct {
		name string
		in   []byte
		err  string
	}{
		{"dot-dot name", tarOf(t, false, m, root, entry{name: "rootfs/../../etc/passwd", body: "x"}), `"rootfs/../../etc/passwd" is not a plain relative name`},
		{"absolute name", tarOf(t, false, m, root, entry{name: "/etc/passwd", body: "x"}), `"/etc/passwd" has an absolute or empty name`},
		{"written through a symlink", tarOf(t, false, m, root, entry{name: "rootfs/etc", typ: tar.TypeSymlink, link: "/etc"}, entry{name: "rootfs/etc/passwd", body: "x"}), `is written through "rootfs/etc", which is not a directory`},
		{"hard link to outside", tarOf(t, false, m, root, entry{name: "rootfs/shadow", typ: tar.TypeLink, link: "/etc/shadow"}), `points to "/etc/shadow", which is not a file earlier in the image`},
		{"hard link escaping", tarOf(t, false, m, root, entry{name: "rootfs/x", typ: tar.TypeLink, link: "rootfs/../../x"}), "which is not a file earlier"},
		{"two manifests", tarOf(t, false, m, root, entry{name: "manifest", body: manifestJSON("evil.example/app")}), "a second manifest entry"},
		{"dot-slash manifest", tarOf(t, false, entry{name: "./manifest", body: manifestJSON("x")}, root), "is not a plain relative name"},
		{"manifest a symlink", tarOf(t, false, entry{name: "manifest", typ: tar.TypeSymlink, link: "rootfs/m"}, root), `not a regular file named "manifest"`},
		{"manifest not first", tarOf(t, false, root, entry{name: "rootfs/a", body: "a"}, m), ""},
		{"entry outside rootfs", tarOf(t, false, m, root, entry{name: "etc/passwd", body: "x"}), "is outside rootfs/"},
		{"duplicate entry", tarOf(t, false, m, root, entry{name: "rootfs/a", body: "1"}, entry{name: "rootfs/a", body: "2"}), `"rootfs/a" appears twice`},
		{"unknown entry type", tarOf(t, false, m, root, entry{name: "rootfs/s", typ: 'Z'}), `has type 'Z', which an image cannot hold`},
		{"sparse entry", tarOf(t, false, m, root, entry{name: "rootfs/s", typ: tar.TypeGNUSparse}), ""},
		{"huge manifest", tarOf(t, false, entry{name: "manifest", body: strings.Repeat(" ", MaxManifestSize+1)}, root), "more than the 4194304 an ACI's manifest may be"},
		{"manifest nested deep", tarOf(t, false, entry{name: "manifest", body: strings.Repeat("[", 100000)}, root), "manifest"},
		{"truncated at an entry boundary", tarOf(t, true, m, root, entry{name: "rootfs/a", body: "a"}), "truncated: the tar stream has no end-of-archive marker"},
		{"truncated, last file all zeros", tarOf(t, true, m, root, entry{name: "rootfs/z", body: string(make([]byte, 2048))}), "truncated"},
		{"one zero block only", append(tarOf(t, true, m, root), make([]byte, 512)...), "truncated"},
		{"empty file", nil, "the file is empty"},
		{"zstd", []byte{0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0}, "unsupported compression: zstd"},
		{"garbage", []byte("this is not an archive at all, just text that goes on"), ""},
		{"gzip with garbage after", append(gz(valid), "junk after the archive"...), "gzip: invalid header"},
		{"truncated gzip", gz(valid)[:len(gz(valid))-20], ""},
	} {
		info, err := Inspect(bytes.NewReader(tc.in))
		if tc.name == "manifest not first" {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
			continue
		}
		if !IsInvalid(err) || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: got %v (info %v), want an InvalidError containing %q", tc.name, err, info != nil, tc.err)
		}
	}
	for _, in := range [][]byte{valid, gz(valid), append(bytes.Clone(valid), make([]byte, 8192)...)} {
		if _, err := Inspect(bytes.NewReader(in)); err != nil {
			t.Errorf("a valid archive: %v", err)
		}
	}
}

// A 256 MiB manifest of whitespace is refused from its header, without
// being read.
func TestHugeManifestIsNotRead(t *testing.T) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "manifest", Typeflag: tar.TypeReg, Mode: 0o644, Size: 256 << 20})
	// Only the header: a reader that reads the body first fails on EOF
	// instead, after allocating; one that checks the header does not.
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err := Inspect(bytes.NewReader(buf.Bytes()))
	runtime.ReadMemStats(&after)
	if err == nil || !strings.Contains(err.Error(), "more than the 4194304") {
		t.Errorf("got %v", err)
	}
	if a := after.TotalAlloc - before.TotalAlloc; a > 32<<20 {
		t.Errorf("allocated %d MiB", a>>20)
	}
}

func TestInspectLimit(t *testing.T) {
	valid := gz(tarACI(t, "example.com/x"))
	if _, err := InspectLimited(bytes.NewReader(valid), 1024); err == nil || !strings.Contains(err.Error(), "larger than the 1024 bytes allowed") {
		t.Errorf("got %v", err)
	}
	if _, err := InspectLimited(bytes.NewReader(valid), 1<<20); err != nil {
		t.Errorf("got %v", err)
	}
}
