package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/appc/spec/schema"

	"github.com/nix2aci/nix2aci/aci"
	"github.com/nix2aci/nix2aci/fetch"
	"github.com/nix2aci/nix2aci/fragcache"
	"github.com/nix2aci/nix2aci/internal/safeio"
	"github.com/nix2aci/nix2aci/manifest"
	"github.com/nix2aci/nix2aci/nixstore"
	"github.com/nix2aci/nix2aci/oci"
	"github.com/nix2aci/nix2aci/outdir"
	"github.com/nix2aci/nix2aci/pkgs"
)

// Kinds of image.
const (
	Fat     = "fat"
	Thin    = "thin"
	Layered = "layered"
)

// Request is one build.
type Request struct {
	// Target is a recipe name, a nixpkgs attribute, a store path (or a
	// link to one) or a .nix file (see pkgs.Resolve).
	Target string
	// Kind is Fat (the default), Thin or Layered.
	Kind string
	// Format is what is written: oci.ACI (the default), or an OCI image
	// as oci.LayoutFormat, oci.Archive or oci.DockerArchive (see oci.go).
	Format string
	// MaxLayers is the layer budget of a Layered build (0:
	// DefaultMaxLayers); LayerPrefix names its layers (empty:
	// DefaultLayerPrefix of the app's name).
	MaxLayers   int
	LayerPrefix string
	// OutDir is where the files go ("ACIs" when empty).
	OutDir string
	// Name overrides the recipe's image name; it must be an AC Identifier.
	Name string
	// Overrides set manifest fields over the recipe's (exec, user,
	// environment, labels, annotations, ports, mount points).
	Overrides manifest.Overrides
	// Recipes is a directory of recipes overriding the built-in ones.
	Recipes string
	// Flakes lets the target's recipe call builtins.getFlake (it enables
	// the experimental features flakes need for the evaluation).
	Flakes bool
	// Compression is gzip when empty.
	Compression aci.Compression
	Level, Jobs int
	// CacheDir is the cache of compressed store paths ("" for none);
	// CacheMax, when > 0, is the size it is trimmed to afterwards.
	CacheDir string
	CacheMax int64
	// CacheKey is the file of the key that tags cache entries: a warm
	// build takes only members whose tags verify (see fragcache.Cache). It is
	// created when missing. "" for none: the cache is then not used.
	CacheKey string
	// CacheKeyValue is the key itself (fragcache.CacheKeySize bytes, e.g. from
	// a CI secret), used instead of CacheKey's file and written nowhere.
	CacheKeyValue []byte
	// GroupOnly, when set, writes no app: only the layer group image of
	// that name holding the target's closure less the base's, the image
	// a recipe's layer group of that name on that base makes (a base
	// built once, e.g. by lib.buildLayer, for many apps).
	GroupOnly string
	// Describe, with GroupOnly, also writes a Description of the image
	// into the output directory under this name (DescriptionFile for
	// buildLayer).
	Describe string
	// GroupPackages are more store paths the group holds the closure of,
	// beside the target's (GroupOnly only).
	GroupPackages []string
	// Base is the file of a published base image to build the app on
	// (see LoadBase): the app depends on it by image ID and holds none of
	// the store paths it holds. The base and the images it depends on
	// (found beside it) are linked into the output directory and listed
	// in the .deps file.
	Base string
	// BaseFetch says how a Base given as an image name
	// (NAME:VERSION[,LABEL=VALUE…], as rkt writes it) is fetched: by appc
	// discovery, its signature verified against BaseFetch.Trust (see
	// fetch.Image; Dir is the build's own). A Base that names an existing
	// file or directory is read from there.
	BaseFetch fetch.Options
	// NoExecCheck builds even if the app's program cannot start.
	NoExecCheck bool
	// Created is the app image's "created" time (zero: the Unix epoch).
	Created time.Time
	// ClosureGraphs, when set, are the closure of the target as Nix's
	// exportReferencesGraph writes it, for builds inside a Nix derivation
	// (see buildACI in nix/build-aci.nix), where there is no nix-store to
	// ask: the target must then be a store path, nothing is realised, no
	// GC root is made and no cache is used.
	ClosureGraphs []string
	// NoGCRoots registers no GC roots beside the images: for a caller
	// that keeps nothing of them past the build (nix2aci serve publishes
	// the images and removes the app's files). The build's own roots in
	// its staging directory hold its packages while it runs.
	NoGCRoots bool
	// LayerReferencesFirst, for a layered build, gives each store path the
	// target's packages refer to directly a layer of its own before the
	// most popular paths, the layer budget permitting. nix2aci serve's
	// target is one environment joining the packages asked for: this way
	// each of them is a layer of its own, and a new version of one changes
	// that layer only, not the layer of the paths left over.
	LayerReferencesFirst bool
	// ReuseBlobs, for an OCI build, is a blob store whose layers the
	// build links into its layout instead of writing them (ocireuse.go).
	ReuseBlobs *BlobReuse
	// Signer, if set, signs every image written.
	Signer *Signer
	// SignOCI, if set, signs an OCI build's image before it is moved into
	// place: it gets the image as staged (a layout directory or an
	// archive) and what the build made. An error fails the build, and the
	// output directory stays as it was.
	SignOCI func(ctx context.Context, staged string, out *Result) error
	// Progress, if set, is told how writing each file goes.
	Progress func(file string, p aci.Progress)
	// Warn, if set, is told what the build noticed but went on with.
	Warn func(msg string)
}

