package main

import (
	"bytes"
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/nix2aci/nix2aci/publish"
	"github.com/nix2aci/nix2aci/sign"
)

func publishCommand() *cli.Command {
	return &cli.Command{
		Name:      "publish",
		Usage:     "write a static tree that rkt fetch NAME discovers: images, signatures, public key, index.html",
		ArgsUsage: "IMAGE.aci|DIR...",
		Description: `Copies the images (and the .aci files directly in each DIR, such as a
--layered build's output) to the paths appc discovery names, under the
directory of --base-url in the tree --out, with their signatures, the
public key, and an index.html whose ac-discovery and ac-discovery-pubkeys
meta tags serve the names' hosts. Serve the tree at the host the image
names start with; then:
  sudo rkt trust --prefix example.com
  sudo rkt fetch example.com/app:1.0 && sudo rkt run example.com/app:1.0

With --key every image is signed as it is published; with --public-key
every image must have a signature beside it that the key verifies.
Publishing again into a tree adds to it; an image whose name, version, os
and arch are published already with other contents is refused, unless
--replace (and never while another published image pins it by ID).
Publishes into one tree run one at a time. Interrupted, publish stops
between two images: stdout lists those it published, each complete with
its signature and dependencies and listed in index.html.`,
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "out", Aliases: []string{"o"}, Usage: "the tree's `DIR`", Required: true},
			&cli.StringFlag{Name: "base-url", Usage: "where the tree's image directory is served, e.g. https://example.com/acis", Required: true},
			&cli.StringFlag{Name: "public-key", Usage: "publish the public key in `FILE` (images already signed)"},
			&cli.BoolFlag{Name: "replace", Usage: "let an image replace a published one of the same name, version, os and arch but other contents (refused while another published image pins it)"},
			&cli.BoolFlag{Name: "json", Usage: "print one JSON object"},
		}, signingKeyFlags()...),
		BashComplete: completeImages,
		Action:       runPublish,
	}
}

func runPublish(c *cli.Context) error {
	if c.NArg() == 0 {
		return usagef("publish takes the images to publish: IMAGE.aci files or directories of them")
	}
	if _, err := publish.ParseBaseURL(c.String("base-url")); err != nil {
		return err
	}
	o := publish.Options{Site: c.String("out"), BaseURL: c.String("base-url"), Replace: c.Bool("replace")}
	if c.String("key") == "" && c.String("public-key") == "" && secret("NIX2ACI_SIGNING_KEY") == "" {
		return usagef("publish needs the key rkt will trust: --key KEY.asc to sign every image (or the key in NIX2ACI_SIGNING_KEY), or --public-key PUB.asc for images signed already")
	}
	if c.String("key") != "" && c.String("public-key") != "" {
		return usagef("--key and --public-key exclude each other: --key signs and publishes its public key")
	}
	if c.String("public-key") != "" {
		data, err := readKeyFile(c.String("public-key"))
		if err != nil {
			return &sign.KeyError{Msg: fmt.Sprintf("reading the public key: %v", err)}
		}
		if o.PublicKey, err = sign.ReadKey(bytes.NewReader(data)); err != nil {
			return err
		}
	} else {
		key, err := loadSigningKey(c)
		if err != nil {
			return err
		}
		o.Key = key
	}
	images, err := publish.Expand(c.Args().Slice())
	if err != nil {
		return err
	}
	rep, err := publish.Publish(c.Context, images, o)
	if rep == nil {
		return err
	}
	// Published, or only some of the images (interrupted): stdout lists
	// exactly those in the site.
	if c.Bool("json") {
		if jerr := printJSON(c.App.Writer, rep); err == nil {
			return jerr
		}
	} else {
		for _, im := range rep.Images {
			fmt.Fprintln(c.App.Writer, im.URL)
		}
	}
	if err != nil {
		return fmt.Errorf("%w (stdout lists the images published)", err)
	}
	fmt.Fprintf(c.App.ErrWriter, "published %d %s into %s for %v; trust the key with: sudo rkt trust --prefix %s\n", len(rep.Images), plural(len(rep.Images), "image", "images"), o.Site, rep.Prefixes, rep.Prefixes[0])
	return nil
}
