package pipeline

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nix2aci/nix2aci/aci"
	"github.com/nix2aci/nix2aci/internal/safeio"
	"github.com/nix2aci/nix2aci/manifest"
	"github.com/nix2aci/nix2aci/nixstore"
	"github.com/nix2aci/nix2aci/oci"
	"github.com/nix2aci/nix2aci/pkgs"
)

// An OCI build (Request.Format oci, oci-archive or docker-archive) makes
// the same plan as an ACI build and writes each of its images as one
// layer of an OCI image layout in the staging directory (writeLayer); the
// target's image is then the layers of its dependency tree in rendering
// order with its own on top, and a config made from its manifest
// (finishOCI). Layers are not reused from the output directory: each
// build's layout holds all of its blobs, and the fragment cache makes
// writing them again cheap; an OCI base's layers are linked in unread
// (ocibase.go), and so are the layers a blob store the request names
// holds (Request.ReuseBlobs, ocireuse.go).

// isOCI reports whether the build writes an OCI image.
func (b *build) isOCI() bool { return b.Format != "" && b.Format != oci.ACI }

// checkOCI refuses what an OCI build cannot do (yet).
func (b *build) checkOCI() error {
	f, err := oci.ParseFormat(orDefault(b.Format, oci.ACI))
	if err != nil {
		return &UsageError{err.Error()}
	}
	b.Format = f
	if !b.isOCI() {
		return nil
	}
	if _, err := oci.LayerMediaType(b.Compression); err != nil {
		return &UsageError{err.Error()}
	}
	switch {
	case b.Signer != nil:
		return &UsageError{"nix2aci build signs ACIs only, not --format " + b.Format + " images: build without --sign"}
	case b.GroupOnly != "" && b.Format != oci.LayoutFormat:
		return &UsageError{"--layer-group writes a base that --base reads as an image layout directory: build it with --format oci, not " + b.Format}
	case b.Describe != "":
		return &UsageError{"--describe writes an ACI layer group's description; an OCI base says what it holds in its manifest: build without --describe"}
	}
	return nil
}

// ociNames names the target's OCI output after its ACI's stem.
func (b *build) ociNames(names fileNames) fileNames {
	names.image = names.base + oci.Extension(b.Format)
	return names
}

// beginOCI makes the image layout in the staging directory: the output
// itself for --format oci, a scratch directory an archive is made of
// otherwise.
func (b *build) beginOCI(names fileNames) error {
	dir := b.st.Path(names.image)
	if b.Format != oci.LayoutFormat || b.GroupOnly != "" { // a group's name is known once it is written
		dir = b.st.Path("." + names.base + ".layout")
	}
	var err error
	if b.layout, err = oci.Create(dir); err != nil {
		return fmt.Errorf("creating the image layout %s: %w", b.st.Final(names.image), err)
	}
	return nil
}

// writeLayer writes im as one layer blob of the layout, or links in the
// blob of it the request's blob store holds (reuseLayer). A group's version
// is named, as an ACI group's is, by its store paths and what it lies on:
// the base's image ID and the DiffIDs of the layers it depends on.
func (b *build) writeLayer(ctx context.Context, plan *Plan, im *PlanImage, w *written, all map[*PlanImage]*written) error {
	var paths []nixstore.PathInfo
	if im.Content.Closure != nil {
		paths = im.Content.Closure.Paths
	}
	name := im.Manifest.Name.String()
	version, _ := im.Manifest.Labels.Get("version")
	if im.VersionFromContents {
		var below []string
		if im.OnBase {
			below = append(below, plan.Base.ImageID)
		}
		for _, d := range im.DependsOn {
			below = append(below, all[d].layer.DiffID.String())
		}
		version = contentVersion(paths, below)
		if err := manifest.SetLabel(im.Manifest, "version", version); err != nil {
			return err
		}
	}
	created := im.Created
	if created.IsZero() {
		created = time.Unix(0, 0)
	}
	inputs := b.reusableInputs(im, created, paths)
	if layer, ok := b.reuseLayer(inputs); ok {
		b.madeLayer(inputs, layer)
		w.res = &aci.Result{DiffID: layer.DiffID.String(), Digest: layer.Digest.String(), Size: layer.Size, StorePaths: len(paths)}
		w.layer = layer
		w.Image = Image{Name: name, Version: version, ImageID: w.res.DiffID, Digest: w.res.Digest, Size: layer.Size, StorePaths: len(paths), Reused: true}
		return nil
	}
	opts := b.writeOptions(name, created)
	layer, res, err := b.layout.WriteLayer(ctx, im.Content, b.Compression, opts...)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("build of %s interrupted; nothing was written: %w", name, context.Cause(ctx))
		}
		return fmt.Errorf("writing the layer of %s: %w", name, err)
	}
	b.madeLayer(inputs, layer)
	w.res = res
	w.layer = layer
	w.Image = Image{Name: name, Version: version, ImageID: res.DiffID, Digest: res.Digest, Size: res.Size, StorePaths: len(paths)}
	return nil
}