// Image is one image file a build wrote (or reused).
type Image struct {
	ACI        string `json:"aci,omitempty"`
	Signature  string `json:"signature,omitempty"`
	Name       string `json:"name"`
	Version    string `json:"version"`
	ImageID    string `json:"imageID"`
	StorePaths int    `json:"storePaths"`
	Size       int64  `json:"size"`
	// Reused says the file was already there, written by an earlier build.
	Reused bool `json:"reused,omitempty"`
	// Digest is an OCI layer's blob digest (ImageID is then its DiffID).
	Digest string `json:"digest,omitempty"`
}

// Result is what a build wrote.
type Result struct {
	ACI string `json:"aci,omitempty"`
	// Format is the request's; OCI is the path of an OCI build's image
	// layout or archive, Digest its manifest's digest, Tag its tag, and
	// PodmanArgs the .podman-args of a thin one. ImageID is then the
	// config's digest, the image ID podman and docker show.
	Format      string         `json:"format"`
	OCI         string         `json:"oci,omitempty"`
	Digest      string         `json:"digest,omitempty"`
	Tag         string         `json:"tag,omitempty"`
	PodmanArgs  string         `json:"podmanArgs,omitempty"`
	RktArgs     string         `json:"rktArgs,omitempty"`
	Deps        string         `json:"deps,omitempty"`
	Signature   string         `json:"signature,omitempty"`
	GCRoots     []string       `json:"gcRoots"`
	Name        string         `json:"name"`
	Version     string         `json:"version"`
	OS          string         `json:"os"`
	Arch        string         `json:"arch"`
	Kind        string         `json:"kind"`
	ImageID     string         `json:"imageID"`
	StorePaths  int            `json:"storePaths"`
	CachedPaths int            `json:"cachedPaths"`
	Size        int64          `json:"size"`
	Offline     bool           `json:"offline"`
	Conflicts   []aci.Conflict `json:"conflicts,omitempty"`
	// Layers are a layered image's dependencies, in rendering order.
	Layers []Image `json:"layers,omitempty"`
	// Base are the files of the base and the images below it, in
	// rendering order (listed in .deps before the layers).
	Base []string `json:"base,omitempty"`
	// blobs are the layers RecordBlobs records (ocireuse.go).
	blobs *blobRecords
}

// UsageError is a request that cannot be built as asked.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

