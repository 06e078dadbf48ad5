package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/urfave/cli/v2"

	"github.com/nix2aci/nix2aci/internal/safeio"
	"github.com/nix2aci/nix2aci/oci"
	"github.com/nix2aci/nix2aci/ocisign"
	"github.com/nix2aci/nix2aci/pipeline"
	"github.com/nix2aci/nix2aci/sign"
)

// An OCI image is signed with containers' simple signing (package
// ocisign): one signature per identity, a docker reference such as
// registry.example.com/app:1.0, each naming the manifest by its digest.
// The signatures go into a lookaside tree, "sigstore" beside the image
// (in a build's --out), which podman and skopeo read when registries.d
// names it: lookaside: file:///ABS/OUT/sigstore.

// sigstoreDir is the lookaside tree's name in a build's output directory.
const sigstoreDir = "sigstore"

// identityFlag names what an OCI image is signed as.
func identityFlag() cli.Flag {
	return &cli.StringSliceFlag{Name: "identity", Usage: "sign an OCI image as the docker reference `REF`, e.g. localhost:5000/app:1.0 (repeatable; default: the image's name and tag, e.g. example.com/app:1.0)"}
}

// sigstoreFlag names the lookaside tree of sign and verify.
func sigstoreFlag() cli.Flag {
	return &cli.StringFlag{Name: "sigstore", Usage: "an OCI image's lookaside tree of signatures `DIR` (default: sigstore beside the image)"}
}

// isOCIPath reports whether path names an OCI image, not an ACI: an image
// layout directory, or an .oci.tar or .docker.tar file.
func isOCIPath(path string) bool {
	if strings.HasSuffix(path, oci.Extension(oci.Archive)) || strings.HasSuffix(path, oci.Extension(oci.DockerArchive)) {
		return true
	}
	fi, err := os.Stat(path)
	return err == nil && fi.IsDir()
}

// readOCI reads and checks the OCI image at path (see oci.ReadLayout);
// names choose its image when its index.json has several. A
// docker-archive is refused: it holds no manifest a signature could name.
func readOCI(path string, names ...string) (*oci.Checked, error) {
	switch {
	case strings.HasSuffix(path, oci.Extension(oci.DockerArchive)):
		return nil, usagef("%s is a docker-archive, which holds no manifest for a signature to name (a push makes one of its own): build with --format oci or oci-archive to sign and verify", safeio.Quote(path))
	case strings.HasSuffix(path, oci.Extension(oci.Archive)):
		return oci.ReadArchive(path, names...)
	}
	return oci.ReadLayout(path, names...)
}

// defaultSigstore is the lookaside tree beside the image at path (beside
// the file a link such as result.oci points at).
func defaultSigstore(path string) string {
	if real, err := filepath.EvalSymlinks(path); err == nil {
		path = real
	}
	return filepath.Join(filepath.Dir(filepath.Clean(path)), sigstoreDir)
}

// parseIdentities checks the --identity references and returns them in
// their explicit form, each once.
func parseIdentities(given []string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, s := range given {
		r, err := ocisign.ParseReference(s)
		if err != nil {
			return nil, fmt.Errorf("--identity: %w", err)
		}
		if r.Tag == "" && r.Digest == "" {
			return nil, usagef("--identity %s names no tag, and a signature for a bare name matches no pull: give one, e.g. --identity %s:1.0", safeio.QuoteAlways(s), r.Name())
		}
		if !seen[r.String()] {
			seen[r.String()] = true
			out = append(out, r.String())
		}
	}
	return out, nil
}

// defaultIdentity is the identity of an image named name (an AC
// Identifier) tagged tag, or a usage error naming --identity.
func defaultIdentity(name, tag string) (string, error) {
	r, err := ocisign.ParseReference(oci.RepoName(name) + ":" + tag)
	if err != nil {
		return "", usagef("the image's name %s is not a docker reference, so it cannot be the identity signed (%v): name it with --identity REF, e.g. --identity registry.example.com/app:%s", safeio.QuoteAlways(name), err, tag)
	}
	return r.String(), nil
}

// loadOCISigningKey loads the signing key and checks that podman and
// skopeo can check its signatures (an RSA primary key that signs).
func loadOCISigningKey(c *cli.Context) (*openpgp.Entity, error) {
	key, err := loadSigningKey(c)
	if err != nil {
		return nil, err
	}
	if err := ocisign.CheckSigningKey(key, time.Now()); err != nil {
		return nil, fmt.Errorf("signing an OCI image: %w", err)
	}
	return key, nil
}

