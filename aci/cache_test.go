package aci_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
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
//
// With a cache key the forger keeps the member's tag, which no longer
// verifies; without one there is no tag. Either way the member must be
// inflated, and found out.
func TestCacheEntryWithOtherDeflateDataNeverReachesAnImage(t *testing.T) {
	root := nixtest.Build(t, `mk "evil-cache-1.0" "mkdir -p $out/share; seq 1 300000 > $out/share/numbers"`)
	img := image(t, root, false)
	cold, coldRes := write(t, img)
	for _, withKey := range []bool{false, true} {
		t.Run(fmt.Sprintf("key=%v", withKey), func(t *testing.T) {
			cache := openCache(t, withKey)
			forgeFirstMember(t, img, cache, cold, coldRes, withKey)
		})
	}
}

// openCache opens a new cache, with a key of its own when withKey.
func openCache(t *testing.T, withKey bool) *aci.Cache {
	t.Helper()
	cache, err := aci.OpenCache(t.TempDir())
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
	cache   *aci.Cache
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

func forgeFirstMember(t *testing.T, img aci.Image, cache *aci.Cache, cold []byte, coldRes *aci.Result, withKey bool) {
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
	// with every tag verifying when there is a key.
	before := aci.InflateProofs()
	if _, res := write(t, img, aci.WithCache(cache)); res.CachedPaths != 1 {
		t.Errorf("after the rewrite: %d cached paths, want 1", res.CachedPaths)
	}
	if proofs := aci.InflateProofs() - before; withKey && proofs != 0 {
		t.Errorf("after the rewrite: %d members inflated, want 0 (tags)", proofs)
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

// With a key, a warm build takes its own entries without inflating a
// member; an entry written without a key is proven by inflation once and
// rewritten with tags; tags made under another key are not trusted.
// Every build's archive is the cold one, byte for byte.
func TestCacheTagsSpareInflation(t *testing.T) {
	root := nixtest.Build(t, `mk "tagged-1.0" "mkdir -p $out/share; seq 1 400000 > $out/share/numbers; seq 5 500000 > $out/share/more"`)
	img := image(t, root, false)
	cold, _ := write(t, img)
	build := func(cache *aci.Cache) (proofs int64, hits int) {
		t.Helper()
		before := aci.InflateProofs()
		got, res := write(t, img, aci.WithCache(cache))
		if !bytes.Equal(got, cold) {
			t.Fatal("a cached build differs from the cold one")
		}
		return aci.InflateProofs() - before, res.CachedPaths
	}

	keyed := openCache(t, true)
	build(keyed)
	if proofs, hits := build(keyed); proofs != 0 || hits != 1 {
		t.Errorf("warm build with a key: %d members inflated, %d hits; want 0 and 1", proofs, hits)
	}

	// A cache filled without a key, then used with one.
	dir := t.TempDir()
	plain, _ := aci.OpenCache(dir)
	build(plain)
	if proofs, _ := build(plain); proofs == 0 {
		t.Error("without a key, cached members were taken unproven")
	}
	upgraded, _ := aci.OpenCache(dir)
	if _, err := upgraded.LoadKey(filepath.Join(t.TempDir(), "key")); err != nil {
		t.Fatal(err)
	}
	if proofs, hits := build(upgraded); proofs == 0 || hits != 1 {
		t.Errorf("untagged entry under a key: %d members inflated, %d hits; want inflation and a hit", proofs, hits)
	}
	if proofs, _ := build(upgraded); proofs != 0 {
		t.Errorf("the untagged entry was not rewritten with tags: %d members inflated", proofs)
	}

	// The same entries under another key: proven by inflation, and left
	// as they are (a cache shared by two keys does not flip-flop).
	other, _ := aci.OpenCache(dir)
	if _, err := other.LoadKey(filepath.Join(t.TempDir(), "key")); err != nil {
		t.Fatal(err)
	}
	entry := cacheEntries(t, other)[0]
	before, _ := os.ReadFile(entry)
	if proofs, hits := build(other); proofs == 0 || hits != 1 {
		t.Errorf("another key's tags: %d members inflated, %d hits; want inflation and a hit", proofs, hits)
	}
	if after, _ := os.ReadFile(entry); !bytes.Equal(before, after) {
		t.Error("an entry tagged under another key was rewritten")
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
	cache, _ := aci.OpenCache(t.TempDir())
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
	cache := openCache(t, false)
	for i := 0; i < 2; i++ {
		write(t, img, aci.WithCache(cache), aci.WithCompression(aci.Xz, 0))
	}
	if files, _ := filepath.Glob(filepath.Join(cache.Dir(), "*", "*.frag")); len(files) != 0 {
		t.Errorf("xz builds wrote %d cache entries", len(files))
	}
}

// A rewritten entry copies only the members this build proved, as it
// proved them. The attacker owns an untagged entry whose first member is
// genuine, and keeps flipping 8 of its bytes to others that leave every
// CRC-32 and length as they were: the build under a key proves the member
// by inflation and then retags the entry, reading the member again. What
// it tags must be what it proved, or the next build would take a forged
// member on its tag alone.
func TestCacheRewriteNeverTagsWhatItDidNotProve(t *testing.T) {
	fx := keyedEntry(t, `mk "launder-1.0" "mkdir -p $out/share; seq 1 400000 > $out/share/numbers"`)
	img, coldRes, cache, entry, members, idx := fx.img, fx.coldRes, fx.cache, fx.entry, fx.members, fx.idx
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
		// image (the genuine stored member may stand in for the
		// compressed one: same image, other bytes).
		if _, res := write(t, img, aci.WithCache(cache)); res.ImageID != coldRes.ImageID {
			t.Fatalf("attempt %d: a forged member was tagged and reached the next image", attempt)
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