// Build runs the pipeline for r. Everything is written into a staging
// directory inside the output directory and moved into place only when
// all of it is there: a failed or interrupted build leaves the previous
// images, signatures, .rkt-args, .deps and GC roots as they were.
func Build(ctx context.Context, r Request) (*Result, error) {
	b := &build{Request: r}
	if b.Kind == "" {
		b.Kind = Fat
	}
	if b.OutDir == "" {
		b.OutDir = "ACIs"
	}
	if b.Compression == "" {
		b.Compression = aci.Gzip
	}
	if b.Warn == nil {
		b.Warn = func(string) {}
	}
	switch b.Kind {
	case Fat, Thin, Layered:
	default:
		return nil, &UsageError{fmt.Sprintf("unknown kind %q: fat, thin or layered", b.Kind)}
	}
	if err := b.checkOCI(); err != nil {
		return nil, err
	}
	if b.Kind == Thin {
		if b.Base != "" {
			return nil, &UsageError{"--base builds an app on an image holding store paths; a thin image holds none: build --fat or --layered"}
		}
		b.CacheDir = "" // nothing is compressed but the skeleton
	}
	if len(b.ClosureGraphs) > 0 {
		b.CacheDir = "" // the graph has no NAR hashes to key entries by
		if !nixstore.IsStorePath(b.Target) {
			return nil, &UsageError{fmt.Sprintf("with a closure graph, the target must be a store path, not %q", b.Target)}
		}
	}
	for _, p := range b.GroupPackages {
		if b.GroupOnly == "" || !nixstore.IsStorePath(p) {
			return nil, &UsageError{fmt.Sprintf("more packages (%s) go with --layer-group, as store paths", safeio.Quote(p))}
		}
		if _, err := nixstore.ToStorePath(p); err != nil {
			return nil, err // not in the store: nothing to build it from
		}
	}
	if b.GroupOnly != "" {
		if b.Kind != Fat && b.Kind != Layered {
			return nil, &UsageError{fmt.Sprintf("a layer group image holds store paths; it cannot be %s", b.Kind)}
		}
		b.Kind = Layered
	}
	if b.MaxLayers == 0 {
		b.MaxLayers = DefaultMaxLayers
	}
	if b.MaxLayers < 0 {
		return nil, &UsageError{fmt.Sprintf("a layer budget of %d: give at least 1", b.MaxLayers)}
	}
	if b.Name != "" {
		if err := manifest.CheckIdentifier(b.Name); err != nil {
			return nil, err
		}
	}
	if b.LayerPrefix != "" {
		if err := manifest.CheckIdentifier(b.LayerPrefix); err != nil {
			return nil, fmt.Errorf("the layer prefix: %w", err)
		}
	}
	return b.run(ctx)
}

type build struct {
	Request
	st    *outdir.Stage
	cache *fragcache.Cache
	opts  []aci.Option
	// names are the staged files to move into place, stale the old files
	// to remove; layersWritten what to record in the layer index.
	names, stale  []string
	layersWritten map[string]indexEntry
	index         *layerIndex
	base          *Base
	baseStaged    bool
	baseFiles     []string    // the base's files in the output directory (stageBase)
	layout        *oci.Layout // an OCI build's image layout (oci.go)
	reuse         *blobReuse  // its use of ReuseBlobs (ocireuse.go)
	// mu guards the fields above and Progress, for layers written at once.
	mu sync.Mutex
}

func (b *build) run(ctx context.Context) (*Result, error) {
	// 1. The target: its packages and the image's settings, and the names
	// of the files it will have.
	t, err := b.resolve(ctx)
	if err != nil {
		return nil, err
	}
	names, err := outputNames(t)
	if err != nil {
		return nil, err
	}
	if b.isOCI() {
		names = b.ociNames(names)
	}
	if b.st, err = outdir.Begin(b.OutDir); err != nil {
		return nil, err
	}
	committed := false
	defer func() {
		if !committed {
			b.st.Abort()
		}
	}()
	if b.isOCI() {
		if err := b.beginOCI(names); err != nil {
			return nil, err
		}
	}
	// 2. The packages built, and their closure.
	in, err := b.inputs(ctx, t)
	if err != nil {
		return nil, err
	}
	// 3. What to write: a plan (plan.go).
	if err := b.openCache(); err != nil {
		return nil, err
	}
	if b.Base != "" {
		if b.base, err = b.loadBase(ctx, in.spec.System); err != nil {
			return nil, err
		}
	}
	plan, err := b.plan(in.full, in.groups, t, in.app.Manifest, in.app, in.spec.System)
	if err != nil {
		return nil, err
	}
	// 4. The images written and signed (write.go), and the files beside
	// the target's image.
	images, err := b.writePlan(ctx, plan)
	if err != nil {
		return nil, err
	}
	var out *Result
	if b.isOCI() {
		out, err = b.finishOCI(ctx, t, in, plan, images, &names)
		if err == nil && b.SignOCI != nil {
			err = b.SignOCI(ctx, b.st.Path(names.image), out)
		}
	} else {
		out, err = b.finish(ctx, t, in, plan, images, &names)
	}
	if err != nil {
		return nil, err
	}
	// 5. Everything moved into place at once.
	committed = true
	if out.GCRoots, err = b.commit(ctx, names, in.full.Roots); err != nil {
		return nil, err
	}
	if b.cache != nil && b.CacheMax > 0 {
		if _, err := b.cache.GC(b.CacheMax); err != nil {
			b.Warn(fmt.Sprintf("trimming cache: %v", err))
		}
	}
	return out, nil
}

