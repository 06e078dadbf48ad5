package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/appc/spec/schema"
	"github.com/appc/spec/schema/types"

	"github.com/nix2aci/nix2aci/aci"
	"github.com/nix2aci/nix2aci/fetch"
	"github.com/nix2aci/nix2aci/fragcache"
	"github.com/nix2aci/nix2aci/internal/safeio"
	"github.com/nix2aci/nix2aci/manifest"
	"github.com/nix2aci/nix2aci/nixstore"
)

// BaseError is a base image an app cannot be built on.
type BaseError struct{ Msg string }

func (e *BaseError) Error() string { return e.Msg }

// maxBasePaths bounds the store paths a base may say it holds.
const maxBasePaths = 100000

// LoadBase reads the base image in file: its manifest, which must say
// which store paths it holds (StorePathsAnnotation), and its image ID.
// The ID is taken from the layer index beside the file when an entry
// there is proven (its tag verifies under cache's key and the file is as
// recorded: the image was written by this key's holder); otherwise the
// whole archive is read, validated and hashed.
func LoadBase(ctx context.Context, file string, cache *fragcache.Cache) (*Base, error) {
	var near []string
	if isLayoutDir(file) {
		return nil, &BaseError{fmt.Sprintf("the base %s is an OCI image layout: build the app on it with --format oci, or give an ACI base", safeio.Quote(file))}
	}
	if fi, err := os.Stat(file); err == nil && fi.IsDir() {
		// A buildLayer output: its one image, and the files of the
		// images below it that its description names.
		d, err := readDescription(filepath.Join(file, DescriptionFile))
		if err != nil {
			return nil, fmt.Errorf("the base %s: %w", safeio.Quote(file), err)
		}
		near = d.Below
		file = filepath.Join(file, d.File)
	}
	l, err := loadImage(ctx, file, cache)
	if err != nil {
		return nil, fmt.Errorf("the base %s: %w", safeio.Quote(file), err)
	}
	b, err := baseOf(l.m, l.id)
	if err != nil {
		return nil, fmt.Errorf("the base %s: %w", safeio.Quote(file), err)
	}
	b.File, b.near = file, near
	return b, nil
}

// DescriptionFile is the description a group-only build writes beside
// its image (Request.Describe), as buildLayer does.
const DescriptionFile = "layer.json"

// Description says what a layer group image is: its file (in the same
// directory), name, version, image ID and the store paths it and the
// images below it hold; Below are the files of those images, in
// rendering order, wherever they are.
type Description struct {
	File       string   `json:"file"`
	Name       string   `json:"name"`
	Version    string   `json:"version"`
	ImageID    string   `json:"imageID"`
	StorePaths []string `json:"storePaths"`
	Below      []string `json:"below,omitempty"`
}

// readDescription reads a description; it is input: bounded, and its
// file must be one plain .aci name (what it says of the image is checked
// against the image itself).
func readDescription(path string) (*Description, error) {
	data, err := safeio.ReadFile(path, 16<<20)
	if err != nil {
		return nil, fmt.Errorf("reading its description: %w", err)
	}
	var d Description
	if err := json.Unmarshal(data, &d); err != nil {
		return nil, fmt.Errorf("its description %s: %w", safeio.Quote(path), err)
	}
	if !isPlainACIName(d.File) {
		return nil, fmt.Errorf("its description %s names %s, not one .aci file beside it", safeio.Quote(path), safeio.Quote(d.File))
	}
	for _, f := range d.Below {
		if !filepath.IsAbs(f) || !strings.HasSuffix(f, ".aci") || len(d.Below) > maxDepDepth*4 {
			return nil, fmt.Errorf("its description %s names %s below it, not an absolute .aci path", safeio.Quote(path), safeio.Quote(f))
		}
	}
	return &d, nil
}

// baseOf is the base described by the manifest m of the image id.
func baseOf(m *schema.ImageManifest, id string) (*Base, error) {
	held, ok := m.Annotations.Get(StorePathsAnnotation)
	if !ok {
		return nil, &BaseError{fmt.Sprintf("%s does not say which store paths it holds (no %s annotation), so an app cannot be built on it without its bytes: use a layer group image that nix2aci built (a recipe's layers), or build without --base", safeio.Quote(m.Name.String()), StorePathsAnnotation)}
	}
	b := &Base{Name: m.Name.String(), ImageID: id, Labels: map[string]string{}, Paths: map[string]bool{}, Dependencies: m.Dependencies}
	for _, k := range []string{"version", "os", "arch"} {
		v, ok := m.Labels.Get(k)
		if !ok || v == "" {
			return nil, &BaseError{fmt.Sprintf("%s has no %s label, which rkt needs to find it by name: rebuild it with one", safeio.Quote(b.Name), k)}
		}
		b.Labels[k] = v
	}
	b.Images = 1 + len(m.Dependencies)
	if n, ok := m.Annotations.Get(ImagesAnnotation); ok {
		if v, err := strconv.Atoi(n); err == nil && v >= b.Images && v <= maxBasePaths {
			b.Images = v
		}
	}
	if err := b.readHeld(held); err != nil {
		return nil, err
	}
	return b, nil
}

