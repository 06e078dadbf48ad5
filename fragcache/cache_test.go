package fragcache_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"

	"github.com/nix2aci/nix2aci/aci"
	"github.com/nix2aci/nix2aci/aci/acitest"
	"github.com/nix2aci/nix2aci/fragcache"
	"github.com/nix2aci/nix2aci/nixstore/nixtest"
)

// The cache is untrusted input. An entry whose member was replaced by one
// that inflates to other bytes, with the index's lengths and CRCs of the
// regenerated data kept and the member's own length and CRC updated,
// passes every check a cheaper cache would make; it must still never
// reach an image, and the image ID a build reports is always that of the
// file it wrote. The forger keeps the member's tag, which no longer
// verifies.
func TestCacheEntryWithOtherDeflateDataNeverReachesAnImage(t *testing.T) {
	root := nixtest.Build(t, `mk "evil-cache-1.0" "mkdir -p $out/share; seq 1 300000 > $out/share/numbers"`)
	img := image(t, root, false)
	cold, coldRes := write(t, img)
	forgeFirstMember(t, img, openCache(t, true), cold, coldRes)
}

// image and write build and write images as aci's tests do.
var (
	image = acitest.Image
	write = acitest.Write
)

// openCache opens a new cache, with a key of its own when withKey.
func openCache(t *testing.T, withKey bool) *fragcache.Cache {
	t.Helper()
	cache, err := fragcache.OpenCache(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if withKey {
		if _, err := cache.LoadKey(filepath.Join(t.TempDir(), "key")); err != nil {
			t.Fatal(err)
		}
	}
	return cache
}

// entryFixture is an image of one store path, written cold, and its
// entry in a new cache with a key, taken apart.
type entryFixture struct {
	img     aci.Image
	cold    []byte
	coldRes *aci.Result
	cache   *fragcache.Cache
	entry   string
	members []byte
	idx     entryIndex
}

// keyedEntry builds the Nix expression expr and makes its entryFixture.
func keyedEntry(t *testing.T, expr string) entryFixture {
	t.Helper()
	fx := entryFixture{img: image(t, nixtest.Build(t, expr), false), cache: openCache(t, true)}
	fx.cold, fx.coldRes = write(t, fx.img)
	write(t, fx.img, aci.WithCache(fx.cache))
	fx.entry = cacheEntries(t, fx.cache)[0]
	raw, _ := os.ReadFile(fx.entry)
	fx.members, fx.idx = splitEntry(t, raw)
	return fx
}

// entryIndex is a cache entry's index, as the cache writes it.
type entryIndex struct {
	StorePath string `json:"storePath"`
	Chunks    []struct {
		U  int    `json:"u"`
		UC uint32 `json:"uc"`
		C  int    `json:"c"`
		CC uint32 `json:"cc"`
		T  string `json:"t,omitempty"`
	} `json:"chunks"`
}

// splitEntry takes an entry apart: its members' bytes and its index.
func splitEntry(t *testing.T, raw []byte) ([]byte, entryIndex) {
	t.Helper()
	n := int(binary.LittleEndian.Uint64(raw[len(raw)-16:]))
	var idx entryIndex
	if err := json.Unmarshal(raw[len(raw)-16-n:len(raw)-16], &idx); err != nil {
		t.Fatal(err)
	}
	return raw[:len(raw)-16-n], idx
}

// joinEntry puts an entry together again.
func joinEntry(members []byte, idx entryIndex) []byte {
	raw, _ := json.Marshal(idx)
	out := append(bytes.Clone(members), raw...)
	var foot [16]byte
	binary.LittleEndian.PutUint64(foot[:8], uint64(len(raw)))
	copy(foot[8:], "N2ACIFR1")
	return append(out, foot[:]...)
}

func forgeFirstMember(t *testing.T, img aci.Image, cache *fragcache.Cache, cold []byte, coldRes *aci.Result) {
	write(t, img, aci.WithCache(cache))
	entry := cacheEntries(t, cache)[0]
	raw, err := os.ReadFile(entry)
	if err != nil {
		t.Fatal(err)
	}

	members, idx := splitEntry(t, raw)
	first := members[:idx.Chunks[0].C]
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
	forged := joinEntry(append(bytes.Clone(evil.Bytes()), members[len(first):]...), idx)
	if err := os.WriteFile(entry, forged, 0o644); err != nil {
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
	// The entry was rewritten from this build: the next build hits it,
	// every tag verifying.
	if got, res := write(t, img, aci.WithCache(cache)); res.CachedPaths != 1 || !bytes.Equal(got, cold) {
		t.Errorf("after the rewrite: %d cached paths, identical %v; want a hit with the cold bytes", res.CachedPaths, bytes.Equal(got, cold))
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
	if _, err := fragcache.OpenCache(other); err == nil || !strings.Contains(err.Error(), "is not a nix2aci cache") {
		t.Errorf("OpenCache of another directory: %v", err)
	}
	for _, f := range []string{"photo.frag", "ab/notes.frag", ".tmp-mine"} {
		if _, err := os.Stat(filepath.Join(other, f)); err != nil {
			t.Errorf("%s was removed: %v", f, err)
		}
	}

	// A real cache with strays in it: GC to zero keeps the strays.
	img := image(t, nixtest.Hello(t), false)
	cache := openCache(t, true)
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

// With a key, a warm build takes its own entries by their tags. A member
// without a tag that verifies is compressed afresh and the entry
// rewritten with this build's tags: an entry without tags, or with
// another key's (the last build's key wins). Without a key the cache is
// neither read nor written. Every build's archive is the cold one, byte
// for byte.
func TestCacheTagsAreTheOnlyProof(t *testing.T) {
	root := nixtest.Build(t, `mk "tagged-1.0" "mkdir -p $out/share; seq 1 400000 > $out/share/numbers; seq 5 500000 > $out/share/more"`)
	img := image(t, root, false)
	cold, _ := write(t, img)
	build := func(cache *fragcache.Cache) (hits int) {
		t.Helper()
		got, res := write(t, img, aci.WithCache(cache))
		if !bytes.Equal(got, cold) {
			t.Fatal("a cached build differs from the cold one")
		}
		return res.CachedPaths
	}
	withKey := func(dir string) *fragcache.Cache {
		t.Helper()
		c, err := fragcache.OpenCache(dir)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.LoadKey(filepath.Join(t.TempDir(), "key")); err != nil {
			t.Fatal(err)
		}
		return c
	}

	keyed := openCache(t, true)
	build(keyed)
	if hits := build(keyed); hits != 1 {
		t.Errorf("warm build with a key: %d hits, want 1", hits)
	}
	entry := cacheEntries(t, keyed)[0]
	good, _ := os.ReadFile(entry)

	// Without a key: nothing written, nothing taken, nothing rewritten.
	plain := openCache(t, false)
	build(plain)
	if files, _ := filepath.Glob(filepath.Join(plain.Dir(), "*", "*.frag")); len(files) != 0 {
		t.Errorf("a build without a key wrote %d entries", len(files))
	}
	keyless, _ := fragcache.OpenCache(keyed.Dir())
	if hits := build(keyless); hits != 0 {
		t.Errorf("a build without a key took %d cached paths", hits)
	}
	if now, _ := os.ReadFile(entry); !bytes.Equal(now, good) {
		t.Error("a build without a key rewrote an entry")
	}

	// Tags stripped: compressed afresh, rewritten with tags.
	members, idx := splitEntry(t, good)
	for i := range idx.Chunks {
		idx.Chunks[i].T = ""
	}
	os.WriteFile(entry, joinEntry(members, idx), 0o644)
	if hits := build(keyed); hits != 0 {
		t.Errorf("an untagged entry: %d hits, want 0", hits)
	}
	if now, _ := os.ReadFile(entry); !bytes.Equal(now, good) {
		t.Error("the untagged entry was not rewritten with tags")
	}

	// Another key: its tags do not verify; the entry becomes this key's.
	other := withKey(keyed.Dir())
	if hits := build(other); hits != 0 {
		t.Errorf("another key's entry: %d hits, want 0", hits)
	}
	if hits := build(other); hits != 1 {
		t.Errorf("the entry rewritten under the other key: %d hits, want 1", hits)
	}
	if hits := build(keyed); hits != 0 {
		t.Errorf("the first key after the other: %d hits, want 0", hits)
	}
}

// A tag binds its member to its place: members swapped between chunks,
// with their lengths, CRCs and tags, are tags that do not verify, and
// inflation finds the swap out.
func TestCacheTagsBindTheirChunk(t *testing.T) {
	fx := keyedEntry(t, `mk "swapped-1.0" "mkdir -p $out/share; seq 1 600000 > $out/share/numbers"`)
	img, cold, cache, entry, members, idx := fx.img, fx.cold, fx.cache, fx.entry, fx.members, fx.idx
	if len(idx.Chunks) < 2 {
		t.Fatalf("want an entry of 2 chunks or more, have %d", len(idx.Chunks))
	}
	a, b := idx.Chunks[0], idx.Chunks[1]
	ma, mb := members[:a.C], members[a.C:a.C+b.C]
	var swapped []byte
	swapped = append(swapped, mb...)
	swapped = append(swapped, ma...)
	swapped = append(swapped, members[a.C+b.C:]...)
	// The attacker keeps what the regenerated chunks must match (u, uc)
	// and moves the rest.
	idx.Chunks[0].C, idx.Chunks[0].CC, idx.Chunks[0].T = b.C, b.CC, b.T
	idx.Chunks[1].C, idx.Chunks[1].CC, idx.Chunks[1].T = a.C, a.CC, a.T
	if err := os.WriteFile(entry, joinEntry(swapped, idx), 0o644); err != nil {
		t.Fatal(err)
	}
	got, res := write(t, img, aci.WithCache(cache))
	if !bytes.Equal(got, cold) || res.CachedPaths != 0 {
		t.Fatalf("swapped members: archive identical %v, %d hits", bytes.Equal(got, cold), res.CachedPaths)
	}
}

// The key must stay out of reach of whoever can write the cache: it is
// made private, never read from inside the cache, nor when others can
// read it, nor when it is no key; a FIFO is refused at once.
func TestCacheKeyFile(t *testing.T) {
	cache, _ := fragcache.OpenCache(t.TempDir())
	dir := filepath.Join(t.TempDir(), "config", "nix2aci")
	file := filepath.Join(dir, "cache-key")
	created, err := cache.LoadKey(file)
	if err != nil || !created {
		t.Fatalf("a new key: created %v, %v", created, err)
	}
	fi, _ := os.Stat(file)
	di, _ := os.Stat(dir)
	if fi.Mode().Perm() != 0o600 || di.Mode().Perm() != 0o700 || fi.Size() != 65 {
		t.Errorf("key %v (%d bytes) in directory %v; want 0600, 65 bytes, 0700", fi.Mode(), fi.Size(), di.Mode())
	}
	first, _ := os.ReadFile(file)
	if created, err := cache.LoadKey(file); err != nil || created {
		t.Fatalf("the key again: created %v, %v", created, err)
	}
	if again, _ := os.ReadFile(file); !bytes.Equal(first, again) {
		t.Error("loading the key changed it")
	}

	refuse := func(name, path, want string) {
		t.Helper()
		_, err := cache.LoadKey(path)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want an error saying %q", name, err, want)
		}
	}
	refuse("inside the cache", filepath.Join(cache.Dir(), "key"), "inside the cache directory")
	// Through symlinks: the key file itself, or a directory on its way
	// whose rest does not exist yet.
	links := t.TempDir()
	os.WriteFile(filepath.Join(cache.Dir(), "planted"), first, 0o600)
	os.Symlink(filepath.Join(cache.Dir(), "planted"), filepath.Join(links, "key"))
	refuse("a symlink into the cache", filepath.Join(links, "key"), "inside the cache directory")
	os.Symlink(cache.Dir(), filepath.Join(links, "dir"))
	refuse("a new key under a symlink to the cache", filepath.Join(links, "dir", "sub", "key"), "inside the cache directory")
	if _, err := os.Stat(filepath.Join(cache.Dir(), "sub")); err == nil {
		t.Error("a key directory was made inside the cache")
	}
	if _, err := os.Stat(filepath.Join(cache.Dir(), "key")); err == nil {
		t.Error("a key was made inside the cache")
	}
	os.Chmod(file, 0o640)
	refuse("group-readable", file, "chmod 600")
	os.Chmod(file, 0o600)
	bad := filepath.Join(t.TempDir(), "bad")
	os.WriteFile(bad, []byte("not a key\n"), 0o600)
	refuse("garbage", bad, "hex digits")
	os.WriteFile(bad, append(bytes.Clone(first), first...), 0o600)
	refuse("too long", bad, "hex digits")
	// A key given by value: exactly CacheKeySize bytes, parsed from its
	// hex digits without ever quoting them.
	if err := cache.UseKey([]byte("short")); err == nil {
		t.Error("UseKey took a 5-byte key")
	}
	if _, err := fragcache.ParseCacheKey("hunter2-hunter2"); err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("ParseCacheKey of no key: %v", err)
	}
	if key, err := fragcache.ParseCacheKey(string(first)); err != nil || len(key) != fragcache.CacheKeySize || cache.UseKey(key) != nil {
		t.Errorf("ParseCacheKey of a key file's contents: %v", err)
	}
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := cache.LoadKey(fifo); done <- err }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("FIFO: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("LoadKey blocks on a FIFO")
	}
}

// Only gzip builds use the cache: an xz build neither fills it nor
// rewrites it on every run.
func TestCacheServesGzipOnly(t *testing.T) {
	img := image(t, nixtest.Hello(t), false)
	cache := openCache(t, true)
	for i := 0; i < 2; i++ {
		write(t, img, aci.WithCache(cache), aci.WithCompression(aci.Xz, 0))
	}
	if files, _ := filepath.Glob(filepath.Join(cache.Dir(), "*", "*.frag")); len(files) != 0 {
		t.Errorf("xz builds wrote %d cache entries", len(files))
	}
}

// A rewritten entry copies only the members this build took by their
// tags, as it took them. The attacker owns an untagged entry whose first
// member is a genuine re-encoding (stored blocks) of the chunk, and keeps
// flipping 8 of its bytes to others that leave every CRC-32 and length as
// they were, while a build under a key rewrites the entry. What the
// rewrite tags must be what this build compressed, or the next build
// would take the attacker's member on its tag alone.
func TestCacheRewriteNeverTagsWhatItDidNotProve(t *testing.T) {
	fx := keyedEntry(t, `mk "launder-1.0" "mkdir -p $out/share; seq 1 400000 > $out/share/numbers"`)
	img, cold, coldRes, cache, entry, members, idx := fx.img, fx.cold, fx.coldRes, fx.cache, fx.entry, fx.members, fx.idx
	c0 := idx.Chunks[0]
	zr, err := gzip.NewReader(bytes.NewReader(members[:c0.C]))
	if err != nil {
		t.Fatal(err)
	}
	zr.Multistream(false)
	data, _ := io.ReadAll(zr)

	// The genuine member stores chunk 0 uncompressed, so the forged one
	// differs from it in the same 8 bytes as its data does.
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.NoCompression)
	zw.Header.Extra = []byte{'N', '2', 4, 0, 0, 0, 0, 0}
	zw.Write(data)
	zw.Close()
	good := buf.Bytes()
	binary.LittleEndian.PutUint32(good[16:], uint32(len(good)))
	q := len(data) * 2 / 3
	forgedData := bytes.Clone(data)
	copy(forgedData[q:], "EVIL")
	keepCRC(forgedData, q+4, c0.UC)
	at := bytes.Index(good, data[q-16:q+24]) + 16
	if at < 16 {
		t.Fatal("the window crosses a stored block's header")
	}
	goodBytes, forgedBytes := bytes.Clone(good[at:at+8]), forgedData[q:q+8]
	forged := bytes.Clone(good)
	copy(forged[at:], forgedBytes)
	if crc32.ChecksumIEEE(forged) != crc32.ChecksumIEEE(good) {
		t.Fatal("the forged member's CRC-32 differs")
	}

	for attempt := 0; attempt < 40; attempt++ {
		idx.Chunks[0].C, idx.Chunks[0].CC, idx.Chunks[0].T = len(good), crc32.ChecksumIEEE(good), ""
		os.Remove(entry)
		if err := os.WriteFile(entry, joinEntry(append(bytes.Clone(good), members[c0.C:]...), idx), 0o644); err != nil {
			t.Fatal(err)
		}
		fh, err := os.OpenFile(entry, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		stop := make(chan struct{})
		flipped := make(chan struct{})
		go func() {
			defer close(flipped)
			for {
				select {
				case <-stop:
					fh.WriteAt(goodBytes, int64(at))
					return
				default:
					fh.WriteAt(forgedBytes, int64(at))
					fh.WriteAt(goodBytes, int64(at))
				}
			}
		}()
		// write fails the test if the file's image ID is not the one the
		// build reports.
		_, res := write(t, img, aci.WithCache(cache))
		close(stop)
		<-flipped
		fh.Close()
		if res.ImageID != coldRes.ImageID {
			t.Fatalf("attempt %d: the racing build made another image", attempt)
		}
		// Whatever the entry holds now, the next build makes the cold
		// image's bytes.
		if got, _ := write(t, img, aci.WithCache(cache)); !bytes.Equal(got, cold) {
			t.Fatalf("attempt %d: a member this build did not compress was tagged and reached the next image", attempt)
		}
	}
}

// keepCRC sets b[p:p+4] so that b's CRC-32 is want: CRC-32 is linear, so
// flipping bit k changes the CRC by a fixed vector; solve for the flips.
func keepCRC(b []byte, p int, want uint32) {
	base := crc32.ChecksumIEEE(b)
	type vec struct{ crc, flips uint32 }
	var pivots [32]*vec
	for k := 0; k < 32; k++ {
		b[p+k/8] ^= 1 << (k % 8)
		v := vec{crc32.ChecksumIEEE(b) ^ base, 1 << k}
		b[p+k/8] ^= 1 << (k % 8)
		for bit := 31; bit >= 0 && v.crc != 0; bit-- {
			if v.crc>>bit&1 == 0 {
				continue
			}
			if pivots[bit] == nil {
				pivots[bit] = &v
				break
			}
			v.crc ^= pivots[bit].crc
			v.flips ^= pivots[bit].flips
		}
	}
	need, flips := base^want, uint32(0)
	for bit := 31; bit >= 0; bit-- {
		if need>>bit&1 == 1 {
			need ^= pivots[bit].crc
			flips ^= pivots[bit].flips
		}
	}
	for k := 0; k < 32; k++ {
		if flips>>k&1 == 1 {
			b[p+k/8] ^= 1 << (k % 8)
		}
	}
	if crc32.ChecksumIEEE(b) != want {
		panic("keepCRC: no solution")
	}
}

// A write that fails half-way (here: cancelled) leaves no half-written
// cache entry and no open file behind.
func TestCacheFailedWriteLeavesNothingOpen(t *testing.T) {
	root := nixtest.Build(t, `let
  a = mk "failing-a" "mkdir -p $out; seq 1 700000 > $out/n";
  b = mk "failing-b" "mkdir -p $out; seq 3 700000 > $out/n";
in mk "failing-1.0" "mkdir -p $out; echo ${a} ${b} > $out/refs"`)
	img := image(t, root, false)
	cache := openCache(t, true)
	write(t, img, aci.WithCache(cache))
	// Each entry's second member damaged: the next build proves the
	// first, recompresses the second, and so starts a new entry.
	for _, e := range cacheEntries(t, cache) {
		raw, _ := os.ReadFile(e)
		members, idx := splitEntry(t, raw)
		if len(idx.Chunks) > 1 {
			idx.Chunks[1].CC ^= 1
			os.WriteFile(e, joinEntry(members, idx), 0o644)
		}
	}
	fds := func() int { ents, _ := os.ReadDir("/proc/self/fd"); return len(ents) }
	before := fds()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, err := aci.WriteFile(ctx, filepath.Join(t.TempDir(), "x.aci"), img, aci.WithCache(cache), aci.WithJobs(1),
		aci.WithProgress(func(p aci.Progress) {
			if p.StorePaths > 0 {
				cancel()
			}
		}))
	if err == nil {
		t.Fatal("the cancelled write succeeded")
	}
	if tmp, _ := filepath.Glob(filepath.Join(cache.Dir(), "*", ".tmp-*")); len(tmp) != 0 {
		t.Errorf("the failed write left %v", tmp)
	}
	if after := fds(); after > before {
		t.Errorf("%d files open before the write, %d after", before, after)
	}
}

// A cached member is taken only when it is byte for byte what this build
// would write: proving that it inflates to the chunk is not enough, since
// a member re-encoded to the same inflated bytes (another header carrying
// a payload, stored blocks, another level) would make the file differ
// from a cold build under the same image ID, and would then be tagged as
// the key holder's own. Untagged, such a member is compressed afresh, and
// the entry rewritten with this build's member and tag; without a key the
// cache is not used at all.
func TestCacheTakesOnlyMembersThisBuildWouldWrite(t *testing.T) {
	fx := keyedEntry(t, `mk "reencoded-1.0" "mkdir -p $out/share; seq 1 400000 > $out/share/numbers"`)
	c0 := fx.idx.Chunks[0]
	ours := fx.members[:c0.C]
	data := inflate(t, ours)
	payload := []byte("PAYLOAD-SMUGGLED-INTO-THE-IMAGE!")
	variants := map[string][]byte{
		"an extra subfield with a payload": member(t, data, aci.DefaultLevel, payload),
		"stored blocks":                    member(t, data, gzip.NoCompression, nil),
		"another level":                    member(t, data, 1, nil),
	}
	for name, m := range variants {
		if bytes.Equal(m, ours) || !bytes.Equal(inflate(t, m), data) {
			t.Fatalf("%s: not a re-encoding of the member", name)
		}
		for _, withKey := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/key=%v", name, withKey), func(t *testing.T) {
				cache := fx.cache
				if !withKey {
					var err error
					if cache, err = fragcache.OpenCache(filepath.Dir(filepath.Dir(fx.entry))); err != nil {
						t.Fatal(err)
					}
				}
				idx := fx.idx
				idx.Chunks = append(idx.Chunks[:0:0], fx.idx.Chunks...)
				idx.Chunks[0].C, idx.Chunks[0].CC, idx.Chunks[0].T = len(m), crc32.ChecksumIEEE(m), ""
				planted := joinEntry(append(bytes.Clone(m), fx.members[c0.C:]...), idx)
				if err := os.WriteFile(fx.entry, planted, 0o644); err != nil {
					t.Fatal(err)
				}
				got, res := write(t, fx.img, aci.WithCache(cache))
				if !bytes.Equal(got, fx.cold) || res.ImageID != fx.coldRes.ImageID {
					t.Fatalf("the build differs from a cold one (payload in it: %v)", bytes.Contains(got, payload))
				}
				if res.CachedPaths != 0 {
					t.Error("the re-encoded entry counted as a cache hit")
				}
				now, _ := os.ReadFile(fx.entry)
				if !withKey {
					if !bytes.Equal(now, planted) {
						t.Error("a build without a key rewrote the entry")
					}
					return
				}
				members, idx2 := splitEntry(t, now)
				if !bytes.Equal(members[:idx2.Chunks[0].C], ours) || bytes.Contains(now, payload) {
					t.Fatal("the entry still holds the re-encoded member")
				}
				if got, res := write(t, fx.img, aci.WithCache(cache)); !bytes.Equal(got, fx.cold) || res.CachedPaths != 1 {
					t.Errorf("the rewritten entry: identical %v, %d hits; want the cold bytes from a hit", bytes.Equal(got, fx.cold), res.CachedPaths)
				}
			})
		}
	}
}