// resolve resolves the target to its packages and settings, with the
// request's overrides and name applied.
func (b *build) resolve(ctx context.Context) (*pkgs.Target, error) {
	var popts []pkgs.Option
	if b.Recipes != "" {
		popts = append(popts, pkgs.WithUserRecipes(b.Recipes))
	}
	if b.Flakes {
		popts = append(popts, pkgs.WithFlakes())
	}
	t, err := pkgs.Resolve(ctx, b.Target, popts...)
	if err != nil {
		return nil, err
	}
	b.Overrides.Apply(&t.Spec)
	if b.Name != "" {
		t.Spec.Name = b.Name
	} else if t.Spec.Name != "" {
		// A name typed into a recipe is never rewritten either; names
		// taken from package names are made valid.
		if err := manifest.CheckIdentifier(t.Spec.Name); err != nil {
			return nil, fmt.Errorf("the recipe's name: %w", err)
		}
	}
	return t, nil
}

// fileNames are the target's image file and the stem the files beside it
// are named by (.asc, .deps, .rkt-args, .gcroot).
type fileNames struct{ image, base string }

// outputNames names the outputs before anything is built, to place the
// GC roots beside them.
func outputNames(t *pkgs.Target) (fileNames, error) {
	first := t.Packages[0]
	spec := t.Spec
	spec.Name = orDefault(spec.Name, first.PName)
	spec.Version = orDefault(spec.Version, first.Version)
	spec.System = orDefault(spec.System, first.System)
	spec.Exec = []string{"/placeholder"}
	probe, err := manifest.New(spec)
	if err != nil {
		return fileNames{}, err
	}
	file, err := manifest.FileName(probe)
	if err != nil {
		return fileNames{}, err
	}
	return fileNames{file, strings.TrimSuffix(file, ".aci")}, nil
}

func (b *build) inNix() bool { return len(b.ClosureGraphs) > 0 }

// inputs is what the plan is made from.
type inputs struct {
	spec   manifest.Spec
	groups []Group
	full   *nixstore.Graph // the closure of the app and its layer groups
	app    aci.Image       // the app image with its whole closure
}

// inputs builds the packages (GC roots in the staging directory keep
// them alive meanwhile), reads their closure, and makes the app's
// manifest and skeleton, checking that the app can start.
func (b *build) inputs(ctx context.Context, t *pkgs.Target) (*inputs, error) {
	// Inside a Nix build, the derivation's inputs are built. Outside, the
	// packages are built with GC roots in the staging directory; when
	// they are in the store already, that runs beside the closure query
	// (the query fails on a path that is not).
	realised := make(chan error, 1)
	switch {
	case b.inNix():
		realised <- nil
	case allPresent(t, b.GroupPackages):
		go func() { realised <- t.Realise(ctx, b.st.Path("gcroot"), b.GroupPackages...) }()
	default:
		if err := t.Realise(ctx, b.st.Path("gcroot"), b.GroupPackages...); err != nil {
			return nil, err
		}
		realised <- nil
	}
	in, err := b.closure(ctx, t)
	if rerr := <-realised; rerr != nil {
		return nil, rerr
	}
	if err != nil {
		return nil, err
	}
	return in, b.appImage(t, in)
}

// allPresent reports whether every package's output, and every one of
// more, is in the store.
func allPresent(t *pkgs.Target, more []string) bool {
	for _, p := range t.AllPackages() {
		if _, err := os.Lstat(p.OutPath); err != nil {
			return false
		}
	}
	for _, p := range more {
		if _, err := os.Lstat(p); err != nil {
			return false
		}
	}
	return true
}