// finishOCI writes the target's image from its layers (bottom first, its
// own last) and config, the archive when one is asked for, and the
// .podman-args of a thin image, and says what the build made.
func (b *build) finishOCI(ctx context.Context, t *pkgs.Target, in *inputs, plan *Plan, images map[*PlanImage]*written, names *fileNames) (*Result, error) {
	im := in.app.Manifest
	created := b.Created
	if created.IsZero() {
		created = time.Unix(0, 0)
	}
	group := b.GroupOnly != ""
	var cfg *ocispec.Image
	var err error
	if group {
		cfg, err = groupConfig(plan)
	} else {
		cfg, err = oci.Config(im, created)
	}
	if err != nil {
		return nil, err
	}
	app := images[plan.Images[len(plan.Images)-1]]
	out := &Result{Name: im.Name.String(), Kind: b.Kind, Offline: t.Offline, Format: b.Format}
	layers, held, err := b.baseLayers(cfg)
	if err != nil {
		return nil, err
	}
	if b.base != nil {
		out.Base = []string{b.base.File}
	}
	for _, d := range plan.renderOrder() {
		w := images[d]
		layers = append(layers, w.layer)
		out.CachedPaths += w.res.CachedPaths
		l := w.Image
		out.Layers = append(out.Layers, l)
	}
	layers = append(layers, app.layer)
	out.CachedPaths += app.res.CachedPaths
	for _, cf := range app.res.Conflicts {
		b.Warn(fmt.Sprintf("two packages provide %s", cf))
	}
	out.Version, _ = im.Labels.Get("version")
	out.OS, _ = im.Labels.Get("os")
	out.Arch, _ = im.Labels.Get("arch")
	var annotations map[string]string
	if group {
		gm := plan.Images[len(plan.Images)-1].Manifest
		out.Name, out.Kind = gm.Name.String(), manifest.LayerKind
		out.Version, _ = gm.Labels.Get("version")
		if annotations, err = b.groupAnnotations(plan, held, len(layers), names); err != nil {
			return nil, err
		}
	}
	tag := oci.Tag(out.Version)
	ref := tag
	if b.Format == oci.Archive {
		ref = oci.RepoName(out.Name) + ":" + tag // what podman load names it
	}
	written, err := b.layout.WriteAnnotatedImage(cfg, layers, tag, ref, annotations)
	if err != nil {
		return nil, fmt.Errorf("writing the image layout: %w", err)
	}
	if group {
		if err := os.Rename(b.layout.Dir(), b.st.Path(names.image)); err != nil {
			return nil, fmt.Errorf("writing the image layout %s: %w", b.st.Final(names.image), err)
		}
	}
	switch b.Format {
	case oci.Archive:
		err = b.writeArchive(names.image, b.layout.WriteArchive)
	case oci.DockerArchive:
		err = b.writeArchive(names.image, func(w io.Writer) error {
			return b.layout.WriteDockerArchive(w, oci.RepoName(out.Name)+":"+written.Tag)
		})
	}
	if err != nil {
		return nil, err
	}
	b.add(names.image, "")
	podmanArgs, err := b.argsFile(names.base+".podman-args", func() (string, error) {
		args, err := oci.PodmanArgs(in.app.Closure.StorePaths())
		if err != nil {
			return "", &UsageError{err.Error()}
		}
		return args, nil
	})
	if err != nil {
		return nil, err
	}
	out.PodmanArgs = podmanArgs
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("build of %s interrupted; nothing was written: %w", names.image, context.Cause(ctx))
	}
	out.OCI = b.st.Final(names.image)
	out.Tag = written.Tag
	out.Digest = written.Manifest.Digest.String()
	out.ImageID = written.Config.Digest.String()
	out.Size = written.Size
	out.StorePaths = app.StorePaths
	out.Conflicts = app.res.Conflicts
	out.blobs = b.records()
	return out, nil
}

// writeArchive writes the staged file name with write, atomically.
func (b *build) writeArchive(name string, write func(io.Writer) error) error {
	if err := safeio.WriteAtomic(b.st.Path(name), 0o644, write); err != nil {
		return fmt.Errorf("writing %s: %w", safeio.Quote(b.st.Final(name)), err)
	}
	return nil
}
