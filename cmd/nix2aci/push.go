package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"github.com/nix2aci/nix2aci/internal/safeio"
	"github.com/nix2aci/nix2aci/push"
)

func pushCommand() *cli.Command {
	return &cli.Command{
		Name:      "push",
		Usage:     "upload an OCI image (build --format oci) to a registry, and publish its signatures for the pushed name",
		ArgsUsage: "IMAGE.oci docker://HOST/NAME:TAG",
		Description: `Uploads the image of an OCI image layout directory (what build --format oci
writes, or ./result.oci) to a registry: the blobs the repository lacks,
checked against their digests as they are sent, then the manifest, as its
very bytes, so the image keeps in the registry the digest it has here.
--mount-from names another repository on the registry (an app on the same
libraries) whose layers the registry links rather than have them sent
again. stdout says HOST/NAME:TAG@DIGEST.

Credentials are those podman login and docker login keep. A registry on
this machine (localhost, 127.0.0.1) is spoken to over plain HTTP if it
serves no HTTPS; any other only over HTTPS, unless --insecure.

Registries keep no signatures: podman and skopeo read them from a
lookaside tree (registries.d's lookaside: URL). --sigstore DIR is that
tree: with a key (--key or NIX2ACI_SIGNING_KEY), push signs the image as
HOST/NAME:TAG, the name pulls check; without one it publishes the
signatures already made for that name, from DIR itself or from the
sigstore directory beside the layout (--signatures-from), and refuses,
before uploading anything, when there is none. Signatures are written
after the image is in the registry.`,
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "sigstore", Usage: "write the signatures into the lookaside tree `DIR` that the registry's lookaside URL serves"},
			&cli.StringSliceFlag{Name: "signatures-from", Usage: "take signatures made already for the pushed name from the lookaside tree `DIR` (default: the sigstore directory beside the image, if any)"},
			&cli.StringFlag{Name: "mount-from", Usage: "a repository `HOST/NAME` on the same registry that holds some of the layers (another app's), linked rather than sent"},
			&cli.BoolFlag{Name: "insecure", Usage: "allow plain HTTP, or HTTPS with a certificate that does not verify, to a registry not on this machine"},
			&cli.BoolFlag{Name: "json", Usage: "print one JSON object"},
		}, signingKeyFlags()...),
		Action: runPush,
	}
}

func runPush(c *cli.Context) error {
	if c.NArg() != 2 {
		return usagef("push takes an image and where to push it: nix2aci push IMAGE.oci docker://HOST/NAME:TAG")
	}
	src, dst := c.Args().Get(0), c.Args().Get(1)
	o := push.Options{
		Dest:           dst,
		Insecure:       c.Bool("insecure"),
		SigStore:       c.String("sigstore"),
		MountFrom:      c.String("mount-from"),
		SignaturesFrom: c.StringSlice("signatures-from"),
		Creator:        "nix2aci " + version(),
	}
	if _, err := push.ParseDest(dst); err != nil {
		return err
	}
	if c.String("key") != "" && o.SigStore == "" {
		return usagef("--key signs into a lookaside tree: name it with --sigstore DIR (the directory the registry's lookaside URL serves)")
	}
	im, err := push.OpenLayout(src)
	if err != nil {
		return err
	}
	defer im.Close()
	if o.SigStore != "" {
		if c.String("key") != "" || secret("NIX2ACI_SIGNING_KEY") != "" {
			if o.Key, err = loadSigningKey(c); err != nil {
				return err
			}
		} else if !c.IsSet("signatures-from") {
			// Where a signing build puts the image's signatures.
			if real, err := filepath.EvalSymlinks(src); err == nil {
				beside := filepath.Join(filepath.Dir(real), "sigstore")
				if _, err := os.Stat(beside); err == nil {
					o.SignaturesFrom = []string{beside}
				} else if !errors.Is(err, fs.ErrNotExist) {
					return err
				}
			}
		}
	} else if secret("NIX2ACI_SIGNING_KEY") != "" {
		fmt.Fprintln(c.App.ErrWriter, "nix2aci: warning: not signing with the key in NIX2ACI_SIGNING_KEY: signatures go into a lookaside tree, named by --sigstore DIR")
	}
	res, err := push.Push(c.Context, im, o)
	if err != nil {
		return err
	}
	if c.Bool("json") {
		if err := printJSON(c.App.Writer, res); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(c.App.Writer, "%s@%s\n", res.Reference, res.Digest)
	}
	msg := fmt.Sprintf("pushed %s: %d %s uploaded (%d bytes), %d the registry had (%d bytes", res.Reference, res.Uploaded, plural(res.Uploaded, "blob", "blobs"), res.UploadedBytes, res.Skipped, res.SkippedBytes)
	if res.Mounted > 0 {
		msg += fmt.Sprintf("; %d linked from %s", res.Mounted, o.MountFrom)
	}
	msg += ")"
	switch {
	case res.SignatureDir == "":
		msg += ", unsigned"
	case res.Signed:
		msg += fmt.Sprintf(", signed into %s", safeio.Quote(filepath.Join(o.SigStore, res.SignatureDir)))
	default:
		msg += fmt.Sprintf(", %d %s for it in %s", res.Signatures, plural(res.Signatures, "signature", "signatures"), safeio.Quote(filepath.Join(o.SigStore, res.SignatureDir)))
	}
	fmt.Fprintln(c.App.ErrWriter, msg)
	return nil
}