// closure reads the closure of the app and its layer groups.
func (b *build) closure(ctx context.Context, t *pkgs.Target) (*inputs, error) {
	if b.GroupOnly != "" && len(t.Spec.Exec) == 0 {
		t.Spec.Exec = []string{"/"} // no app: nothing runs
	}
	if err := t.Finish(); err != nil {
		return nil, err
	}
	in := &inputs{groups: b.layerGroups(t)}
	roots := t.StorePaths()
	for _, grp := range in.groups {
		roots = append(roots, grp.Roots...)
	}
	var err error
	if b.inNix() {
		in.full, err = graphFromFiles(b.ClosureGraphs, roots)
	} else {
		in.full, err = nixstore.Closure(ctx, roots)
	}
	if err != nil {
		return nil, err
	}
	in.app.Closure = in.full
	if len(in.groups) > 0 {
		if in.app.Closure, err = subgraph(in.full, t.StorePaths()); err != nil {
			return nil, err
		}
	}
	return in, nil
}

// appImage makes the app's manifest and skeleton, and checks that the
// app can start.
func (b *build) appImage(t *pkgs.Target, in *inputs) error {
	g := in.app.Closure
	in.spec = t.Spec
	in.spec.Created = b.Created
	in.spec.Kind = b.Kind
	if b.Base != "" {
		in.spec.Kind = Layered // it needs the images below it
	}
	if b.Kind == Thin {
		in.spec.Mounts = append(in.spec.Mounts, manifest.StoreMounts(g.StorePaths())...)
	}
	im, err := manifest.New(in.spec)
	if err != nil {
		return err
	}
	extra, err := Skeleton(in.spec)
	if err != nil {
		return err
	}
	in.app = aci.Image{Manifest: im, Closure: g, Packages: t.StorePaths(), Thin: b.Kind == Thin, Extra: extra}
	if !b.NoExecCheck && b.GroupOnly == "" {
		if err := aci.CheckExec(in.app); err != nil {
			return err
		}
		if err := checkUserGroup(in.app, im.App.User, im.App.Group); err != nil {
			return err
		}
	}
	return nil
}

// openCache opens the request's cache of compressed store paths and
// loads its key; a cache that cannot be used is warned about, not fatal,
// but a key given as a value that is not one is.
func (b *build) openCache() error {
	b.opts = []aci.Option{aci.WithCompression(b.Compression, b.Level)}
	if b.Jobs > 0 {
		b.opts = append(b.opts, aci.WithJobs(b.Jobs))
	}
	if b.CacheDir == "" {
		return nil
	}
	var err error
	if b.cache, err = fragcache.OpenCache(b.CacheDir); err != nil {
		b.Warn(fmt.Sprintf("%v; building without the cache", err))
		return nil
	}
	if b.CacheKeyValue != nil {
		if err := b.cache.UseKey(b.CacheKeyValue); err != nil {
			return &UsageError{Msg: err.Error()}
		}
	} else if b.CacheKey != "" {
		if _, err := b.cache.LoadKey(b.CacheKey); err != nil {
			b.Warn(fmt.Sprintf("%v; until then, builds do not use the cache (slower)", err))
		}
	}
	b.opts = append(b.opts, aci.WithCache(b.cache))
	return nil
}

