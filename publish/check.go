package publish

import (
	"context"
	"crypto/sha512"
	"fmt"
	"io"
	"os"
	"path"

	"github.com/appc/spec/schema"

	"github.com/nix2aci/nix2aci/aci"
	"github.com/nix2aci/nix2aci/internal/safeio"
	"github.com/nix2aci/nix2aci/pipeline"
	"github.com/nix2aci/nix2aci/sign"
)

// What a publish refuses, it refuses before it moves anything into
// place: each image, read once (checkImage); the images of the run
// against each other (checkDuplicates) and against what the tree serves
// (checkReplacements; their dependencies: see deps.go).

// checkImage validates one image (and with no key to sign with, its
// signature: one reading either way) and says where it is published.
func checkImage(ctx context.Context, img string, signing bool, base, dir string, trust *sign.Trust, fp string) (*job, error) {
	var im *schema.ImageManifest
	var id, asc string
	var sum, ascSum []byte
	if signing {
		info, s, err := inspectSum(ctx, img)
		if err != nil {
			return nil, err
		}
		im, id, sum = info.Manifest, info.ImageID, s
	} else {
		asc = img + ".asc"
		if _, err := os.Lstat(asc); err != nil {
			return nil, fmt.Errorf("%s is not signed (%v): sign it (nix2aci sign, build --sign), or publish with --key", img, err)
		}
		v, s, as, err := verifySum(ctx, img, asc, trust)
		if err != nil {
			if aci.IsInvalid(err) {
				return nil, err
			}
			return nil, fmt.Errorf("%s: its signature does not verify with the published key %s: %w", img, fp, err)
		}
		im, id, sum, ascSum = v.Manifest, v.ImageID, s, as
	}
	name := im.Name.String()
	labels := map[string]string{}
	for _, k := range []string{"version", "os", "arch"} {
		v, _ := im.Labels.Get(k)
		if v == "" {
			return nil, &UsageError{fmt.Sprintf("%s has no %s label, which discovery needs to name its file; rebuild it with one", img, k)}
		}
		if !literal(v) {
			return nil, &UsageError{fmt.Sprintf("%s cannot be published: its %s label %s goes into its URL and file name as it is, and %s; rebuild it with another %s (--label %s=..., or a plain version in the recipe)", img, k, safeio.QuoteAlways(v), literalRule, k, k)}
		}
		labels[k] = v
	}
	rel, u, ok := imageFile(base, dir, name, labels["version"], labels["os"], labels["arch"])
	if !ok {
		return nil, &UsageError{fmt.Sprintf("%s cannot be published: its path %s in the tree would not be one literal path (%s; no component may start with a dot or be longer than %d bytes)", img, safeio.QuoteAlways(path.Join(dir, name)+"-"+labels["version"]+"-"+labels["os"]+"-"+labels["arch"]+".aci"), literalRule, maxSegment)}
	}
	p := Published{Name: name, Version: labels["version"], OS: labels["os"], Arch: labels["arch"], ImageID: id, Path: rel, URL: u}
	for _, d := range im.Dependencies {
		if d.ImageID != nil {
			p.Depends = append(p.Depends, d.ImageID.String())
		}
	}
	return &job{src: img, asc: asc, p: p, deps: im.Dependencies, sum: sum, ascSum: ascSum}, nil
}

// inspectSum validates the image at img (aci.Inspect) and returns the
// SHA-512 of its file's bytes, read once.
func inspectSum(ctx context.Context, img string) (*aci.Info, []byte, error) {
	f, err := pipeline.OpenImage(img)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	h := sha512.New()
	r := io.TeeReader(safeio.WithContext(ctx, f), h)
	info, err := aci.Inspect(r)
	if err == nil {
		_, err = io.Copy(io.Discard, r)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("inspecting %s: %w", img, err)
	}
	return info, h.Sum(nil), nil
}

