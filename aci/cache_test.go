package aci_test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"

	"github.com/nix2aci/nix2aci/aci"
	"github.com/nix2aci/nix2aci/nixstore/nixtest"
)

// The cache is untrusted input. An entry whose member was replaced by one
// that inflates to other bytes, with the index's lengths and CRCs of the
// regenerated data kept and the member's own length and CRC updated,
// passes every check a cheaper cache would make; it must still never
// reach an image, and the image ID a build reports is always that of the
// file it wrote.
func TestCacheEntryWithOtherDeflateDataNeverReachesAnImage(t *testing.T) {
	root := nixtest.Build(t, `mk "evil-cache-1.0" "mkdir -p $out/share; seq 1 300000 > $out/share/numbers"`)
	img := image(t, root, false)
	cold, coldRes := write(t, img)
	cache, err := aci.OpenCache(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	write(t, img, aci.WithCache(cache))
	entry := cacheEntries(t, cache)[0]
	raw, err := os.ReadFile(entry)
	if err != nil {
		t.Fatal(err)
	}

	// Take the entry apart: members, JSON index, footer.
	n := int(binary.LittleEndian.Uint64(raw[len(raw)-16:]))
	var idx struct {
		StorePath string `json:"storePath"`
		Chunks    []struct {
			U  int    `json:"u"`
			UC uint32 `json:"uc"`
			C  int    `json:"c"`
			CC uint32 `json:"cc"`
		} `json:"chunks"`
	}
	if err := json.Unmarshal(raw[len(raw)-16-n:len(raw)-16], &idx); err != nil {
		t.Fatal(err)
	}
	first := raw[:idx.Chunks[0].C]
	zr, err := gzip.NewReader(bytes.NewReader(first))
	if err != nil {
		t.Fatal(err)
	}
	zr.Multistream(false)
	data, _ := io.ReadAll(zr)
	// The evil member: same length of data, one byte changed, in our
	// member format with its own length claimed.
	evilData := bytes.Clone(data)
	evilData[len(evilData)-100] ^= 1
	var evil bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&evil, aci.DefaultLevel)
	zw.Header.Extra = []byte{'N', '2', 4, 0, 0, 0, 0, 0}
	zw.Write(evilData)
	zw.Close()
	binary.LittleEndian.PutUint32(evil.Bytes()[16:], uint32(evil.Len()))
	idx.Chunks[0].C, idx.Chunks[0].CC = evil.Len(), crc32.ChecksumIEEE(evil.Bytes())
	newIdx, _ := json.Marshal(idx)
	var forged bytes.Buffer
	forged.Write(evil.Bytes())
	forged.Write(raw[len(first) : len(raw)-16-n])
	forged.Write(newIdx)
	var foot [16]byte
	binary.LittleEndian.PutUint64(foot[:8], uint64(len(newIdx)))
	copy(foot[8:], raw[len(raw)-8:])
	forged.Write(foot[:])
	if err := os.WriteFile(entry, forged.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}

	// write() also checks that the reported ID is the file's.
	got, res := write(t, img, aci.WithCache(cache))
	if !bytes.Equal(got, cold) {
		t.Fatal("the forged cache entry changed the archive")
	}
	if res.ImageID != coldRes.ImageID {
		t.Errorf("image ID %s, cold build %s", res.ImageID, coldRes.ImageID)
	}
	if res.CachedPaths != 0 {
		t.Error("the forged entry counted as a cache hit")
	}
	// The entry was rewritten from this build: the next build hits it.
	if _, res := write(t, img, aci.WithCache(cache)); res.CachedPaths != 1 {
		t.Errorf("after the rewrite: %d cached paths, want 1", res.CachedPaths)
	}
}

// cache gc removes only what is provably a nix2aci cache entry, in a
// directory nix2aci made or adopted; anything else is left alone.
func TestCacheGCRemovesOnlyItsOwnEntries(t *testing.T) {
	// A directory of someone else's files is not a cache.
	other := t.TempDir()
	os.MkdirAll(filepath.Join(other, "ab"), 0o755)
	for _, f := range []string{"photo.frag", "ab/notes.frag", ".tmp-mine"} {
		os.WriteFile(filepath.Join(other, f), []byte("keep me"), 0o644)
	}
	old := time.Now().Add(-2 * time.Hour)
	os.Chtimes(filepath.Join(other, ".tmp-mine"), old, old)
	if _, err := aci.OpenCache(other); err == nil || !strings.Contains(err.Error(), "is not a nix2aci cache") {
		t.Errorf("OpenCache of another directory: %v", err)
	}
	for _, f := range []string{"photo.frag", "ab/notes.frag", ".tmp-mine"} {
		if _, err := os.Stat(filepath.Join(other, f)); err != nil {
			t.Errorf("%s was removed: %v", f, err)
		}
	}

	// A real cache with strays in it: GC to zero keeps the strays.
	img := image(t, nixtest.Hello(t), false)
	cache, err := aci.OpenCache(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	write(t, img, aci.WithCache(cache))
	dir := cache.Dir()
	if b, _ := os.ReadFile(filepath.Join(dir, "CACHEDIR.TAG")); !bytes.HasPrefix(b, []byte("Signature: 8a477f597d28d172789f06886806bc55\n")) {
		t.Errorf("no CACHEDIR.TAG: %q", b)
	}
	entries := cacheEntries(t, cache)
	sub := filepath.Dir(entries[0])
	strays := []string{filepath.Join(dir, "notes.frag"), filepath.Join(sub, "y.frag"), filepath.Join(sub, strings.Repeat("0", 64)+".frag")}
	for _, s := range strays {
		os.WriteFile(s, []byte("not an entry"), 0o644)
	}
	target := filepath.Join(t.TempDir(), "precious")
	os.WriteFile(target, []byte("x"), 0o644)
	link := filepath.Join(sub, filepath.Base(sub)+strings.Repeat("1", 62)+".frag")
	os.Symlink(target, link)
	res, err := cache.GC(0)
	if err != nil || res.Removed != len(entries) {
		t.Fatalf("GC: %+v, %v; want %d entries removed", res, err, len(entries))
	}
	for _, s := range append(strays, link, target) {
		if _, err := os.Lstat(s); err != nil {
			t.Errorf("GC removed %s", s)
		}
	}
}
