package pipeline

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nix2aci/nix2aci/internal/safeio"
	"github.com/nix2aci/nix2aci/manifest"
	"github.com/nix2aci/nix2aci/oci"
)

// An OCI base is an image layout a group-only OCI build wrote
// (--layer-group NAME --format oci): its layers are the group's chain,
// lowest first, and its manifest's annotations say, as a base ACI's do,
// which store paths those layers hold (StorePathsAnnotation) and how many
// layers they are (ImagesAnnotation), with its name and version under the
// standard title and version keys. An app built on it (--base DIR
// --format oci) reads only its index, manifest and config: its layers
// become the app's lowest layers, the same blobs linked into the app's
// layout, and the app's plan leaves out every store path they hold.

// isLayoutDir reports whether path is a directory holding an OCI image
// layout.
func isLayoutDir(path string) bool {
	fi, err := os.Stat(filepath.Join(path, ocispec.ImageLayoutFile))
	return err == nil && fi.Mode().IsRegular()
}

// loadOCIBase reads the base of an OCI build from its image layout dir.
func loadOCIBase(dir string) (*Base, error) {
	if !isLayoutDir(dir) {
		return nil, &UsageError{fmt.Sprintf("--base %s is not an OCI image layout directory: with --format oci, build on the layout that nix2aci build PATH… --layer-group NAME --format oci wrote", safeio.Quote(dir))}
	}
	s, err := oci.ReadStored(dir)
	if err != nil {
		return nil, &BaseError{fmt.Sprintf("the base %s: %v", safeio.Quote(dir), err)}
	}
	name := s.Annotations[ocispec.AnnotationTitle]
	if name == "" {
		name = dir
	}
	held, ok := s.Annotations[StorePathsAnnotation]
	if !ok {
		return nil, &BaseError{fmt.Sprintf("the base %s does not say which store paths it holds (no %s annotation in its manifest), so an app cannot be built on it without its bytes: use a base that nix2aci build --layer-group NAME --format oci wrote, or build without --base", safeio.Quote(dir), StorePathsAnnotation)}
	}
	b := &Base{File: dir, Name: name, ImageID: s.ConfigDesc.Digest.String(), Labels: map[string]string{"version": s.Annotations[ocispec.AnnotationVersion]},
		Paths: map[string]bool{}, Images: max(1, len(s.Layers)), layout: s}
	if err := b.readHeld(held); err != nil {
		return nil, err
	}
	return b, nil
}

// baseLayers links the layers of the build's OCI base, if it has one,
// into its layout and returns them, with the store paths they hold.
func (b *build) baseLayers(cfg *ocispec.Image) ([]oci.Layer, []string, error) {
	if b.base == nil {
		return nil, nil, nil
	}
	s := b.base.layout
	if s == nil {
		return nil, nil, fmt.Errorf("internal error: the base %s of an OCI build is no image layout", b.base.Name)
	}
	if got, want := s.Config.Platform, cfg.Platform; got.OS != want.OS || got.Architecture != want.Architecture || got.Variant != want.Variant {
		return nil, nil, &BaseError{fmt.Sprintf("the base %s is for %s/%s, the app for %s/%s: build on a base of the app's system", safeio.Quote(b.base.File),
			safeio.Quote(got.OS), safeio.Quote(got.Architecture), want.OS, want.Architecture)}
	}
	for _, ly := range s.Layers {
		if err := b.layout.LinkLayer(s, ly); err != nil {
			return nil, nil, fmt.Errorf("the base %s: its layer %s: %w (build the base again)", safeio.Quote(b.base.File), ly.Digest, err)
		}
	}
	held := make([]string, 0, len(b.base.Paths))
	for p := range b.base.Paths {
		held = append(held, p)
	}
	return s.Layers, held, nil
}

// groupConfig is the config of a group-only OCI build: a base runs
// nothing on its own.
func groupConfig(plan *Plan) (*ocispec.Image, error) {
	gm := plan.Images[len(plan.Images)-1].Manifest
	osName, _ := gm.Labels.Get("os")
	arch, _ := gm.Labels.Get("arch")
	return oci.BaseConfig(osName, arch, time.Unix(0, 0))
}

// groupAnnotations are the manifest annotations that make a group-only
// OCI build's image a base: the store paths it holds (held, those of the
// base it lies on, and the plan's) and its layers' count, name and
// version. It also names the image as the group's ACI is named, with .oci
// in place of .aci; the layout, written in a scratch directory
// (beginOCI), is moved there once complete.
func (b *build) groupAnnotations(plan *Plan, held []string, layers int, names *fileNames) (map[string]string, error) {
	gm := plan.Images[len(plan.Images)-1].Manifest
	version, _ := gm.Labels.Get("version")
	for _, im := range plan.Images {
		for _, p := range im.Content.Closure.Paths {
			held = append(held, p.Path)
		}
	}
	sort.Strings(held)
	file, err := manifest.FlatFileName(gm)
	if err != nil {
		return nil, err
	}
	names.base = strings.TrimSuffix(file, ".aci")
	names.image = names.base + oci.Extension(b.Format)
	return map[string]string{
		StorePathsAnnotation:      strings.Join(held, "\n"),
		ImagesAnnotation:          strconv.Itoa(layers),
		ocispec.AnnotationTitle:   gm.Name.String(),
		ocispec.AnnotationVersion: version,
	}, nil
}
