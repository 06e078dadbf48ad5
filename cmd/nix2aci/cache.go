package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"unicode"

	"github.com/urfave/cli/v2"

	"github.com/nix2aci/nix2aci/fragcache"
)

func cacheCommand() *cli.Command {
	dirFlag := &cli.StringFlag{Name: "cache-dir", Usage: "cache `DIR` (default $XDG_CACHE_HOME/nix2aci or ~/.cache/nix2aci)"}
	open := func(c *cli.Context) (*fragcache.Cache, error) {
		dir := c.String("cache-dir")
		if dir == "" {
			dir = defaultCacheDir()
		}
		if dir == "" {
			return nil, usagef("no cache directory: pass --cache-dir or set HOME")
		}
		return fragcache.OpenCache(dir)
	}
	return &cli.Command{
		Name:  "cache",
		Usage: "manage the cache of compressed store paths",
		Subcommands: []*cli.Command{{
			Name:  "gc",
			Usage: "remove least recently used entries until the cache fits --max-size",
			Flags: []cli.Flag{dirFlag,
				&cli.StringFlag{Name: "max-size", Value: "0", Usage: "keep at most `SIZE` (e.g. 2G); 0 empties the cache"},
				&cli.BoolFlag{Name: "json", Usage: "print JSON"},
			},
			Action: func(c *cli.Context) error {
				max, err := parseSize(c.String("max-size"))
				if err != nil {
					return usagef("--max-size: %v", err)
				}
				cache, err := open(c)
				if err != nil {
					return err
				}
				res, err := cache.GC(max)
				if err != nil {
					return err
				}
				if c.Bool("json") {
					return printJSON(c.App.Writer, res)
				}
				fmt.Fprintf(c.App.Writer, "removed %d entries (%d MB); %d entries (%d MB) remain in %s\n",
					res.Removed, res.FreedBytes>>20, res.Entries, res.Bytes>>20, cache.Dir())
				return nil
			},
		}, {
			Name:  "dir",
			Usage: "print the cache directory",
			Flags: []cli.Flag{dirFlag},
			Action: func(c *cli.Context) error {
				cache, err := open(c)
				if err != nil {
					return err
				}
				fmt.Fprintln(c.App.Writer, cache.Dir())
				return nil
			},
		}},
	}
}

// The cache key comes as the path of a file holding it (--cache-key, or
// NIX2ACI_CACHE_KEY), or as the key itself (NIX2ACI_CACHE_KEY_HEX, e.g.
// a CI secret), never written anywhere. A value of the first kind that
// is no path is refused before anything is built, and its value is never
// shown: it may be the secret, put where its path belongs.
const (
	cacheKeyEnv    = "NIX2ACI_CACHE_KEY"
	cacheKeyHexEnv = "NIX2ACI_CACHE_KEY_HEX"
)

// cacheKeyFrom returns the cache key's file, or the key itself from
// hexKey (NIX2ACI_CACHE_KEY_HEX's value).
func cacheKeyFrom(c *cli.Context, hexKey string) (file string, key []byte, err error) {
	file = c.String("cache-key")
	source := "--cache-key"
	if v, ok := os.LookupEnv(cacheKeyEnv); ok && v == file {
		source = cacheKeyEnv
	}
	if hexKey != "" {
		if file != "" {
			return "", nil, usagef("both %s and %s are set: give the path of the key file, or the key itself, not both", source, cacheKeyHexEnv)
		}
		if key, err = fragcache.ParseCacheKey(hexKey); err != nil {
			return "", nil, usagef("%s must hold the cache key itself: %d hex digits, which it does not (its value is not shown)", cacheKeyHexEnv, 2*fragcache.CacheKeySize)
		}
		return "", key, nil
	}
	if file == "" {
		return defaultCacheKey(), nil, nil
	}
	return file, nil, checkKeyPath(file, source)
}

// checkKeyPath refuses a --cache-key or NIX2ACI_CACHE_KEY value that is
// no path of a key file: the key itself, or something that names no file
// and no place to make one (a secret of another form). A new key is made
// only at a path with a directory that exists (./NAME for the working
// directory), so no secret ever becomes a file name.
func checkKeyPath(v, source string) error {
	const fix = "it must be the path of a file holding the cache key (made there if missing, e.g. ./cache-key); to pass the key itself, use " + cacheKeyHexEnv + "; its value is not shown"
	if _, err := fragcache.ParseCacheKey(v); err == nil {
		msg := fmt.Sprintf("%s must be the path of a file holding the cache key, not the key itself: put the key in a file (chmod 600) and give its path, or pass the key in %s; its value is not shown", source, cacheKeyHexEnv)
		if _, err := os.Lstat(v); err == nil {
			msg += "; a file named after it here, which an earlier nix2aci made holding a new key, is no key of yours: remove it"
		}
		return usagef("%s", msg)
	}
	if strings.ContainsFunc(v, func(r rune) bool { return unicode.IsControl(r) || r == unicode.ReplacementChar }) {
		return usagef("%s holds control characters, so it is no file path: %s", source, fix)
	}
	if _, err := os.Lstat(v); err == nil || !errors.Is(err, fs.ErrNotExist) {
		return nil // a file (LoadKey judges it), or an error LoadKey reports
	}
	if !strings.Contains(v, "/") {
		return usagef("%s names no file, and a new key is made only at a path with a directory: %s", source, fix)
	}
	if fi, err := os.Stat(filepath.Dir(v)); err != nil || !fi.IsDir() {
		return usagef("%s names no file, in no existing directory: %s", source, fix)
	}
	return nil
}