// readHeld reads the value of a base's StorePathsAnnotation into Paths.
func (b *Base) readHeld(held string) error {
	for _, p := range strings.Split(held, "\n") {
		if !nixstore.IsStorePath(p) || strings.Contains(strings.TrimPrefix(p, nixstore.StoreDir+"/"), "/") {
			return &BaseError{fmt.Sprintf("%s: its %s annotation holds %s, which is not a store path", safeio.Quote(b.Name), StorePathsAnnotation, safeio.Quote(p))}
		}
		if len(b.Paths) == maxBasePaths {
			return &BaseError{fmt.Sprintf("%s says it holds more than %d store paths", safeio.Quote(b.Name), maxBasePaths)}
		}
		b.Paths[p] = true
	}
	return nil
}

// sameImage reports whether the index entry e is of the image whose
// manifest is m: same name and labels.
func sameImage(e indexEntry, m *schema.ImageManifest) bool {
	v, _ := m.Labels.Get("version")
	o, _ := m.Labels.Get("os")
	a, _ := m.Labels.Get("arch")
	return e.Name == m.Name.String() && e.Version == v && e.OS == o && e.Arch == a
}

// proven returns the entry of dir/name when its tag verifies under
// cache's key and the file is as recorded, whatever it was written from.
func (idx *layerIndex) proven(dir, name string, cache *fragcache.Cache) (indexEntry, bool) {
	e, ok := idx.Layers[name]
	if !ok {
		return e, false
	}
	if !cache.RecordTagged(recordTagKind, e.message(name), e.Tag) {
		return e, false
	}
	if st, ok := statOf(filepath.Join(dir, name)); !ok || st != e.File || st.Size != e.Size {
		return e, false
	}
	return e, true
}

// stageBase links the base image and the images it depends on (found
// beside it by their flat file names, each proven to have the image ID
// its dependent pins), with their signatures, into the staging
// directory, unless the output directory holds them already; it returns
// their names in the output directory in rendering order.
func (b *build) stageBase(ctx context.Context) ([]string, error) {
	if b.base == nil || b.base.File == "" {
		return nil, nil
	}
	if b.baseStaged {
		return b.baseFiles, nil
	}
	b.baseStaged = true
	dir := filepath.Dir(b.base.File)
	var names []string
	seen := map[string]bool{}
	var visit func(file string, deps types.Dependencies, depth int) error
	visit = func(file string, deps types.Dependencies, depth int) error {
		if depth > maxDepDepth {
			return &BaseError{fmt.Sprintf("the base's dependencies nest more than %d deep (a cycle?)", maxDepDepth)}
		}
		for _, d := range deps {
			dm := schema.ImageManifest{Name: d.ImageName, Labels: d.Labels}
			flat, err := manifest.FlatFileName(&dm)
			if err != nil {
				return fmt.Errorf("the base's dependency %s: %w", d.ImageName, err)
			}
			depFile := filepath.Join(dir, flat)
			for _, f := range b.base.near {
				if filepath.Base(f) == flat {
					depFile = f
				}
			}
			dep, err := loadImage(ctx, depFile, b.cache)
			if err != nil {
				b.Warn(fmt.Sprintf("the base's dependency %s is not beside it (%v); it is left out of the .deps file, and rkt fetches it by name", d.ImageName, err))
				continue
			}
			if d.ImageID == nil || dep.id != d.ImageID.String() {
				return &BaseError{fmt.Sprintf("%s is not the image the base pins as its dependency %s (image ID %s): fetch the base and its dependencies again", safeio.Quote(depFile), d.ImageName, short(dep.id))}
			}
			if err := visit(depFile, dep.m.Dependencies, depth+1); err != nil {
				return err
			}
		}
		if seen[file] {
			return &BaseError{fmt.Sprintf("the base reaches %s twice: rkt would render it twice; rebuild the base as a chain", safeio.Quote(file))}
		}
		seen[file] = true
		name, err := b.linkIn(file)
		if err != nil {
			return err
		}
		names = append(names, name)
		return nil
	}
	err := visit(b.base.File, b.base.Dependencies, 0)
	b.baseFiles = names
	return names, err
}

// maxDepDepth bounds how deep dependencies may nest.
const maxDepDepth = 32

