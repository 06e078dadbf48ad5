package main

import (
	"context"
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/nix2aci/nix2aci/aci"
	"github.com/nix2aci/nix2aci/internal/safeio"
	"github.com/nix2aci/nix2aci/manifest"
	"github.com/nix2aci/nix2aci/pipeline"
)

func inspectCommand() *cli.Command {
	return &cli.Command{
		Name:      "inspect",
		Usage:     "validate an ACI and show its manifest, image ID and contents",
		ArgsUsage: "IMAGE.aci",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "print one JSON object"},
			&cli.StringFlag{Name: "max-size", Usage: "refuse an image whose uncompressed tar is larger than `SIZE` (e.g. 20G)"},
		},
		BashComplete: completeImages,
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usagef("inspect takes one IMAGE.aci (got %d)", c.NArg())
			}
			path := c.Args().First()
			f, err := pipeline.OpenImage(path)
			if err != nil {
				return err
			}
			defer f.Close()
			var maxSize int64
			if s := c.String("max-size"); s != "" {
				if maxSize, err = parseSize(s); err != nil {
					return usagef("--max-size: %v", err)
				}
			}
			info, err := aci.InspectLimited(safeio.WithContext(c.Context, f), maxSize)
			if err != nil {
				if c.Context.Err() != nil {
					return fmt.Errorf("inspecting %s interrupted: %w", path, context.Cause(c.Context))
				}
				return fmt.Errorf("inspecting %s: %w", path, err)
			}
			im := info.Manifest
			version, _ := im.Labels.Get("version")
			osName, _ := im.Labels.Get("os")
			arch, _ := im.Labels.Get("arch")
			if c.Bool("json") {
				return printJSON(c.App.Writer, struct {
					Path     string `json:"path"`
					Name     string `json:"name"`
					Version  string `json:"version"`
					OS       string `json:"os"`
					Arch     string `json:"arch"`
					Manifest any    `json:"manifest"`
					*aci.Info
				}{path, im.Name.String(), version, osName, arch, im, info})
			}
			m, err := manifest.Marshal(im)
			if err != nil {
				return err
			}
			w := c.App.Writer
			// JSON escapes C0 controls, not DEL or C1 ones: escape those too.
			fmt.Fprintf(w, "%s\n", safeio.Terminal(string(m), len(m), len(m)))
			q := safeio.Quote
			fmt.Fprintf(w, "name:        %s\nversion:     %s\nos/arch:     %s/%s\nimage ID:    %s\ncompression: %s\n", q(im.Name.String()), q(version), q(osName), q(arch), info.ImageID, info.Compression)
			fmt.Fprintf(w, "entries:     %d (%d files, %d directories, %d symlinks, %d hard links)\nstore paths: %d\nuncompressed: %d bytes\n",
				info.Entries, info.Files, info.Dirs, info.Symlinks, info.HardLinks, info.StorePaths, info.Size)
			return nil
		},
	}
}