// inflate returns what the single gzip member m holds.
func inflate(t *testing.T, m []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(m))
	if err != nil {
		t.Fatal(err)
	}
	zr.Multistream(false)
	data, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// member compresses data at level as one member in Write's format (its
// length claimed in the "N2" subfield), with a second subfield carrying
// payload when there is one.
func member(t *testing.T, data []byte, level int, payload []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, level)
	if err != nil {
		t.Fatal(err)
	}
	zw.Header.Extra = []byte{'N', '2', 4, 0, 0, 0, 0, 0}
	if payload != nil {
		zw.Header.Extra = append(zw.Header.Extra, 'P', 'L', byte(len(payload)), 0)
		zw.Header.Extra = append(zw.Header.Extra, payload...)
	}
	zw.Write(data)
	zw.Close()
	m := buf.Bytes()
	binary.LittleEndian.PutUint32(m[16:], uint32(len(m)))
	return m
}

// What an entry claims is bounded before it is read: an index can be no
// longer than the one Write makes for the store path's NAR size. Entries
// whose footers claim 60 MiB indexes (each a valid index of millions of
// one-byte chunks) cost the build no more memory than entries that are
// missing, and are rewritten.
func TestCacheEntryIndexIsBounded(t *testing.T) {
	root := nixtest.Build(t, `let
  a = mk "bloat-a" "mkdir -p $out; seq 1 1000 > $out/n";
  b = mk "bloat-b" "mkdir -p $out; seq 2 1000 > $out/n";
in mk "bloat-1.0" "mkdir -p $out; echo ${a} ${b} > $out/refs"`)
	img := image(t, root, false)
	cold, _ := write(t, img)
	cache := openCache(t, true)
	out := filepath.Join(t.TempDir(), "x.aci")
	allocated := func() uint64 {
		t.Helper()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		if _, err := aci.WriteFile(context.Background(), out, img, aci.WithCache(cache), aci.WithJobs(1)); err != nil {
			t.Fatal(err)
		}
		runtime.ReadMemStats(&after)
		return after.TotalAlloc - before.TotalAlloc
	}
	allocated() // the pools filled
	for _, e := range cacheEntries(t, cache) {
		os.Remove(e)
	}
	missing := allocated()
	entries := cacheEntries(t, cache)
	good := map[string][]byte{}
	for _, e := range entries {
		raw, _ := os.ReadFile(e)
		good[e] = raw
		_, idx := splitEntry(t, raw)
		var ix bytes.Buffer
		fmt.Fprintf(&ix, `{"storePath":%q,"chunks":[`, idx.StorePath)
		n := 0
		for ; ix.Len() < 60<<20; n++ {
			if n > 0 {
				ix.WriteByte(',')
			}
			ix.WriteString(`{"u":1,"uc":0,"c":1,"cc":0}`)
		}
		ix.WriteString("]}")
		bloated := make([]byte, n, n+ix.Len()+16)
		bloated = append(bloated, ix.Bytes()...)
		bloated = binary.LittleEndian.AppendUint64(bloated, uint64(ix.Len()))
		bloated = append(bloated, "N2ACIFR1"...)
		if err := os.WriteFile(e, bloated, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if got := allocated(); got > missing+16<<20 {
		t.Errorf("entries with 60 MiB indexes: the build allocated %d MiB, %d MiB when they were missing", got>>20, missing>>20)
	}
	if got, _ := os.ReadFile(out); !bytes.Equal(got, cold) {
		t.Error("the build differs from a cold one")
	}
	for _, e := range entries {
		if now, _ := os.ReadFile(e); !bytes.Equal(now, good[e]) {
			t.Errorf("%s was not rewritten", filepath.Base(e))
		}
	}
}

// The bound on what an entry may claim holds for the store paths whose
// tar fragment is largest for their NAR: hundreds of one-byte files at
// the bottom of a path near PATH_MAX, written as hard links whose PAX
// headers spell out both long names. Their entries are read, and hit.
func TestCacheEntryBoundFitsTheWorstStorePaths(t *testing.T) {
	fx := keyedEntry(t, `mk "deep-1.0" ''
  mkdir $out; cd $out
  d=$(printf 'd%.0s' $(seq 1 200))
  for i in $(seq 1 19); do mkdir $d; cd $d; done
  for i in $(seq 1 400); do printf x > f$i; done
  ln -s $(printf 't%.0s' $(seq 1 4000)) link
''`)
	var tarSize int64
	for _, c := range fx.idx.Chunks {
		tarSize += int64(c.U)
	}
	nar := fx.img.Closure.Paths[0].NarSize
	t.Logf("tar fragment %d bytes for %d bytes of NAR (%.1f times); %d chunks, at most %d", tarSize, nar, float64(tarSize)/float64(nar), len(fx.idx.Chunks), fragcache.MaxEntryChunks(nar))
	if float64(tarSize) < 40*float64(nar) {
		t.Fatalf("the fixture's tar is only %.1f times its NAR: not a worst case", float64(tarSize)/float64(nar))
	}
	if got, res := write(t, fx.img, aci.WithCache(fx.cache)); res.CachedPaths != 1 || !bytes.Equal(got, fx.cold) {
		t.Errorf("warm build: %d hits, identical %v; want a hit with the cold bytes", res.CachedPaths, bytes.Equal(got, fx.cold))
	}
}

func TestCacheGivesIdenticalArchives(t *testing.T) {
	root := nixtest.Build(t, `mk "big-1.0" "mkdir -p $out/share; seq 1 600000 > $out/share/numbers; seq 5 900000 > $out/share/more"`)
	img := image(t, root, false)
	cold, _ := write(t, img)
	cache := openCache(t, true)
	first, res := write(t, img, aci.WithCache(cache))
	if res.CachedPaths != 0 || !bytes.Equal(first, cold) {
		t.Fatalf("filling the cache: %d cached paths, identical to no-cache build: %v", res.CachedPaths, bytes.Equal(first, cold))
	}
	warm, res := write(t, img, aci.WithCache(cache))
	if res.CachedPaths != 1 {
		t.Errorf("second build used %d cached paths, want 1", res.CachedPaths)
	}
	if !bytes.Equal(warm, cold) {
		t.Error("the cached build differs from the cold build")
	}
	entry := cacheEntries(t, cache)[0]
	good, _ := os.ReadFile(entry)

	damage := map[string]func([]byte) []byte{
		"flipped byte in the second member": func(b []byte) []byte { b = bytes.Clone(b); b[len(b)/2] ^= 0xff; return b },
		"truncated":                         func(b []byte) []byte { return b[:len(b)/3] },
		"empty":                             func([]byte) []byte { return nil },
		"index of another path":             func(b []byte) []byte { return bytes.Replace(b, []byte("big-1.0"), []byte("big-1.1"), 1) },
	}
	for name, f := range damage {
		t.Run(name, func(t *testing.T) {
			if err := os.WriteFile(entry, f(good), 0o644); err != nil {
				t.Fatal(err)
			}
			got, res := write(t, img, aci.WithCache(cache))
			if !bytes.Equal(got, cold) {
				t.Fatal("a damaged cache entry changed the archive")
			}
			if res.CachedPaths != 0 {
				t.Errorf("a damaged entry counted as a cache hit")
			}
			if now, _ := os.ReadFile(entry); !bytes.Equal(now, good) {
				t.Error("the damaged entry was not rewritten")
			}
		})
	}
}

func cacheEntries(t *testing.T, c *fragcache.Cache) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(c.Dir(), "*", "*.frag"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no cache entries in %s", c.Dir())
	}
	return files
}

func TestCacheGC(t *testing.T) {
	img := image(t, nixtest.Hello(t), false)
	cache := openCache(t, true)
	write(t, img, aci.WithCache(cache))
	res, err := cache.GC(1 << 30)
	if err != nil || res.Entries != 3 || res.Removed != 0 {
		t.Fatalf("GC with room: %+v, %v", res, err)
	}
	res, err = cache.GC(0)
	if err != nil || res.Entries != 0 || res.Removed != 3 || res.Bytes != 0 {
		t.Fatalf("GC to zero: %+v, %v", res, err)
	}
}

// A record's tag is taken only as the hex of TagRecord's HMAC under this
// cache's key, for the same kind and message.
func TestRecordTagged(t *testing.T) {
	keyed, other := openCache(t, true), openCache(t, true)
	tag, ok := keyed.TagRecord("kind 1", []byte("msg"))
	if !ok {
		t.Fatal("no tag with a key")
	}
	good := hex.EncodeToString(tag)
	for _, tc := range []struct {
		name      string
		c         *fragcache.Cache
		kind, msg string
		tag       string
		want      bool
	}{
		{"its own tag", keyed, "kind 1", "msg", good, true},
		{"upper-case hex", keyed, "kind 1", "msg", strings.ToUpper(good), true},
		{"another message", keyed, "kind 1", "msg2", good, false},
		{"another kind", keyed, "kind 2", "msg", good, false},
		{"another key", other, "kind 1", "msg", good, false},
		{"no key", openCache(t, false), "kind 1", "msg", good, false},
		{"not hex", keyed, "kind 1", "msg", good[:63] + "g", false},
		{"cut short", keyed, "kind 1", "msg", good[:62], false},
		{"empty", keyed, "kind 1", "msg", "", false},
	} {
		if got := tc.c.RecordTagged(tc.kind, []byte(tc.msg), tc.tag); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}
