package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/nix2aci/nix2aci/aci"
	"github.com/nix2aci/nix2aci/manifest"
)

func inspectCommand() *cli.Command {
	return &cli.Command{
		Name:      "inspect",
		Usage:     "validate an ACI and show its manifest, image ID and contents",
		ArgsUsage: "IMAGE.aci",
		Flags:     []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print one JSON object"}},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usagef("inspect takes one IMAGE.aci (got %d)", c.NArg())
			}
			path := c.Args().First()
			info, err := aci.InspectFile(path)
			if err != nil {
				return err
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
			fmt.Fprintf(w, "%s\n", m)
			fmt.Fprintf(w, "name:        %s\nversion:     %s\nos/arch:     %s/%s\nimage ID:    %s\ncompression: %s\n", im.Name, version, osName, arch, info.ImageID, info.Compression)
			fmt.Fprintf(w, "entries:     %d (%d files, %d directories, %d symlinks, %d hard links)\nstore paths: %d\nuncompressed: %d bytes\n",
				info.Entries, info.Files, info.Dirs, info.Symlinks, info.HardLinks, info.StorePaths, info.Size)
			return nil
		},
	}
}
