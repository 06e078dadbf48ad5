package pipeline

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/nix2aci/nix2aci/nixstore/nixtest"
	"github.com/nix2aci/nix2aci/oci"
)

// blobStoreBuilds builds hello, layered, as OCI layouts, reusing the
// layers of the blob store blobs as nix2aci serve does: each build's
// blobs the store lacks are moved there, the build's output removed, and
// its layers recorded. It returns the build function, which says what
// was reused and held.
func blobStoreBuilds(t *testing.T, cacheKey string) (blobs string, build func(reuse bool) (*Result, map[string]bool, []string)) {
	t.Helper()
	hello := nixtest.Hello(t)
	dir := t.TempDir()
	blobs = filepath.Join(dir, "blobs")
	if err := os.Mkdir(blobs, 0o755); err != nil {
		t.Fatal(err)
	}
	n := 0
	build = func(reuse bool) (*Result, map[string]bool, []string) {
		t.Helper()
		n++
		out := filepath.Join(dir, "out", strings.Repeat("x", n))
		var mu sync.Mutex
		var held []string
		r := Request{Target: hello, Kind: Layered, Format: oci.LayoutFormat, OutDir: out, Name: "example.com/hello",
			NoExecCheck: true, NoGCRoots: true, CacheDir: filepath.Join(dir, "cache"), CacheKey: cacheKey}
		if reuse {
			r.ReuseBlobs = &BlobReuse{Dir: blobs, Hold: func(d string) {
				mu.Lock()
				held = append(held, d)
				mu.Unlock()
			}}
		}
		res, err := Build(context.Background(), r)
		if err != nil {
			t.Fatal(err)
		}
		reused := map[string]bool{}
		for _, l := range res.Layers {
			reused[l.Digest] = l.Reused
			if l.Reused {
				// Linked, not written: the store's very file.
				a, _ := os.Stat(filepath.Join(res.OCI, "blobs", "sha256", strings.TrimPrefix(l.Digest, "sha256:")))
				b, _ := os.Stat(filepath.Join(blobs, strings.TrimPrefix(l.Digest, "sha256:")))
				if a == nil || b == nil || !os.SameFile(a, b) {
					t.Errorf("the layer %s reused is not a link to the blob store's file", l.Name)
				}
			}
		}
		if !reuse {
			return res, reused, held
		}
		src := filepath.Join(res.OCI, "blobs", "sha256")
		ents, err := os.ReadDir(src)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			if _, err := os.Lstat(filepath.Join(blobs, e.Name())); err == nil {
				continue
			}
			if err := os.Rename(filepath.Join(src, e.Name()), filepath.Join(blobs, e.Name())); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.RemoveAll(out); err != nil {
			t.Fatal(err)
		}
		if err := res.RecordBlobs(); err != nil {
			t.Fatal(err)
		}
		return res, reused, held
	}
	return blobs, build
}

