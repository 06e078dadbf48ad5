package fragcache

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/nix2aci/nix2aci/internal/safeio"
)

// CacheKeySize is the size of a cache key in bytes; its file holds it as
// hex digits and a newline.
const CacheKeySize = 32

// LoadKey makes the cache tag the members it writes, and take the members
// whose tags verify (see Cache), with the key in file. When file does not
// exist, a new random key is written there (0600, its directory made 0700)
// and created is true.
//
// The key is what an attacker who can write the cache must not read, so
// it is refused when it lies inside the cache directory, when it is not a
// regular file owned by this user, or when others may read it; the cache
// then has no key, and builds do not use it.
func (c *Cache) LoadKey(file string) (created bool, err error) {
	abs, err := filepath.Abs(file)
	if err != nil {
		return false, err
	}
	dir, err := filepath.Abs(c.dir)
	if err != nil {
		return false, err
	}
	if rel, err := filepath.Rel(resolved(dir), resolved(abs)); err == nil && filepath.IsLocal(rel) {
		return false, fmt.Errorf("the cache key %s is inside the cache directory %s, where whoever can write the cache could read or replace it: keep it elsewhere (--cache-key)", safeio.Quote(file), safeio.Quote(c.dir))
	}
	key, err := readKey(file)
	if errors.Is(err, fs.ErrNotExist) {
		if key, err = createKey(file); err != nil {
			return false, fmt.Errorf("creating the cache key %s: %w", safeio.Quote(file), err)
		}
		created = true
	}
	if err != nil {
		return false, err
	}
	c.key = key
	return created, nil
}

// UseKey makes the cache tag and take members with key, CacheKeySize
// bytes its caller holds (a CI secret, say), as LoadKey does with a key
// file's. The key is written nowhere.
func (c *Cache) UseKey(key []byte) error {
	if len(key) != CacheKeySize {
		return fmt.Errorf("a cache key has %d bytes, not %d", CacheKeySize, len(key))
	}
	c.key = bytes.Clone(key)
	return nil
}

// ParseCacheKey reads a cache key written as a key file holds it: 64 hex
// digits, with surrounding white space ignored. Its error never quotes
// the text, which may be a secret.
func ParseCacheKey(text string) ([]byte, error) {
	text = strings.TrimSpace(text)
	key := make([]byte, CacheKeySize)
	if len(text) != 2*CacheKeySize {
		return nil, fmt.Errorf("not %d hex digits", 2*CacheKeySize)
	}
	if _, err := hex.Decode(key, []byte(text)); err != nil {
		return nil, fmt.Errorf("not %d hex digits", 2*CacheKeySize)
	}
	return key, nil
}

// resolved returns the absolute path p with the symlinks of its longest
// existing part resolved (the file itself, if it exists), as the file
// system will resolve them when p is opened or created.
func resolved(p string) string {
	rest := ""
	for {
		if r, err := filepath.EvalSymlinks(p); err == nil {
			return filepath.Join(r, rest)
		}
		parent := filepath.Dir(p)
		if parent == p {
			return filepath.Join(p, rest)
		}
		rest = filepath.Join(filepath.Base(p), rest)
		p = parent
	}
}

// readKey reads and checks a key file.
func readKey(file string) ([]byte, error) {
	f, err := safeio.OpenRegular(file)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("the cache key: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return nil, fmt.Errorf("the cache key %s belongs to uid %d, not to this user (uid %d): whoever owns it can forge cache entries; use a key of your own (--cache-key)", safeio.Quote(file), st.Uid, os.Geteuid())
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("the cache key %s can be read or written by others (mode %04o): run chmod 600 %s", safeio.Quote(file), fi.Mode().Perm(), safeio.Quote(file))
	}
	buf := make([]byte, 2*CacheKeySize+2)
	n, _ := f.Read(buf)
	text := bytes.TrimRight(buf[:n], "\n")
	key := make([]byte, CacheKeySize)
	if len(text) != 2*CacheKeySize || fi.Size() > int64(len(text)+1) {
		return nil, fmt.Errorf("the cache key %s is not %d hex digits: remove it, and the next build makes a new one", safeio.Quote(file), 2*CacheKeySize)
	}
	if _, err := hex.Decode(key, text); err != nil {
		return nil, fmt.Errorf("the cache key %s is not %d hex digits: remove it, and the next build makes a new one", safeio.Quote(file), 2*CacheKeySize)
	}
	return key, nil
}

// createKey writes a new random key to file, unless another build got
// there first: then that build's key is the one read and used.
func createKey(file string) ([]byte, error) {
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return nil, err
	}
	key := make([]byte, CacheKeySize)
	rand.Read(key)
	if err := safeio.CreateFileAtomic(file, []byte(hex.EncodeToString(key)+"\n"), 0o600); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return readKey(file)
		}
		return nil, err
	}
	return key, nil
}