// signOCI signs img as each identity and writes the signatures into the
// lookaside tree sigstore, those of one repository together (they share
// its directory there, whatever the registry). Signatures already there
// for other identities of the same manifest stay; those for an identity
// signed now are replaced.
func signOCI(key *openpgp.Entity, img *oci.Checked, identities []string, sigstore string) error {
	now := time.Now()
	var repos []string
	sigs := map[string][][]byte{}
	first := map[string]string{}
	signing := map[string]bool{}
	for _, id := range identities {
		payload, err := ocisign.Payload(id, img.Digest, "nix2aci "+version(), now)
		if err != nil {
			return err
		}
		var sig bytes.Buffer
		if err := ocisign.SignAt(&sig, key, payload, now); err != nil {
			return err
		}
		r, _ := ocisign.ParseReference(id)
		if _, ok := sigs[r.Path]; !ok {
			repos = append(repos, r.Path)
			first[r.Path] = id
		}
		sigs[r.Path] = append(sigs[r.Path], sig.Bytes())
		signing[r.String()] = true
	}
	unlock, err := lockSigstore(sigstore)
	if err != nil {
		return err
	}
	defer unlock()
	for _, repo := range repos {
		old, err := ocisign.ReadLookaside(sigstore, first[repo], img.Digest)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("reading the signatures already in %s: %w", safeio.Quote(sigstore), err)
		}
		var kept [][]byte
		for _, o := range old {
			claim, err := ocisign.UnverifiedClaim(o)
			if err != nil || claim.ManifestDigest != img.Digest {
				continue // not one of this image's: dropped
			}
			if r, err := ocisign.ParseReference(claim.Reference); err == nil && !signing[r.String()] {
				kept = append(kept, o)
			}
		}
		all := append(kept, sigs[repo]...)
		if len(all) > ocisign.MaxLookasideSignatures {
			return fmt.Errorf("%s would hold %d signatures of %s, more than the %d kept: remove some from %s", safeio.Quote(sigstore), len(all), img.Digest, ocisign.MaxLookasideSignatures, safeio.Quote(sigstore))
		}
		if err := ocisign.WriteLookaside(sigstore, first[repo], img.Digest, all...); err != nil {
			return fmt.Errorf("writing the signatures of %s: %w", first[repo], err)
		}
	}
	return nil
}

// lockSigstore makes the lookaside tree dir if needed and holds an
// exclusive flock on it until unlock is called, so that two signers
// merging signatures of one image never drop each other's.
func lockSigstore(dir string) (unlock func(), err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("making the lookaside tree: %w", err)
	}
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("locking %s: %w", safeio.Quote(dir), err)
	}
	return func() { f.Close() }, nil
}

// ociBuildSigning is what build --sign needs to sign an OCI image once it
// is written.
type ociBuildSigning struct {
	key        *openpgp.Entity
	identities []string // the given ones; none: the image's name and tag
	// Once signed: the lookaside tree and the identities signed.
	sigstore string
	signed   []string
}

// buildOCISigning loads the key and checks the identities before an OCI
// build, so that a key or name that cannot sign fails before the long
// part; nil without --sign.
func buildOCISigning(c *cli.Context, o *buildOptions) (*ociBuildSigning, error) {
	if !c.Bool("sign") {
		switch {
		case c.IsSet("identity"):
			return nil, usagef("--identity names what an image is signed as: add --sign")
		case c.String("key") != "":
			return nil, usagef("--key is given without --sign: add --sign to sign the image")
		}
		return nil, nil
	}
	if o.Format == oci.DockerArchive {
		return nil, usagef("--sign: a docker-archive holds no manifest for a signature to name (a push makes one of its own): build with --format oci or oci-archive to sign")
	}
	ids, err := parseIdentities(c.StringSlice("identity"))
	if err != nil {
		return nil, err
	}
	if len(ids) == 0 && o.Name != "" {
		if _, err := defaultIdentity(o.Name, "latest"); err != nil {
			return nil, err
		}
	}
	key, err := loadOCISigningKey(c)
	if err != nil {
		return nil, err
	}
	return &ociBuildSigning{key: key, identities: ids}, nil
}