// TestOCIBuildReusesProvenBlobs: an OCI build naming a blob store links
// the layers its index proves the store holds instead of writing them,
// unread, holding each first, and its manifest is the one a build
// reusing nothing writes; a blob whose ctime changed (another build
// linked it) is read and reused. A forged or edited entry, another key's,
// entries swapped, or a blob file swapped for other bytes or edited in
// place is not reused: the layer is written again, and the manifest is
// still the same.
func TestOCIBuildReusesProvenBlobs(t *testing.T) {
	blobs, build := blobStoreBuilds(t, filepath.Join(t.TempDir(), "key"))
	cold, _, _ := build(false)
	if len(cold.Layers) < 2 {
		t.Fatalf("hello has %d layers, the test needs two", len(cold.Layers))
	}
	count := func(reused map[string]bool) int {
		n := 0
		for _, r := range reused {
			if r {
				n++
			}
		}
		return n
	}
	check := func(what string, wantReused int, notReused ...string) {
		t.Helper()
		res, reused, held := build(true)
		if res.Digest != cold.Digest || res.ImageID != cold.ImageID {
			t.Errorf("%s: the manifest %s (config %s), a build reusing nothing wrote %s (%s)", what, res.Digest, res.ImageID, cold.Digest, cold.ImageID)
		}
		for i, l := range res.Layers {
			if c := cold.Layers[i]; l.Digest != c.Digest || l.ImageID != c.ImageID || l.Version != c.Version || l.Size != c.Size {
				t.Errorf("%s: the layer %s is %+v, a build reusing nothing made %+v", what, l.Name, l, c)
			}
		}
		if n := count(reused); n != wantReused {
			t.Errorf("%s: %d layers reused, want %d", what, n, wantReused)
		}
		for _, d := range notReused {
			if reused[d] {
				t.Errorf("%s: the layer %s was reused", what, d)
			}
		}
		for d, r := range reused {
			if r && !strings.Contains(strings.Join(held, " "), d) {
				t.Errorf("%s: the blob %s was reused without being held first", what, d)
			}
		}
	}
	check("an empty blob store", 0)
	all := len(cold.Layers)
	check("the blobs recorded", all)
	read := blobsRead.Load()
	check("the blobs recorded again (the links removed)", all)
	if n := blobsRead.Load() - read; n != 0 {
		t.Errorf("%d blobs were read to be reused, want none", n)
	}
	// Another build's link, made and removed meanwhile, changes a blob's
	// ctime: it is read, and reused.
	first := filepath.Join(blobs, strings.TrimPrefix(cold.Layers[0].Digest, "sha256:"))
	if err := os.Link(first, first+".link"); err != nil {
		t.Fatal(err)
	}
	os.Remove(first + ".link")
	check("a blob linked by another build", all)
	if n := blobsRead.Load() - read; n != 1 {
		t.Errorf("%d blobs were read, want the one linked by another build", n)
	}

	index := filepath.Join(blobs, blobIndexFile)
	victim := cold.Layers[0].Digest
	edit := func(f func(e map[string]any)) {
		t.Helper()
		data, err := os.ReadFile(index)
		if err != nil {
			t.Fatal(err)
		}
		var doc map[string]map[string]map[string]any
		dec := json.NewDecoder(strings.NewReader(string(data)))
		dec.UseNumber() // stat data as read: nanoseconds do not fit a float
		if err := dec.Decode(&doc); err != nil {
			t.Fatal(err)
		}
		found := false
		for _, e := range doc["layers"] {
			if e["digest"] == victim {
				f(e)
				found = true
			}
		}
		if !found {
			t.Fatalf("the index has no entry of %s:\n%s", victim, data)
		}
		data, _ = json.Marshal(doc)
		if err := os.WriteFile(index, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// An edited entry: its tag no longer covers it. The build after it
	// records the layer again.
	other := cold.Layers[1]
	edit(func(e map[string]any) { e["diffID"] = other.ImageID })
	check("an edited DiffID", all-1, victim)
	check("the edited entry recorded again", all)
	edit(func(e map[string]any) {
		n, _ := e["size"].(json.Number).Int64()
		e["size"] = n + 1
		e["file"].(map[string]any)["size"] = n + 1
	})
	check("an edited size", all-1, victim)
	// Two entries swapped: each tag covers its layer's key.
	{
		var doc map[string]map[string]json.RawMessage
		json.Unmarshal([]byte(readFile(t, index)), &doc)
		a, b := keyOf(t, index, victim), keyOf(t, index, other.Digest)
		doc["layers"][a], doc["layers"][b] = doc["layers"][b], doc["layers"][a]
		data, _ := json.Marshal(doc)
		os.WriteFile(index, data, 0o644)
	}
	check("two entries swapped", all-2, victim, other.Digest)
	check("the swapped entries recorded again", all)
	// Another key's tag.
	otherKey := keyedCache(t)
	edit(func(e map[string]any) {
		var be blobEntry
		data, _ := json.Marshal(e)
		json.Unmarshal(data, &be)
		be.Tag = ""
		tag, _ := otherKey.TagRecord(blobTagKind, be.message(keyOf(t, index, victim)))
		e["tag"] = hex.EncodeToString(tag)
	})
	check("another key's tag", all-1, victim)

	// The blob file swapped for other bytes of its size: not reused, and
	// not recorded again.
	file := filepath.Join(blobs, strings.TrimPrefix(victim, "sha256:"))
	fi, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file+".new", []byte(strings.Repeat("x", int(fi.Size()))), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(file+".new", file); err != nil {
		t.Fatal(err)
	}
	check("a swapped blob", all-1, victim)
	check("a swapped blob, the build after", all-1, victim)
	if strings.Contains(readFile(t, index), victim) {
		t.Error("the swapped blob is still in the index")
	}
	// Edited in place, the same inode: its ctime is newer.
	victim = cold.Layers[1].Digest
	file = filepath.Join(blobs, strings.TrimPrefix(victim, "sha256:"))
	f, err := os.OpenFile(file, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte{0}, 0)
	f.Close()
	old, _ := os.Stat(file)
	os.Chtimes(file, old.ModTime(), old.ModTime())
	check("a blob edited in place", all-2, victim)
}

// Without a cache key nothing is reused, and nothing recorded.
func TestOCIBuildReusesNothingWithoutKey(t *testing.T) {
	blobs, build := blobStoreBuilds(t, "")
	for range 2 {
		if _, reused, held := build(true); len(held) > 0 || len(reused) == 0 {
			t.Fatalf("without a key: %d blobs held, reused %v", len(held), reused)
		} else {
			for d, r := range reused {
				if r {
					t.Errorf("without a key, the layer %s was reused", d)
				}
			}
		}
	}
	if _, err := os.Stat(filepath.Join(blobs, blobIndexFile)); err == nil {
		t.Error("an index was written without a key to tag it")
	}
}

// The blob index is read as hostile input: entries keyed by anything but
// 64 hex digits, or naming a digest that is not SHA-256 (a path, upper
// case), or a size or tag out of form, are left out; damaged JSON, an
// unknown field, trailing data, a huge file or a FIFO make it empty.
func TestBlobIndexIsUntrusted(t *testing.T) {
	dir := t.TempDir()
	write := func(s string) {
		os.Remove(filepath.Join(dir, blobIndexFile))
		if err := os.WriteFile(filepath.Join(dir, blobIndexFile), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	h := strings.Repeat("ab", 32)
	d := "sha256:" + h
	entry := func(digest string, size int) string {
		return `{"digest":"` + digest + `","diffID":"` + d + `","size":` + strconv.Itoa(size) + `,"file":{"size":` + strconv.Itoa(size) + `},"tag":"` + h + `"}`
	}
	write(`{"layers":{"` + h + `":` + entry(d, 5) +
		`,"../x":` + entry(d, 5) +
		`,"` + strings.ToUpper(h) + `":` + entry(d, 5) +
		`,"` + strings.Repeat("cd", 32) + `":` + entry("sha256:../../etc/passwd", 5) +
		`,"` + strings.Repeat("ef", 32) + `":` + entry("sha512:"+h, 5) +
		`,"` + strings.Repeat("01", 32) + `":` + entry("sha256:"+strings.ToUpper(h), 5) +
		`,"` + strings.Repeat("23", 32) + `":` + entry(d, 0) +
		`,"` + strings.Repeat("45", 32) + `":` + entry(d, -1) + `}}`)
	idx := readBlobIndex(dir)
	if len(idx.Layers) != 1 || idx.Layers[h].Digest != d {
		t.Errorf("index kept %v", idx.Layers)
	}
	for _, s := range []string{
		"{",
		`{"layers":{"` + h + `":` + entry(d, 5) + `}} {}`,
		`{"layers":{"` + h + `":` + entry(d, 5) + `},"more":1}`,
		`{"layers":{"` + h + `":` + strings.TrimSuffix(entry(d, 5), "}") + `,"path":"/etc/passwd"}}}`,
		strings.Repeat(" ", maxBlobIndexSize+1),
	} {
		write(s)
		if len(readBlobIndex(dir).Layers) != 0 {
			t.Errorf("an index was read from %.80q", s)
		}
	}
	os.Remove(filepath.Join(dir, blobIndexFile))
	if err := syscall.Mkfifo(filepath.Join(dir, blobIndexFile), 0o644); err != nil {
		t.Fatal(err)
	}
	if len(readBlobIndex(dir).Layers) != 0 { // and it returned: no blocking
		t.Error("a FIFO index was read")
	}
}

// FuzzBlobIndex: whatever the index holds, it yields only entries keyed
// by 64 hex digits naming SHA-256 digests, and none is proven unless this
// key tagged it.
func FuzzBlobIndex(f *testing.F) {
	dir := f.TempDir()
	cache := keyedCache(f)
	os.WriteFile(filepath.Join(dir, strings.Repeat("ab", 32)), []byte("layer"), 0o644)
	st, _ := statOf(filepath.Join(dir, strings.Repeat("ab", 32)))
	e := blobEntry{Digest: "sha256:" + strings.Repeat("ab", 32), DiffID: "sha256:" + strings.Repeat("cd", 32), Size: 5, File: st}
	tag, _ := keyedCache(f).TagRecord(blobTagKind, e.message(strings.Repeat("0", 64))) // another key's
	e.Tag = hex.EncodeToString(tag)
	seed, _ := json.Marshal(blobIndex{Layers: map[string]blobEntry{strings.Repeat("0", 64): e}})
	f.Add(seed)
	f.Add([]byte(`{"layers":null}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(filepath.Join(dir, blobIndexFile), data, 0o644); err != nil {
			t.Fatal(err)
		}
		idx := readBlobIndex(dir)
		for k, e := range idx.Layers {
			if !isHex64(k) || !isSHA256Digest(e.Digest) || filepath.Base(e.name()) != e.name() || !isHex64(e.name()) {
				t.Fatalf("index kept %q: %+v", k, e)
			}
			if _, ok := idx.proven(dir, k, cache); ok {
				t.Fatal("an entry this key did not tag was believed")
			}
		}
	})
}

func keyOf(t *testing.T, index, digest string) string {
	t.Helper()
	var doc blobIndex
	json.Unmarshal([]byte(readFile(t, index)), &doc)
	for k, e := range doc.Layers {
		if e.Digest == digest {
			return k
		}
	}
	t.Fatalf("no entry of %s", digest)
	return ""
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}
