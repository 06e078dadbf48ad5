package main

import (
	"time"

	"errors"
	"fmt"
	"github.com/ProtonMail/go-crypto/openpgp"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/nix2aci/nix2aci/aci"
	"github.com/nix2aci/nix2aci/sign"
)

func signCommand() *cli.Command {
	return &cli.Command{
		Name:      "sign",
		Usage:     "write IMAGE.aci.asc, an armored detached SHA-512 signature of the image",
		ArgsUsage: "IMAGE.aci",
		Flags:     signingKeyFlags(),
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usagef("sign takes one IMAGE.aci (got %d)", c.NArg())
			}
			key, err := loadSigningKey(c)
			if err != nil {
				return err
			}
			asc, err := signImage(c.Args().First(), key)
			if err != nil {
				return err
			}
			fmt.Fprintln(c.App.Writer, asc)
			return nil
		},
	}
}

// signImage checks that path is a valid ACI and signs it, recording its
// name and image ID in the signature.
func signImage(path string, key *openpgp.Entity) (string, error) {
	info, err := aci.InspectFile(path)
	if err != nil {
		return "", err
	}
	return sign.SignFile(path, key, sign.WithImage(info.Manifest.Name.String(), info.ImageID))
}

// buildSignFlags are build's signing flags.
func buildSignFlags() []cli.Flag {
	return append([]cli.Flag{&cli.BoolFlag{Name: "sign", Usage: "sign the image (needs --key or NIX2ACI_SIGNING_KEY)"}}, signingKeyFlags()...)
}

// buildSigner returns the function that signs a built image, or nil
// without --sign. It loads the key at once, so that a wrong passphrase
// fails before the build.
func buildSigner(c *cli.Context) (func(path string) (string, error), error) {
	if !c.Bool("sign") {
		if c.String("key") != "" {
			return nil, usagef("--key is given without --sign: add --sign to sign the image")
		}
		return nil, nil
	}
	key, err := loadSigningKey(c)
	if err != nil {
		return nil, err
	}
	return func(path string) (string, error) { return signImage(path, key) }, nil
}

func verifyCommand() *cli.Command {
	return &cli.Command{
		Name:      "verify",
		Usage:     "check an image's signature against trusted keys, as a deploy pipeline or rkt would",
		ArgsUsage: "IMAGE.aci",
		Description: `Succeeds only if IMAGE.aci is a valid ACI, its signature (IMAGE.aci.asc
unless --signature) is good and made with SHA-2, the key has neither
expired nor been revoked, and the key is trusted for the image's name:
by --keyring (trusted for every name) or by a trust store in rkt's layout
(--trust-dir: root.d/<fingerprint>, prefix.d/<prefix>/<fingerprint>).`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "signature", Usage: "signature `FILE` (default IMAGE.aci.asc)"},
			&cli.StringSliceFlag{Name: "keyring", Usage: "trust the armored public key in `FILE` for every name (repeatable)"},
			&cli.StringFlag{Name: "trust-dir", Usage: "trust store `DIR` in rkt's layout (e.g. /etc/rkt/trustedkeys)"},
			&cli.BoolFlag{Name: "json", Usage: "print one JSON object"},
		},
		Action: runVerify,
	}
}

func runVerify(c *cli.Context) error {
	if c.NArg() != 1 {
		return usagef("verify takes one IMAGE.aci (got %d)", c.NArg())
	}
	image := c.Args().First()
	keyrings, dir := c.StringSlice("keyring"), c.String("trust-dir")
	if (len(keyrings) == 0) == (dir == "") {
		return usagef("say whom to trust: --keyring PUB.asc (repeatable) or --trust-dir DIR, one of the two")
	}
	var trust *sign.Trust
	if dir != "" {
		var err error
		if trust, err = sign.LoadTrustDir(dir); err != nil {
			return err
		}
	} else {
		trust = sign.NewTrust()
		for _, k := range keyrings {
			f, err := os.Open(k)
			if err != nil {
				return &sign.KeyError{Msg: fmt.Sprintf("reading keyring: %v", err)}
			}
			key, err := sign.ReadKey(f)
			f.Close()
			if err != nil {
				return fmt.Errorf("keyring %s: %w", k, err)
			}
			trust.AddRoot(key)
		}
	}
	sigPath := c.String("signature")
	if sigPath == "" {
		sigPath = image + ".asc"
	}
	sigFile, err := os.Open(sigPath)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return &sign.VerifyError{Reason: sign.ReasonMissing, Msg: fmt.Sprintf("no signature %s: sign the image with nix2aci sign %s --key KEY, or name the signature with --signature FILE", sigPath, image)}
		}
		return err
	}
	defer sigFile.Close()
	f, err := os.Open(image)
	if err != nil {
		return err
	}
	defer f.Close()
	v, err := sign.Verify(f, sigFile, trust, time.Time{})
	if err != nil {
		return fmt.Errorf("%s: %w", image, err)
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, struct {
			Image     string `json:"image"`
			Signature string `json:"signature"`
			*sign.Verified
		}{image, sigPath, v})
	}
	fmt.Fprintf(c.App.Writer, "good signature on %s (%s)\n  image ID %s\n  signed by %s, key %s, trusted as %s, at %s\n",
		v.Name, image, v.ImageID, v.UserID, v.Fingerprint, v.TrustedAs, v.SignedAt.Format("2006-01-02 15:04:05Z"))
	return nil
}

func trustCommand() *cli.Command {
	return &cli.Command{
		Name:      "trust",
		Usage:     "add a public key to a trust store in rkt's layout",
		ArgsUsage: "PUB.asc",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "prefix", Usage: "trust the key for image names under `PREFIX` (whole path components)"},
			&cli.BoolFlag{Name: "root", Usage: "trust the key for every image name"},
			&cli.StringFlag{Name: "trust-dir", Value: "/etc/rkt/trustedkeys", Usage: "trust store `DIR`"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usagef("trust takes one PUB.asc (got %d)", c.NArg())
			}
			f, err := os.Open(c.Args().First())
			if err != nil {
				return &sign.KeyError{Msg: err.Error()}
			}
			defer f.Close()
			key, err := sign.ReadKey(f)
			if err != nil {
				return err
			}
			path, err := sign.WriteTrust(c.String("trust-dir"), c.String("prefix"), c.Bool("root"), key)
			if err != nil {
				return usagef("%v", err)
			}
			fmt.Fprintln(c.App.Writer, path)
			fmt.Fprintf(c.App.ErrWriter, "trusted %s (%s)\n", sign.Fingerprint(key), sign.UserID(key))
			return nil
		},
	}
}