// signer returns the function that signs the image a build wrote, read
// back and checked in the build's staging directory, into the lookaside
// tree in its output directory, and records there the tree and the
// identities signed. An image name with no registry host is Docker
// Hub's, as podman reads it, which warn says.
func (s *ociBuildSigning) signer(outDir string, warn func(string)) func(ctx context.Context, staged string, out *pipeline.Result) error {
	return func(ctx context.Context, staged string, out *pipeline.Result) error {
		ids := s.identities
		if len(ids) == 0 {
			id, err := defaultIdentity(out.Name, out.Tag)
			if err != nil {
				return fmt.Errorf("%w; nothing was written", err)
			}
			if strings.HasPrefix(id, "docker.io/") && !strings.HasPrefix(out.Name, "docker.io/") {
				warn(fmt.Sprintf("the image's name %s names no registry, so it is signed as %s, on Docker Hub; give --name HOST/NAME or --identity REF to sign it for your registry", out.Name, id))
			}
			ids = []string{id}
		}
		img, err := readOCI(staged, out.Tag)
		if err != nil {
			return err
		}
		if img.Digest != out.Digest {
			return fmt.Errorf("%s changed after it was written (its manifest is %s, not %s); not signing it", out.OCI, img.Digest, out.Digest)
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("build of %s interrupted; nothing was written: %w", out.OCI, context.Cause(ctx))
		}
		s.sigstore = filepath.Join(outDir, sigstoreDir)
		s.signed = ids
		return signOCI(s.key, img, ids, s.sigstore)
	}
}

// printSigned says where the signatures went and how podman finds them.
func printSigned(c *cli.Context, store string, ids []string) {
	abs, err := filepath.Abs(store)
	if err != nil {
		abs = store
	}
	fmt.Fprintf(c.App.ErrWriter, "signed as %s in %s (registries.d: lookaside: file://%s)\n", strings.Join(ids, ", "), store, abs)
}

// runSignOCI is sign for an OCI image: it signs the checked image as each
// --identity (default: the name index.json gives it, when that is a whole
// reference) into the lookaside tree.
func runSignOCI(c *cli.Context, path string) error {
	ids, err := parseIdentities(c.StringSlice("identity"))
	if err != nil {
		return err
	}
	var names []string
	for _, id := range ids {
		r, _ := ocisign.ParseReference(id)
		names = append(names, id, r.Tag)
	}
	img, err := readOCI(path, names...)
	if err != nil {
		return err
	}
	if len(ids) == 0 {
		id, ok := wholeReference(img.RefName)
		if !ok {
			return usagef("name the identity to sign %s as: --identity REF, e.g. --identity registry.example.com/app:%s (its index.json names it only %s)", path, tagOf(img.RefName), safeio.QuoteAlways(img.RefName))
		}
		ids = []string{id}
	}
	key, err := loadOCISigningKey(c)
	if err != nil {
		return err
	}
	store := c.String("sigstore")
	if store == "" {
		store = defaultSigstore(path)
	}
	if err := signOCI(key, img, ids, store); err != nil {
		return err
	}
	fmt.Fprintln(c.App.Writer, store)
	printSigned(c, store, ids)
	return nil
}

// wholeReference returns refName in its explicit form if it names a
// repository and a tag (an oci-archive's NAME:TAG), not a tag alone.
func wholeReference(refName string) (string, bool) {
	if !strings.Contains(refName, "/") {
		return "", false
	}
	r, err := ocisign.ParseReference(refName)
	if err != nil || r.Tag == "" && r.Digest == "" {
		return "", false
	}
	return r.String(), true
}

func tagOf(refName string) string {
	if i := strings.LastIndexByte(refName, ':'); i >= 0 && !strings.Contains(refName[i:], "/") {
		return refName[i+1:]
	}
	if refName == "" {
		return "TAG"
	}
	return refName
}

