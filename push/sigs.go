package push

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"

	"github.com/nix2aci/nix2aci/internal/safeio"
	"github.com/nix2aci/nix2aci/ocisign"
)

// settleSignatures returns the signatures o.SigStore is to hold for im
// under dest's repository once pushed: those it holds already (other
// tags' of the same manifest, other signers'), less any of o.Key's for
// dest, which a new one replaces, plus the new one (with o.Key) or those
// of o.SignaturesFrom that name dest (without). Without a key and with no
// signature naming dest, it is a *MissingSignatureError.
func settleSignatures(im *Image, dest ocisign.Reference, o Options, res *Result) ([][]byte, error) {
	existing, err := readTree(o.SigStore, dest, im.Digest)
	if err != nil {
		return nil, err
	}
	var out [][]byte
	add := func(s []byte) {
		for _, have := range out {
			if bytes.Equal(have, s) {
				return
			}
		}
		out = append(out, s)
	}
	if o.Key != nil {
		now := time.Now()
		if err := ocisign.CheckSigningKey(o.Key, now); err != nil {
			return nil, err
		}
		payload, err := ocisign.Payload(dest.String(), im.Digest, o.Creator, now)
		if err != nil {
			return nil, err
		}
		var sig bytes.Buffer
		if err := ocisign.SignAt(&sig, o.Key, payload, now); err != nil {
			return nil, err
		}
		ours := openpgp.EntityList{o.Key}
		for _, s := range existing {
			if _, err := ocisign.Verify(s, ours, im.manifest, dest.String()); err == nil {
				continue // replaced by the new one
			}
			add(s)
		}
		add(sig.Bytes())
		res.Signed = true
	} else {
		for _, s := range existing {
			add(s)
		}
		var others []string
		for _, tree := range o.SignaturesFrom {
			sigs, err := readTree(tree, dest, im.Digest)
			if err != nil {
				return nil, err
			}
			// A signature naming dest is kept under dest's repository
			// path in any tree: the signatures there for other tags
			// are named in the error below.
			for _, s := range sigs {
				c, err := ocisign.ReadClaim(s)
				if err != nil || c.ManifestDigest != im.Digest {
					continue
				}
				if sameRef(c.Reference, dest) {
					add(s)
				} else {
					others = append(others, c.Reference)
				}
			}
		}
		named := 0
		for _, s := range out {
			if c, err := ocisign.ReadClaim(s); err == nil && c.ManifestDigest == im.Digest && sameRef(c.Reference, dest) {
				named++
			}
		}
		if named == 0 {
			msg := fmt.Sprintf("no signature names %s as %s, and clients accept only one for the name they pull: sign it as it is pushed with --key FILE (or the key in NIX2ACI_SIGNING_KEY)", im.Digest, dest)
			if len(others) > 0 {
				msg += fmt.Sprintf("; the image's signatures name %s", strings.Join(others, ", "))
			}
			msg += ", or push without --sigstore to push it unsigned"
			return nil, &MissingSignatureError{Msg: msg}
		}
	}
	if len(out) > ocisign.MaxLookasideSignatures {
		return nil, fmt.Errorf("%s would hold %d signatures for %s, more than the %d kept: remove old ones from %s", safeio.Quote(o.SigStore), len(out), im.Digest, ocisign.MaxLookasideSignatures, safeio.Quote(o.SigStore))
	}
	return out, nil
}

// readTree reads the signatures the lookaside tree at root holds for
// digest under dest's repository; none if root does not exist.
func readTree(root string, dest ocisign.Reference, digest string) ([][]byte, error) {
	if _, err := os.Stat(root); errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	sigs, err := ocisign.ReadLookasideRepo(root, dest.Path, digest)
	if err != nil {
		return nil, fmt.Errorf("reading signatures: %w", err)
	}
	return sigs, nil
}
