package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"github.com/nix2aci/nix2aci/internal/safeio"
	"github.com/nix2aci/nix2aci/manifest"
	"github.com/nix2aci/nix2aci/pipeline"
	"github.com/nix2aci/nix2aci/sign"
)

func signCommand() *cli.Command {
	return &cli.Command{
		Name:      "sign",
		Usage:     "write IMAGE.aci.asc, an armored detached SHA-512 signature of the image (or an OCI image's container signatures)",
		ArgsUsage: "IMAGE.aci|IMAGE.oci|IMAGE.oci.tar",
		Description: `An OCI image (a layout directory or an oci-archive) is checked blob by
blob, then signed with containers' simple signing, as podman and skopeo
check it: one signature for each --identity (default: the name its
index.json gives it, when that is a whole reference), by the key's
primary key, which must be RSA. The signatures go into the lookaside
tree beside the image (sigstore, or --sigstore DIR), at
<repository path>@sha256=<hex>/signature-N, which registries.d's
lookaside: file:///ABS/DIR makes podman and skopeo read.`,
		Flags: append(signingKeyFlags(), identityFlag(), sigstoreFlag()),
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usagef("sign takes one IMAGE.aci or OCI image (got %d)", c.NArg())
			}
			if isOCIPath(c.Args().First()) {
				return runSignOCI(c, c.Args().First())
			}
			for _, f := range []string{"identity", "sigstore"} {
				if c.IsSet(f) {
					return usagef("--%s applies to OCI images; an ACI's signature is IMAGE.aci.asc", f)
				}
			}
			key, err := loadSigningKey(c)
			if err != nil {
				return err
			}
			path := c.Args().First()
			// A link (result.aci) gets its signature beside the image it
			// points at, and a link to that beside itself, where rkt
			// looks: result.aci.asc.
			asc := path + ".asc"
			target, linkErr := os.Readlink(path)
			if linkErr == nil {
				real, err := filepath.EvalSymlinks(path)
				if err != nil {
					return err
				}
				asc = real + ".asc"
			}
			if _, err := pipeline.SignImage(c.Context, key, path, asc); err != nil {
				return err
			}
			if linkErr == nil {
				if err := replaceSymlink(target+".asc", path+".asc"); err != nil {
					return err
				}
			}
			fmt.Fprintln(c.App.Writer, asc)
			return nil
		},
	}
}

// buildSignFlags are build's signing flags.
func buildSignFlags() []cli.Flag {
	return append([]cli.Flag{&cli.BoolFlag{Name: "sign", Usage: "sign the image (needs --key or NIX2ACI_SIGNING_KEY)"}}, signingKeyFlags()...)
}

// buildSigner returns the function that signs a built image, or nil
// without --sign. It loads the key at once, so that a wrong passphrase
// fails before the build.
func buildSigner(c *cli.Context) (*pipeline.Signer, error) {
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
	return pipeline.KeySigner(key), nil
}