// finish writes the files beside the target's image (.deps, .rkt-args)
// into the staging directory and says what the build made.
func (b *build) finish(ctx context.Context, t *pkgs.Target, in *inputs, plan *Plan, images map[*PlanImage]*written, names *fileNames) (*Result, error) {
	im := in.app.Manifest
	out := &Result{Name: im.Name.String(), Kind: b.Kind, Offline: t.Offline, Format: b.Format}
	app := images[plan.Images[len(plan.Images)-1]]
	if b.GroupOnly != "" {
		names.image = app.ACI
		names.base = strings.TrimSuffix(app.ACI, ".aci")
		out.Name, out.Kind = app.Name, manifest.LayerKind
		if b.Describe != "" {
			if err := b.describe(app); err != nil {
				return nil, err
			}
		}
	}
	if app.ACI != names.image {
		return nil, fmt.Errorf("internal error: the app image was written as %s, not %s", app.ACI, names.image)
	}
	res := app.res
	if res == nil { // a group image the output directory holds already
		res = &aci.Result{ImageID: app.ImageID, Size: app.Size, StorePaths: app.StorePaths}
	}
	for _, cf := range res.Conflicts {
		b.Warn(fmt.Sprintf("two packages provide %s", cf))
	}
	depsName := names.base + ".deps"
	baseFiles, err := b.stageBase(ctx)
	if err != nil {
		return nil, err
	}
	if below := plan.renderOrder(); len(below) > 0 || len(baseFiles) > 0 {
		var list strings.Builder
		for _, f := range baseFiles {
			list.WriteString(f + "\n")
			if !filepath.IsAbs(f) {
				f = b.st.Final(f)
			}
			out.Base = append(out.Base, f)
		}
		for _, d := range below {
			l := images[d].Image
			list.WriteString(l.ACI + "\n")
			l.ACI = b.st.Final(l.ACI)
			if l.Signature != "" {
				l.Signature = b.st.Final(l.Signature)
			}
			out.Layers = append(out.Layers, l)
		}
		if err := os.WriteFile(b.st.Path(depsName), []byte(list.String()), 0o644); err != nil {
			return nil, fmt.Errorf("writing %s: %w", b.st.Final(depsName), err)
		}
		b.add(depsName, "")
		out.Deps = b.st.Final(depsName)
	} else {
		b.add("", depsName)
	}
	rktArgs, err := b.argsFile(names.base+".rkt-args", func() (string, error) {
		return manifest.RktVolumeArgs(in.app.Closure.StorePaths()), nil
	})
	if err != nil {
		return nil, err
	}
	out.RktArgs = rktArgs
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("build of %s interrupted; nothing was written: %w", names.image, context.Cause(ctx))
	}
	out.ACI = b.st.Final(names.image)
	out.ImageID, out.StorePaths, out.CachedPaths, out.Size = res.ImageID, res.StorePaths, res.CachedPaths, res.Size
	out.Conflicts = res.Conflicts
	out.Version, _ = im.Labels.Get("version")
	out.OS, _ = im.Labels.Get("os")
	out.Arch, _ = im.Labels.Get("arch")
	if b.GroupOnly != "" {
		out.Version = app.Version
	}
	if app.Signature != "" {
		out.Signature = b.st.Final(app.Signature)
	}
	return out, nil
}

// commit moves the staged files into place, then registers GC roots on
// paths, the store paths the images were made from (the roots of their
// closure), and records the layers written. It returns the roots made.
func (b *build) commit(ctx context.Context, names fileNames, paths []string) ([]string, error) {
	gcroot := b.st.Final(names.base + ".gcroot")
	var roots []string
	err := b.st.Commit(b.names, b.stale, func() error {
		// The new image is in place: point its roots at the paths it was
		// made from, one root each: the app's packages, and its layer
		// groups' (a recipe's groups, or every path of a --layer-group
		// build). Their closures, and so everything the images hold or
		// mount, follow. The staging roots still hold them until this is
		// done. (Inside a Nix build, the derivation's references are its
		// roots.)
		if !b.inNix() && !b.NoGCRoots {
			var err error
			if roots, err = nixstore.AddRoots(context.WithoutCancel(ctx), gcroot, paths); err != nil {
				return fmt.Errorf("%s is written, but registering its GC roots failed (a garbage collection may remove what it needs; build again): %w", b.st.Final(names.image), err)
			}
			removeStaleRoots(gcroot, roots)
		}
		if len(b.layersWritten) > 0 && !b.inNix() { // stat data would make a derivation's output differ
			if err := recordLayers(b.OutDir, b.layersWritten, b.cache); err != nil {
				b.Warn(fmt.Sprintf("recording the layers written (the next build writes them again): %v", err))
			}
		}
		return nil
	})
	return roots, err
}