// verifySum checks the signature asc of the image at img with trust,
// reading the whole image, and returns the SHA-512 of
// both files' bytes, each read once.
func verifySum(ctx context.Context, img, asc string, trust *sign.Trust) (*sign.Verified, []byte, []byte, error) {
	f, err := pipeline.OpenImage(img)
	if err != nil {
		return nil, nil, nil, err
	}
	defer f.Close()
	sig, err := safeio.OpenRegular(asc)
	if err != nil {
		return nil, nil, nil, err
	}
	defer sig.Close()
	hi, hs := sha512.New(), sha512.New()
	ri, rs := io.TeeReader(safeio.WithContext(ctx, f), hi), io.TeeReader(sig, hs)
	v, err := sign.VerifyWith(ri, rs, trust, sign.VerifyOptions{Full: true})
	if err != nil {
		return nil, nil, nil, err
	}
	// What the verification left unread (nothing, as it reads both to
	// their ends) is hashed too: the sums are of the whole files.
	if _, err := io.Copy(io.Discard, ri); err != nil {
		return nil, nil, nil, err
	}
	if _, err := io.Copy(io.Discard, io.LimitReader(rs, 1<<20)); err != nil {
		return nil, nil, nil, err
	}
	return v, hi.Sum(nil), hs.Sum(nil), nil
}

// checkDuplicates refuses two images of one run at one path.
func checkDuplicates(jobs []*job) error {
	seen := map[string]Published{}
	for _, j := range jobs {
		p := j.p
		if q, ok := seen[p.Path]; ok && describe(q) != describe(p) {
			return &UsageError{fmt.Sprintf("two of the images, %s and %s, would both be published as %s (the template %s): give one of them another version", describe(q), describe(p), p.Path, fileTemplate)}
		} else if ok && q.ImageID != p.ImageID {
			return &UsageError{fmt.Sprintf("two of the images are %s, with image IDs %s and %s: publish one of them, or give the other a new version", describe(p), q.ImageID, p.ImageID)}
		}
		seen[p.Path] = p
	}
	return nil
}

// checkReplacements refuses to put an image where the tree holds one of
// the same name, version, os and arch (the same path) but another image
// ID, unless replace; and even then when an image in the tree that stays
// pins the old one by ID: rkt fetch of that one would then fail. What is
// at the path is read from the file, and the pins from the manifests of
// every image in the tree. A name whose file the template puts where
// another one's is refused outright.
func checkReplacements(ctx context.Context, root *os.Root, jobs []*job, s *site, replace bool) error {
	republished := map[string]bool{}
	for _, j := range jobs {
		republished[j.p.Path] = true
	}
	for _, j := range jobs {
		p := j.p
		if _, ok := s.found[p.Path]; !ok {
			// Not listed under this name, but maybe there under another
			// (a file system that ignores case).
			if fi, err := root.Lstat(p.Path); err != nil || !fi.Mode().IsRegular() {
				continue
			}
		}
		info, err := s.fileInfo(ctx, root, p.Path)
		if err != nil {
			if ctx.Err() != nil {
				return interruptedReading(ctx)
			}
			return fmt.Errorf("the site holds %s, which is not a valid image (%v): remove it, or publish into another site", safeio.Quote(p.Path), err)
		}
		old := Published{Name: info.Manifest.Name.String(), ImageID: info.ImageID, Path: p.Path}
		old.Version, _ = info.Manifest.Labels.Get("version")
		old.OS, _ = info.Manifest.Labels.Get("os")
		old.Arch, _ = info.Manifest.Labels.Get("arch")
		if old.Name != p.Name || old.Version != p.Version || old.OS != p.OS || old.Arch != p.Arch {
			return &UsageError{fmt.Sprintf("%s would be published as %s, where the site serves %s: the template %s gives both that file; give one of them another version", describe(p), p.Path, describe(old), fileTemplate)}
		}
		if old.ImageID == p.ImageID {
			continue
		}
		if !replace {
			return &UsageError{fmt.Sprintf("%s is published already with image ID %s, and this one's is %s: rkt fetch %s:%s would get other bytes than before. Publish it as a new version, or pass --replace", describe(p), old.ImageID, p.ImageID, p.Name, safeio.Quote(p.Version))}
		}
		for _, qp := range sortedKeys(s.found) {
			q := s.found[qp]
			if republished[qp] || q.err != nil || !contains(q.pins, old.ImageID) {
				continue
			}
			return &UsageError{fmt.Sprintf("%s pins %s by its image ID %s: replacing that would break rkt fetch of %s. Publish %s again too, built on the new one, or publish the new one as a new version", describe(q.published(qp)), describe(p), old.ImageID, q.name, q.name)}
		}
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
