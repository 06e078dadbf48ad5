package pipeline

import (
	"context"
	"encoding/json"
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
	"github.com/nix2aci/nix2aci/fragcache"
	"github.com/nix2aci/nix2aci/internal/safeio"
	"github.com/nix2aci/nix2aci/manifest"
	"github.com/nix2aci/nix2aci/nixstore"
	"github.com/nix2aci/nix2aci/oci"
	"github.com/nix2aci/nix2aci/outdir"
	"github.com/nix2aci/nix2aci/pkgs"
)

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