// plan decides what the build writes: one image holding the closure
// (fat, thin), or an app on its layer groups and layers (PlanGroups).
func (b *build) plan(full *nixstore.Graph, groups []Group, t *pkgs.Target, app *schema.ImageManifest, content aci.Image, system string) (*Plan, error) {
	if b.Kind != Layered && b.base == nil {
		return planSingle(app, content), nil
	}
	prefix := b.LayerPrefix
	if prefix == "" {
		prefix = DefaultLayerPrefix(app.Name.String())
	}
	budget := 0 // a fat app on a base holds the rest itself
	if b.Kind == Layered {
		budget = b.MaxLayers
	}
	var first []string
	if b.LayerReferencesFirst {
		first = directReferences(full, t.StorePaths())
	}
	return PlanGroups(Layering{
		Closure: full, App: t.StorePaths(), AppRoots: t.StorePaths(), Groups: groups, Base: b.base,
		Prefix: prefix, System: system, Budget: budget, Created: b.Created, GroupOnly: b.GroupOnly != "",
		First: first,
	}, app, content)
}

// directReferences are the store paths that the paths of roots refer to,
// other than themselves, sorted.
func directReferences(g *nixstore.Graph, roots []string) []string {
	isRoot := map[string]bool{}
	for _, r := range roots {
		isRoot[r] = true
	}
	seen := map[string]bool{}
	for _, p := range g.Paths {
		if !isRoot[p.Path] {
			continue
		}
		for _, r := range p.References {
			if !isRoot[r] {
				seen[r] = true
			}
		}
	}
	return slices.Sorted(maps.Keys(seen))
}

// layerGroups are the recipe's layer groups, for a layered build.
func (b *build) layerGroups(t *pkgs.Target) []Group {
	if b.GroupOnly != "" {
		if len(t.Layers) > 0 {
			b.Warn("the recipe's layer groups are left out of a --layer-group build: it writes the target's closure as one group")
		}
		return []Group{{Name: b.GroupOnly, Roots: append(t.StorePaths(), b.GroupPackages...)}}
	}
	if len(t.Layers) == 0 {
		return nil
	}
	if b.Kind != Layered {
		b.Warn(fmt.Sprintf("the recipe's layer groups apply to --layered builds; this %s image holds them", b.Kind))
		return nil
	}
	var groups []Group
	for _, l := range t.Layers {
		grp := Group{Name: l.Name}
		for _, p := range l.Packages {
			grp.Roots = append(grp.Roots, p.OutPath)
		}
		groups = append(groups, grp)
	}
	return groups
}

// describe writes the Description of the group image w.
func (b *build) describe(w *written) error {
	if !isPlainName(b.Describe) {
		return &UsageError{fmt.Sprintf("--describe takes a plain file name, not %s", safeio.Quote(b.Describe))}
	}
	d := Description{File: w.ACI, Name: w.Name, Version: w.Version, ImageID: w.ImageID, StorePaths: w.held}
	if b.base != nil {
		below, err := b.stageBase(context.Background())
		if err != nil {
			return err
		}
		for _, f := range below {
			if !filepath.IsAbs(f) {
				if f, err = filepath.Abs(b.st.Final(f)); err != nil {
					return err
				}
			}
			d.Below = append(d.Below, f)
		}
	}
	data, err := json.MarshalIndent(d, "", " ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(b.st.Path(b.Describe), append(data, '\n'), 0o644); err != nil {
		return err
	}
	b.add(b.Describe, "")
	return nil
}

func isPlainName(name string) bool {
	return name != "" && filepath.Base(name) == name && filepath.IsLocal(name) && !strings.HasPrefix(name, ".")
}

// subgraph is the closure of roots within g.
func subgraph(g *nixstore.Graph, roots []string) (*nixstore.Graph, error) {
	index := make(map[string]nixstore.PathInfo, len(g.Paths))
	for _, p := range g.Paths {
		index[p.Path] = p
	}
	paths, err := closureOf(index, roots, nil)
	if err != nil {
		return nil, err
	}
	return &nixstore.Graph{Roots: roots, Paths: paths}, nil
}

