package fragcache

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nix2aci/nix2aci/internal/safeio"
	"github.com/nix2aci/nix2aci/nixstore"
)

// Cache keeps each store path's compressed members between builds.
//
// An entry is one file, named by a hash of the format its members are made
// in (the version of the fragment a writer makes of a store path, the
// compressor with its version, the compression settings: see Fragment),
// the store path and its NAR hash:
//
//	member bytes of every chunk, in order
//	index: JSON {storePath, chunks: [{u, uc, c, cc, t}]} (uncompressed and
//	       compressed length and CRC-32 of each chunk, and its member's tag)
//	footer: index length (8 bytes, little endian) and the magic "N2ACIFR1"
//
// Nothing in an entry is trusted. A build regenerates each chunk's
// uncompressed bytes anyway (for the image ID), and takes a cached member
// only when it is byte for byte the member this build would write for
// that chunk. What proves it is a tag: HMAC-SHA256, under the cache's key
// (LoadKey, UseKey), of the entry's name (and so of the format, the
// compressor and its level, the store path and NAR hash), the chunk's
// index, length and CRC-32, and the member's bytes. Only this package's
// writer tags a member, and only one it compressed itself, or one it took
// from an entry by its tag; so a tag that verifies, for a chunk whose
// length and CRC-32 match the regenerated one, proves that the key's
// holder compressed that very chunk into those bytes with these settings.
// Whoever can write the cache but cannot read the key can forge no tag.
//
// A member without a tag that verifies (no tag, another key's, damage,
// forgery) is compressed afresh, however it inflates: proving that a
// member inflates to the chunk says nothing of its encoding (a re-encoded
// member, with a payload in its header or stored blocks, inflates the
// same), and only compressing the chunk again proves the encoding, which
// is what the cache saves. Without a key the cache is therefore not used
// (Fragment returns nil).
//
// Before anything is read, an entry's size and its index's length are
// checked against the most a writer can produce for the store path's NAR
// size (maxEntryChunks), and an index's chunks must be laid out as
// gzmember's Writer cuts a segment.
//
// A truncated, corrupt, oversized or mismatched entry, or one holding a
// member that is not taken, is rewritten from this build. Entries are
// written to a temporary file and renamed, so concurrent builds never see
// half an entry.
type Cache struct {
	dir string
	key []byte // nil: the cache is not used
}

// cacheTag marks a directory as a nix2aci cache: the standard
// CACHEDIR.TAG (backup tools skip the directory), with a line of ours.
const cacheTag = "Signature: 8a477f597d28d172789f06886806bc55\n# This directory is a cache of compressed Nix store paths made by nix2aci.\n# nix2aci cache gc removes its entries; see https://bford.info/cachedir/\n"

// OpenCache opens the cache in dir, creating it if needed. A directory
// becomes a cache only if nix2aci made it or it was empty (it then gets a
// CACHEDIR.TAG marker); one that holds other things is refused, so that
// neither builds nor cache gc ever touch files that are not theirs.
// (Caches of earlier versions, holding only entry directories, are
// adopted.)
func OpenCache(dir string) (*Cache, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating cache directory: %w", err)
	}
	tag := filepath.Join(dir, "CACHEDIR.TAG")
	if b, err := safeio.ReadFile(tag, 4096); err == nil {
		if string(b) != cacheTag {
			return nil, fmt.Errorf("%s has a CACHEDIR.TAG that nix2aci did not write: it is another program's cache; choose another --cache-dir", dir)
		}
		return &Cache{dir: dir}, nil
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("reading cache directory: %w", err)
	}
	for _, e := range ents {
		if !e.IsDir() || !isEntryDir(e.Name()) {
			return nil, fmt.Errorf("%s is not a nix2aci cache (no CACHEDIR.TAG, and it holds %s): refusing to use or clean it; choose an empty or new --cache-dir", dir, strconv.Quote(e.Name()))
		}
	}
	if err := os.WriteFile(tag, []byte(cacheTag), 0o644); err != nil {
		return nil, fmt.Errorf("marking the cache directory: %w", err)
	}
	return &Cache{dir: dir}, nil
}

// isEntryDir reports whether name is one of the cache's subdirectories:
// two lower-case hex digits.
func isEntryDir(name string) bool {
	return len(name) == 2 && isHex(name)
}

func isHex(s string) bool {
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// isEntry reports whether dir/name is provably a cache entry: named by a
// key, a regular file, ending in the entry magic.
func isEntry(dir string, d fs.DirEntry) bool {
	name := d.Name()
	key, ok := strings.CutSuffix(name, ".frag")
	if !ok || len(key) != 64 || !isHex(key) || !d.Type().IsRegular() || !strings.HasPrefix(key, filepath.Base(dir)) {
		return false
	}
	f, err := safeio.OpenRegular(filepath.Join(dir, name))
	if err != nil {
		return false
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || fi.Size() < 16 {
		return false
	}
	var magic [8]byte
	_, err = f.ReadAt(magic[:], fi.Size()-8)
	return err == nil && string(magic[:]) == entryMagic
}

// Dir returns the cache's directory.
func (c *Cache) Dir() string { return c.dir }

func (c *Cache) path(format string, p nixstore.PathInfo) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%s", format, p.Path, p.NarHash)
	key := hex.EncodeToString(h.Sum(nil))
	return filepath.Join(c.dir, key[:2], key+".frag")
}

// GCResult says what GC removed.
type GCResult struct {
	Entries    int   `json:"entries"`
	Bytes      int64 `json:"bytes"`
	Removed    int   `json:"removed"`
	FreedBytes int64 `json:"freedBytes"`
}

// GC removes the least recently used entries until the cache holds at most
// maxBytes, and leftovers of interrupted writes older than an hour. It
// removes only what is provably the cache's own: regular files in the
// two-hex-digit subdirectories, named by a key and ending in the entry
// magic, or named as its temporary files; never anything else, never
// through a symlink.
func (c *Cache) GC(maxBytes int64) (GCResult, error) {
	type ent struct {
		path string
		size int64
		used time.Time
	}
	var ents []ent
	var res GCResult
	if _, err := OpenCache(c.dir); err != nil {
		return res, err
	}
	subs, err := os.ReadDir(c.dir)
	if err != nil {
		return res, fmt.Errorf("reading cache %s: %w", c.dir, err)
	}
	for _, s := range subs {
		if !s.IsDir() || !isEntryDir(s.Name()) {
			continue
		}
		dir := filepath.Join(c.dir, s.Name())
		files, err := os.ReadDir(dir)
		if err != nil {
			return res, fmt.Errorf("reading cache %s: %w", c.dir, err)
		}
		for _, d := range files {
			fi, err := d.Info()
			if err != nil || !d.Type().IsRegular() {
				continue
			}
			p := filepath.Join(dir, d.Name())
			switch {
			case strings.HasPrefix(d.Name(), ".tmp-"):
				if time.Since(fi.ModTime()) > time.Hour {
					os.Remove(p)
				}
			case isEntry(dir, d):
				ents = append(ents, ent{p, fi.Size(), fi.ModTime()})
				res.Bytes += fi.Size()
			}
		}
	}
	res.Entries = len(ents)
	sort.Slice(ents, func(i, j int) bool { return ents[i].used.Before(ents[j].used) })
	for _, e := range ents {
		if res.Bytes <= maxBytes {
			break
		}
		if err := os.Remove(e.path); err == nil {
			res.Bytes -= e.size
			res.FreedBytes += e.size
			res.Removed++
			res.Entries--
		}
	}
	return res, nil
}
