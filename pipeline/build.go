package pipeline

import (
	"context"
	"fmt"
	"sync"

	"github.com/nix2aci/nix2aci/aci"
	"github.com/nix2aci/nix2aci/fragcache"
	"github.com/nix2aci/nix2aci/internal/safeio"
	"github.com/nix2aci/nix2aci/manifest"
	"github.com/nix2aci/nix2aci/nixstore"
	"github.com/nix2aci/nix2aci/oci"
	"github.com/nix2aci/nix2aci/outdir"
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

// build is one build under way: the request, with its defaults filled
// in, and what the steps have made so far.
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

// run carries out the steps of a build in order; each names the file
// that holds it.
func (b *build) run(ctx context.Context) (*Result, error) {
	// 1. The target: its packages and the image's settings (inputs.go),
	// and the names of the files it will have (outputs.go).
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
	// 2. The packages built, their closure, and the app's manifest and
	// skeleton (inputs.go).
	in, err := b.inputs(ctx, t)
	if err != nil {
		return nil, err
	}
	// 3. What to write: a plan (plan.go), on the base if there is one
	// (base.go).
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
	// the target's image (outputs.go; oci.go for an OCI image).
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
	// 5. Everything moved into place at once, with the GC roots
	// (outputs.go).
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