// write writes img into the staging directory as name.
func (b *build) write(ctx context.Context, name string, img aci.Image, created time.Time) (*aci.Result, error) {
	opts := append(b.opts[:len(b.opts):len(b.opts)], aci.WithModTime(created))
	if b.Progress != nil {
		opts = append(opts, aci.WithProgress(func(p aci.Progress) {
			b.mu.Lock()
			defer b.mu.Unlock()
			b.Progress(name, p)
		}))
	}
	res, err := aci.WriteFile(ctx, b.st.Path(name), img, opts...)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("build of %s interrupted; nothing was written: %w", name, context.Cause(ctx))
		}
		return nil, fmt.Errorf("writing %s: %w", b.st.Final(name), err)
	}
	b.add(name, "")
	return res, nil
}

// sign signs the staged name when the request has a signer (and reports
// whether it did); otherwise an old signature of name is stale.
func (b *build) sign(ctx context.Context, name string) (bool, error) {
	asc := name + ".asc"
	if b.Signer == nil {
		b.add("", asc) // it would sign the old image
		return false, nil
	}
	if err := b.Signer.Sign(ctx, b.st.Path(name), b.st.Path(asc)); err != nil {
		return false, err
	}
	b.add(asc, "")
	return true, nil
}

// add notes a staged file to move into place and an old one to remove
// ("" for none), safely from the goroutines writing layers.
// argsFile stages the file of a thin image's volume arguments, made by
// args, and returns its final path; for other kinds it marks a file of
// that name left by an earlier thin build as stale, and returns "".
func (b *build) argsFile(name string, args func() (string, error)) (string, error) {
	if b.Kind != Thin {
		b.add("", name)
		return "", nil
	}
	text, err := args()
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(b.st.Path(name), []byte(text), 0o644); err != nil {
		return "", fmt.Errorf("writing %s: %w", b.st.Final(name), err)
	}
	b.add(name, "")
	return b.st.Final(name), nil
}

func (b *build) add(name, stale string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if name != "" {
		b.names = append(b.names, name)
	}
	if stale != "" {
		b.stale = append(b.stale, stale)
	}
}

// readIndexOnce reads the output directory's layer index the first time
// it is needed.
func readIndexOnce(b *build) *layerIndex {
	if b.index == nil {
		b.index = readIndex(b.OutDir)
	}
	return b.index
}

// removeStaleRoots removes the roots beside gcroot that a previous build
// made and this one did not (kept): gcroot-N of a path the image is no
// longer made from, and gcroot-N-OUTPUT, a derivation's other output
// that nix2aci once rooted too. Only links into the store named gcroot-
// and a suffix without a dot go: another image's roots have ".gcroot"
// after its own name, which no such suffix holds.
func removeStaleRoots(gcroot string, kept []string) {
	dir, name := filepath.Split(gcroot)
	ents, err := os.ReadDir(filepath.Clean(dir))
	if err != nil {
		return
	}
	keep := map[string]bool{}
	for _, r := range kept {
		keep[filepath.Base(r)] = true
	}
	for _, e := range ents {
		suffix, ok := strings.CutPrefix(e.Name(), name+"-")
		if !ok || suffix == "" || strings.Contains(suffix, ".") || keep[e.Name()] || e.Type()&os.ModeSymlink == 0 {
			continue
		}
		r := filepath.Join(dir, e.Name())
		if target, err := os.Readlink(r); err == nil && strings.HasPrefix(target, nixstore.StoreDir+"/") {
			os.Remove(r)
		}
	}
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// IsUsage reports whether err is a request that cannot be built as asked.
func IsUsage(err error) bool {
	var u *UsageError
	return errors.As(err, &u)
}

// graphFromFiles reads exportReferencesGraph files (bounded and streamed:
// they are input) and returns the closure of roots they describe.
func graphFromFiles(files, roots []string) (*nixstore.Graph, error) {
	all, err := nixstore.ReadGraphFiles(files)
	if err != nil {
		return nil, err
	}
	index := make(map[string]nixstore.PathInfo, len(all.Paths))
	for _, p := range all.Paths {
		index[p.Path] = p
	}
	// Only what the roots reach, and all of it.
	out, err := closureOf(index, roots, nil)
	var missing *missingPathError
	if errors.As(err, &missing) {
		return nil, fmt.Errorf("the closure graph lacks %s: export the references graph of every package (exportReferencesGraph)", missing.path)
	}
	if err != nil {
		return nil, err
	}
	return &nixstore.Graph{Roots: roots, Paths: out}, nil
}