func verifyCommand() *cli.Command {
	return &cli.Command{
		Name:      "verify",
		Usage:     "check an image's signature against trusted keys, as a deploy pipeline or rkt would",
		ArgsUsage: "IMAGE.aci|IMAGE.oci|IMAGE.oci.tar",
		Description: `Succeeds only if the signature (IMAGE.aci.asc unless --signature) is a
good signature of the file's bytes made with SHA-2, the key has neither
expired nor been revoked, and the key is trusted for the name in the
image's manifest (every signature in the file is judged on its own; one
that passes everything is enough): by --keyring (trusted for every name)
or by a trust store in rkt's layout (--trust-dir: root.d/<fingerprint>,
prefix.d/<prefix>/<fingerprint>).

By default the manifest is read as rkt reads it, from the start of the
same read that hashes the file: what a deploy needs, at about the cost of
gpg --verify. --full also decompresses and validates the whole archive
(appc's validator and nix2aci's own rules) and prints its image ID.

A layered app (one whose manifest lists dependencies) is verified with
its whole dependency tree: each dependency must be pinned by image ID,
its file and signature at hand, its signature pass the same checks with
a key trusted for its own name, its image ID (computed from the file)
equal the pin; cycles and images reached twice are refused. The files
are found through the .deps file beside the app (or --deps FILE.deps),
or by name in the app's directory (or --deps-dir DIR: a build's --out
or a site's base path). A layered app whose dependencies are not at hand
fails; --no-deps skips them, with a warning.

An OCI image (a layout directory or an oci-archive) passes when every
blob its manifest names has its digest and size, and one of its
signatures in the lookaside tree (sigstore beside it, or --sigstore DIR)
is a good simple signing signature of the manifest's digest for
--identity (default: the name its index.json gives it, when that is a
whole reference), by the primary key of a key trusted for the identity's
repository (its registry host and path: a trust store prefix matches it
as it matches an ACI's name).`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "signature", Usage: "signature `FILE` (default IMAGE.aci.asc)"},
			&cli.StringSliceFlag{Name: "keyring", Usage: "trust the armored public key in `FILE` for every name (repeatable)"},
			&cli.StringFlag{Name: "trust-dir", Usage: "trust store `DIR` in rkt's layout (e.g. /etc/rkt/trustedkeys)"},
			&cli.StringFlag{Name: "rkt-args", Usage: "also check a thin image's `FILE`.rkt-args: only read-only host volumes for the verified image's store mount points"},
			&cli.BoolFlag{Name: "full", Usage: "also validate the whole archive and compute its image ID"},
			&cli.StringFlag{Name: "max-size", Usage: "refuse an image whose uncompressed tar is larger than `SIZE` (e.g. 20G)"},
			&cli.StringFlag{Name: "deps", Usage: "a layered app's `FILE`.deps, naming its dependency files (default: the .deps beside the app)"},
			&cli.StringFlag{Name: "deps-dir", Usage: "look for the dependency files by name in `DIR` (a build's --out, a site's base path)"},
			&cli.BoolFlag{Name: "no-deps", Usage: "do not verify a layered app's dependencies (rkt fetches and checks them itself); says so on stderr"},
			&cli.IntFlag{Name: "max-deps", Value: sign.DefaultMaxDependencies, Usage: "refuse a dependency tree of more than `N` images besides the app"},
			&cli.StringFlag{Name: "identity", Usage: "the docker reference `REF` an OCI image must be signed as, e.g. localhost:5000/app:1.0"},
			sigstoreFlag(),
			&cli.BoolFlag{Name: "json", Usage: "print one JSON object"},
		},
		BashComplete: completeImages,
		Action:       runVerify,
	}
}