// runVerifyOCI is verify for an OCI image: every blob is checked against
// its digest, and one signature in the lookaside tree must be good, by
// the primary key of a trusted key, for the manifest's digest and the
// identity expected, the key trusted for the identity's repository
// (domain/path: the trust store's prefixes match it as they match an
// ACI's name).
func runVerifyOCI(c *cli.Context, image string) error {
	for _, f := range []string{"signature", "rkt-args", "full", "max-size", "deps", "deps-dir", "no-deps"} {
		if c.IsSet(f) {
			return usagef("--%s applies to ACIs; an OCI image's signatures are in its lookaside tree (--sigstore), and every blob of it is checked", f)
		}
	}
	trust, err := loadTrust(c)
	if err != nil {
		return err
	}
	identity := c.String("identity")
	var names []string
	if identity != "" {
		r, err := ocisign.ParseReference(identity)
		if err != nil {
			return fmt.Errorf("--identity: %w", err)
		}
		names = []string{identity, r.String(), r.Tag}
	}
	img, err := readOCI(image, names...)
	if err != nil {
		var ie *oci.InvalidError
		if errors.As(err, &ie) {
			return &sign.VerifyError{Reason: sign.ReasonInvalidImage, Msg: err.Error()}
		}
		return err
	}
	if identity == "" {
		id, ok := wholeReference(img.RefName)
		if !ok {
			return usagef("say which identity %s must be signed as: --identity REF, e.g. --identity registry.example.com/app:%s (its index.json names it only %s)", image, tagOf(img.RefName), safeio.QuoteAlways(img.RefName))
		}
		identity = id
	}
	ref, err := ocisign.ParseReference(identity)
	if err != nil {
		return fmt.Errorf("--identity: %w", err)
	}
	if ref.Digest != "" && ref.Digest != img.Digest {
		return &sign.VerifyError{Reason: sign.ReasonOtherImage, Msg: fmt.Sprintf("%s: its manifest is %s, not the %s that --identity names", image, img.Digest, ref.Digest)}
	}
	store := c.String("sigstore")
	if store == "" {
		store = defaultSigstore(image)
	}
	sigs, err := ocisign.ReadLookaside(store, identity, img.Digest)
	if errors.Is(err, fs.ErrNotExist) {
		sigs, err = nil, nil
	}
	if err != nil {
		return &sign.VerifyError{Reason: sign.ReasonMalformed, Msg: fmt.Sprintf("reading the signatures: %v", err)}
	}
	if len(sigs) == 0 {
		dir, _ := ocisign.LookasideDir(ref.Path, img.Digest)
		return &sign.VerifyError{Reason: sign.ReasonMissing, Msg: fmt.Sprintf("%s: no signature in %s for its manifest %s: sign it with nix2aci sign %s --identity %s --key KEY, or name the lookaside tree with --sigstore DIR", image, safeio.Quote(filepath.Join(store, dir)), img.Digest, image, ref.String())}
	}
	var failures []string
	var firstErr error
	for i, s := range sigs {
		v, err := ocisign.VerifyWith(s, trust.Keys(), img.Manifest, identity, ocisign.VerifyOptions{Identity: ocisign.MatchRepoDigestOrExact})
		if err == nil {
			as, ok := trust.TrustedFor(v.Fingerprint, ref.Name())
			if ok {
				return printVerifiedOCI(c, image, store, ref, img, v, as)
			}
			err = &sign.VerifyError{Reason: sign.ReasonUntrusted, Msg: fmt.Sprintf("the signature by %s (%s) is good, but that key is not trusted for %s: trust it for that name with nix2aci trust --prefix %s", v.Fingerprint, safeio.Quote(v.UserID), ref.Name(), ref.Name())}
		}
		if firstErr == nil {
			firstErr = err
		}
		failures = append(failures, fmt.Sprintf("signature-%d: %v", i+1, err))
	}
	if len(sigs) == 1 {
		return fmt.Errorf("%s as %s: %w", image, ref.String(), firstErr)
	}
	reason := sign.ReasonBadSignature
	var ve *sign.VerifyError
	if errors.As(firstErr, &ve) {
		reason = ve.Reason
	}
	return &sign.VerifyError{Reason: reason, Msg: fmt.Sprintf("%s as %s: none of its %d signatures passes: %s", image, ref.String(), len(sigs), strings.Join(failures, "; "))}
}

func printVerifiedOCI(c *cli.Context, image, store string, ref ocisign.Reference, img *oci.Checked, v *ocisign.Verified, trustedAs string) error {
	if c.Bool("json") {
		return printJSON(c.App.Writer, struct {
			Image     string `json:"image"`
			Sigstore  string `json:"sigstore"`
			Identity  string `json:"identity"`
			TrustedAs string `json:"trustedAs"`
			Layers    int    `json:"layers"`
			Size      int64  `json:"size"`
			*ocisign.Verified
		}{image, store, ref.String(), trustedAs, len(img.Layers), img.Size, v})
	}
	fmt.Fprintf(c.App.Writer, "good signature on %s (%s)\n", ref.String(), image)
	fmt.Fprintf(c.App.Writer, "  manifest %s; its config and %d %s match their digests (%d bytes)\n", img.Digest, len(img.Layers), plural(len(img.Layers), "layer", "layers"), img.Size)
	fmt.Fprintf(c.App.Writer, "  signed by %s, key %s, trusted as %s, at %s\n",
		safeio.Quote(v.UserID), v.Fingerprint, safeio.Quote(trustedAs), v.SignedAt.Format("2006-01-02 15:04:05Z"))
	return nil
}