// linkIn puts file (and its signature) into the output directory under
// its flat name, unless it is there already, and returns that name.
func (b *build) linkIn(file string) (string, error) {
	abs, err := filepath.Abs(file)
	if err != nil {
		return "", err
	}
	out, err := filepath.Abs(b.OutDir)
	if err != nil {
		return "", err
	}
	if filepath.Dir(abs) == out {
		return filepath.Base(abs), nil
	}
	if len(b.ClosureGraphs) > 0 {
		// Inside a Nix build the base is another derivation's output:
		// named where it is, not copied.
		return abs, nil
	}
	f, err := OpenImage(file)
	if err != nil {
		return "", err
	}
	m, err := aci.ReadManifest(f, 0)
	f.Close()
	if err != nil {
		return "", fmt.Errorf("%s: %w", safeio.Quote(file), err)
	}
	name, err := manifest.FlatFileName(m)
	if err != nil {
		return "", err
	}
	if err := linkOrCopy(file, b.st.Path(name)); err != nil {
		return "", fmt.Errorf("linking %s into %s: %w", safeio.Quote(file), b.OutDir, err)
	}
	b.add(name, "")
	if linkOrCopy(file+".asc", b.st.Path(name+".asc")) == nil {
		b.add(name+".asc", "")
	} else {
		b.add("", name+".asc")
	}
	return name, nil
}

// linkOrCopy hard-links src to dst, or copies it where a link cannot be
// made (another file system); src must be a regular file.
func linkOrCopy(src, dst string) error {
	in, err := safeio.OpenRegular(src)
	if err != nil {
		return err
	}
	defer in.Close()
	if os.Link(src, dst) == nil {
		return nil
	}
	outf, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(outf, in); err != nil {
		outf.Close()
		return err
	}
	return outf.Close()
}

// loaded is an image file read for its manifest and image ID.
type loaded struct {
	m  *schema.ImageManifest
	id string
}

// loadImage reads file's manifest and image ID: the ID from a proven
// layer index entry beside it, else by reading the whole archive.
func loadImage(ctx context.Context, file string, cache *fragcache.Cache) (*loaded, error) {
	f, err := OpenImage(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	untrustedManifest, err := aci.ReadManifest(safeio.WithContext(ctx, f), 0)
	if err != nil {
		return nil, err
	}
	dir, name := filepath.Split(file)
	if dir == "" {
		dir = "."
	}
	if e, ok := readIndex(dir).proven(dir, name, cache); ok && sameImage(e, untrustedManifest) {
		return &loaded{untrustedManifest, e.ImageID}, nil
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	info, err := aci.Inspect(safeio.WithContext(ctx, f))
	if err != nil {
		return nil, err
	}
	return &loaded{info.Manifest, info.ImageID}, nil
}

func short(id string) string {
	if len(id) > 19 {
		return id[:19] + "…"
	}
	return id
}

// loadBase reads the request's base from its file, or fetches it by name.
func (b *build) loadBase(ctx context.Context, system string) (*Base, error) {
	if b.isOCI() {
		return loadOCIBase(b.Base)
	}
	if _, err := os.Stat(b.Base); err == nil {
		return LoadBase(ctx, b.Base, b.cache)
	}
	name, labels, err := ParseImageString(b.Base)
	if err != nil {
		return nil, &UsageError{fmt.Sprintf("--base %s is neither a file nor an image name: %v", safeio.Quote(b.Base), err)}
	}
	osName, arch, err := manifest.OSArch(system)
	if err != nil {
		return nil, err
	}
	for k, v := range map[string]string{"os": osName, "arch": arch} {
		if _, ok := labels[k]; !ok {
			labels[k] = v
		}
	}
	if _, ok := labels["version"]; !ok {
		return nil, &UsageError{fmt.Sprintf("--base %s names no version: give the one to build on, %s:VERSION (a published version keeps its contents; there is no \"latest\")", safeio.Quote(b.Base), name)}
	}
	o := b.BaseFetch
	o.Dir = b.st.Path("base")
	if err := os.Mkdir(o.Dir, 0o755); err != nil {
		return nil, err
	}
	f, err := fetch.Image(ctx, name, labels, o)
	if err != nil {
		return nil, fmt.Errorf("fetching the base %s: %w", name, err)
	}
	base, err := baseOf(f.Manifest, f.ImageID)
	if err != nil {
		return nil, fmt.Errorf("the base %s: %w", name, err)
	}
	base.File = f.ACI
	return base, nil
}

// ParseImageString splits an image string as rkt writes one,
// NAME[:VERSION][,LABEL=VALUE…], into the name and labels.
func ParseImageString(s string) (name string, labels map[string]string, err error) {
	parts := strings.Split(s, ",")
	name, version, hasVersion := strings.Cut(parts[0], ":")
	if err := manifest.CheckIdentifier(name); err != nil {
		return "", nil, err
	}
	labels = map[string]string{}
	if hasVersion {
		if version == "" {
			return "", nil, fmt.Errorf("an empty version after %q", name+":")
		}
		labels["version"] = version
	}
	for _, p := range parts[1:] {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" || v == "" {
			return "", nil, fmt.Errorf("%s is not LABEL=VALUE", safeio.Quote(p))
		}
		if _, dup := labels[k]; dup {
			return "", nil, fmt.Errorf("the label %s is given twice", safeio.Quote(k))
		}
		labels[k] = v
	}
	return name, labels, nil
}
