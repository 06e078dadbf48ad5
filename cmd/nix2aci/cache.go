package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/nix2aci/nix2aci/aci"
)

func cacheCommand() *cli.Command {
	dirFlag := &cli.StringFlag{Name: "cache-dir", Usage: "cache `DIR` (default $XDG_CACHE_HOME/nix2aci or ~/.cache/nix2aci)"}
	open := func(c *cli.Context) (*aci.Cache, error) {
		dir := c.String("cache-dir")
		if dir == "" {
			dir = defaultCacheDir()
		}
		if dir == "" {
			return nil, usagef("no cache directory: pass --cache-dir or set HOME")
		}
		return aci.OpenCache(dir)
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