func runVerify(c *cli.Context) error {
	if c.NArg() != 1 {
		return usagef("verify takes one IMAGE.aci (got %d)", c.NArg())
	}
	image := c.Args().First()
	if isOCIPath(image) {
		return runVerifyOCI(c, image)
	}
	for _, f := range []string{"identity", "sigstore"} {
		if c.IsSet(f) {
			return usagef("--%s applies to OCI images; an ACI is verified against its manifest's name", f)
		}
	}
	trust, err := loadTrust(c)
	if err != nil {
		return err
	}
	sigPath := c.String("signature")
	if sigPath == "" {
		sigPath = image + ".asc"
	}
	sigFile, err := safeio.OpenRegular(sigPath)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return &sign.VerifyError{Reason: sign.ReasonMissing, Msg: fmt.Sprintf("no signature %s: sign the image with nix2aci sign %s --key KEY, or name the signature with --signature FILE", sigPath, image)}
		}
		return &sign.VerifyError{Reason: sign.ReasonMalformed, Msg: fmt.Sprintf("cannot read the signature: %v", err)}
	}
	defer sigFile.Close()
	f, err := pipeline.OpenImage(image)
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
	depsFile, depsDir, noDeps := c.String("deps"), c.String("deps-dir"), c.Bool("no-deps")
	switch {
	case depsFile != "" && depsDir != "":
		return usagef("--deps names the dependency files, --deps-dir a directory to look for them in: give one of the two")
	case noDeps && (depsFile != "" || depsDir != ""):
		return usagef("--no-deps skips the dependencies that --deps or --deps-dir would verify: give one or the other")
	case c.Int("max-deps") < 1:
		return usagef("--max-deps %d: give at least 1", c.Int("max-deps"))
	}
	opts := sign.VerifyOptions{MaxImageSize: maxSize, Full: c.Bool("full"), ImageIDIfDependencies: true}
	v, err := sign.VerifyWith(safeio.WithContext(c.Context, f), sigFile, trust, opts)
	if err != nil {
		if c.Context.Err() != nil {
			return fmt.Errorf("verifying %s interrupted: %w", image, context.Cause(c.Context))
		}
		return fmt.Errorf("%s: %w", image, err)
	}
	deps := []*sign.VerifiedDependency{}
	depsChecked := true
	switch {
	case noDeps && len(v.Manifest.Dependencies) > 0:
		depsChecked = false
		fmt.Fprintf(c.App.ErrWriter, "WARNING: --no-deps: the %d dependencies of %s were NOT verified: not their signatures, not their pins; only rkt's own checks will stand between them and the app\n", len(v.Manifest.Dependencies), safeio.Quote(v.Name))
	case noDeps:
	case len(v.Manifest.Dependencies) > 0 || depsFile != "" || depsDir != "":
		var files *sign.DependencyFiles
		switch {
		case depsFile != "":
			files, err = sign.OpenDepsFile(depsFile)
		case depsDir != "":
			files, err = sign.OpenDepsDir(depsDir)
		default:
			files, err = sign.FindDependencyFiles(image, v.Name)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", image, err)
		}
		defer files.Close()
		deps, err = sign.VerifyDependencies(c.Context, v, files, trust, sign.DependencyOptions{VerifyOptions: opts, MaxImages: c.Int("max-deps")})
		if err != nil {
			if c.Context.Err() != nil {
				return fmt.Errorf("verifying %s interrupted: %w", image, context.Cause(c.Context))
			}
			return fmt.Errorf("%s: %w", image, err)
		}
	}
	if argsFile := c.String("rkt-args"); argsFile != "" {
		// The deploy runs the file as root: it must bind nothing the
		// signed manifest does not name.
		args, err := safeio.ReadFile(argsFile, 16<<20)
		if err != nil {
			return &sign.VerifyError{Reason: sign.ReasonMissing, Msg: fmt.Sprintf("reading the rkt arguments: %v", err)}
		}
		if err := manifest.CheckRktVolumeArgs(v.Manifest, args); err != nil {
			return fmt.Errorf("%s: %w", argsFile, err)
		}
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, struct {
			Image     string `json:"image"`
			Signature string `json:"signature"`
			*sign.Verified
			DependenciesChecked bool                       `json:"dependenciesChecked"`
			Dependencies        []*sign.VerifiedDependency `json:"dependencies"`
		}{image, sigPath, v, depsChecked, deps})
	}
	fmt.Fprintf(c.App.Writer, "good signature on %s (%s)\n", safeio.Quote(v.Name), image)
	switch {
	case v.Full:
		fmt.Fprintf(c.App.Writer, "  valid ACI, image ID %s\n", v.ImageID)
	case v.ImageID != "":
		fmt.Fprintf(c.App.Writer, "  image ID %s\n", v.ImageID)
	}
	fmt.Fprintf(c.App.Writer, "  signed by %s, key %s, trusted as %s, at %s\n",
		safeio.Quote(v.UserID), v.Fingerprint, safeio.Quote(v.TrustedAs), v.SignedAt.Format("2006-01-02 15:04:05Z"))
	if len(deps) > 0 {
		fmt.Fprintf(c.App.Writer, "  %d dependencies, each signed by a key trusted for its name and equal to its pin:\n", len(deps))
		for _, d := range deps {
			fmt.Fprintf(c.App.Writer, "    %s %s (%s), signed by %s, trusted as %s\n",
				safeio.Quote(d.Name), d.ImageID, d.Image, safeio.Quote(d.UserID), safeio.Quote(d.TrustedAs))
		}
	}
	return nil
}

// loadTrust reads the keys verify trusts: --keyring's, for every name, or
// a trust store's (--trust-dir), one of the two.
func loadTrust(c *cli.Context) (*sign.Trust, error) {
	keyrings, dir := c.StringSlice("keyring"), c.String("trust-dir")
	if (len(keyrings) == 0) == (dir == "") {
		return nil, usagef("say whom to trust: --keyring PUB.asc (repeatable) or --trust-dir DIR, one of the two")
	}
	if dir != "" {
		return sign.LoadTrustDir(dir)
	}
	trust := sign.NewTrust()
	for _, k := range keyrings {
		data, err := readKeyFile(k)
		if err != nil {
			return nil, &sign.KeyError{Msg: fmt.Sprintf("reading keyring: %v", err)}
		}
		key, err := sign.ReadKey(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("keyring %s: %w", k, err)
		}
		trust.AddRoot(key)
	}
	return trust, nil
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
			data, err := readKeyFile(c.Args().First())
			if err != nil {
				return &sign.KeyError{Msg: err.Error()}
			}
			key, err := sign.ReadKey(bytes.NewReader(data))
			if err != nil {
				return err
			}
			if (c.String("prefix") == "") == !c.Bool("root") {
				return usagef("say what the key is trusted for: --prefix example.com/app, or --root for every name (one of the two)")
			}
			path, err := sign.WriteTrust(c.String("trust-dir"), c.String("prefix"), c.Bool("root"), key)
			if err != nil {
				return err // a bad prefix exits 2, an unwritable store 1
			}
			fmt.Fprintln(c.App.Writer, path)
			fmt.Fprintf(c.App.ErrWriter, "trusted %s (%s)\n", sign.Fingerprint(key), sign.UserID(key))
			return nil
		},
	}
}
