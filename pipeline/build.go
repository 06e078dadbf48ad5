package pipeline

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/nix2aci/nix2aci/aci"
	"github.com/nix2aci/nix2aci/internal/safeio"
	"github.com/nix2aci/nix2aci/manifest"
	"github.com/nix2aci/nix2aci/nixstore"
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
	// Compression is gzip when empty.
	Compression aci.Compression
	Level, Jobs int
	// CacheDir is the cache of compressed store paths ("" for none);
	// CacheMax, when > 0, is the size it is trimmed to afterwards.
	CacheDir string
	CacheMax int64
	// CacheKey is the file of the key that tags cache entries: a warm
	// build takes only members whose tags verify (see aci.Cache). It is
	// created when missing. "" for none: the cache is then not used.
	CacheKey string
	// CacheKeyValue is the key itself (aci.CacheKeySize bytes, e.g. from
	// a CI secret), used instead of CacheKey's file and written nowhere.
	CacheKeyValue []byte
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
	// Signer, if set, signs every image written.
	Signer *Signer
	// Progress, if set, is told how writing each file goes.
	Progress func(file string, p aci.Progress)
	// Warn, if set, is told what the build noticed but went on with.
	Warn func(msg string)
}

// Image is one image file a build wrote (or reused).
type Image struct {
	ACI        string `json:"aci"`
	Signature  string `json:"signature,omitempty"`
	Name       string `json:"name"`
	Version    string `json:"version"`
	ImageID    string `json:"imageID"`
	StorePaths int    `json:"storePaths"`
	Size       int64  `json:"size"`
	// Reused says the file was already there, written by an earlier build.
	Reused bool `json:"reused,omitempty"`
}

// Result is what a build wrote.
type Result struct {
	ACI         string         `json:"aci"`
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
	if b.Kind == Thin {
		b.CacheDir = "" // nothing is compressed but the skeleton
	}
	if len(b.ClosureGraphs) > 0 {
		b.CacheDir = "" // the graph has no NAR hashes to key entries by
		if !nixstore.IsStorePath(b.Target) {
			return nil, &UsageError{fmt.Sprintf("with a closure graph, the target must be a store path, not %q", b.Target)}
		}
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
	cache *aci.Cache
	opts  []aci.Option
	// names are the staged files to move into place, stale the old files
	// to remove; layersWritten what to record in the layer index.
	names, stale  []string
	layersWritten map[string]indexEntry
	index         *layerIndex
	// mu guards the fields above and Progress, for layers written at once.
	mu sync.Mutex
}

func (b *build) run(ctx context.Context) (*Result, error) {
	var popts []pkgs.Option
	if b.Recipes != "" {
		popts = append(popts, pkgs.WithUserRecipes(b.Recipes))
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
	// Name the outputs before building, to place the GC roots beside them.
	first := t.Packages[0]
	spec := t.Spec
	spec.Name = orDefault(spec.Name, first.PName)
	spec.Version = orDefault(spec.Version, first.Version)
	spec.System = orDefault(spec.System, first.System)
	spec.Exec = []string{"/placeholder"}
	probe, err := manifest.New(spec)
	if err != nil {
		return nil, err
	}
	fileName, err := manifest.FileName(probe)
	if err != nil {
		return nil, err
	}
	base := strings.TrimSuffix(fileName, ".aci")
	if b.st, err = outdir.Begin(b.OutDir); err != nil {
		return nil, err
	}
	committed := false
	defer func() {
		if !committed {
			b.st.Abort()
		}
	}()
	// Roots inside the staging directory keep the packages alive while
	// the images are written; the final roots replace the old ones only
	// when the new image replaces the old image.
	inNix := len(b.ClosureGraphs) > 0
	if !inNix {
		if err := t.Realise(ctx, b.st.Path("gcroot")); err != nil {
			return nil, err
		}
	}
	if err := t.Finish(); err != nil {
		return nil, err
	}
	var g *nixstore.Graph
	if inNix {
		g, err = graphFromFiles(b.ClosureGraphs, t.StorePaths())
	} else {
		g, err = nixstore.Closure(ctx, t.StorePaths())
	}
	if err != nil {
		return nil, err
	}
	spec = t.Spec
	spec.Created = b.Created
	spec.Kind = b.Kind
	if b.Kind == Thin {
		spec.Mounts = append(spec.Mounts, manifest.StoreMounts(g.StorePaths())...)
	}
	im, err := manifest.New(spec)
	if err != nil {
		return nil, err
	}
	extra, err := Skeleton(spec)
	if err != nil {
		return nil, err
	}
	whole := aci.Image{Manifest: im, Closure: g, Packages: t.StorePaths(), Thin: b.Kind == Thin, Extra: extra}
	if !b.NoExecCheck {
		if err := aci.CheckExec(whole); err != nil {
			return nil, err
		}
		if err := checkUserGroup(whole, im.App.User, im.App.Group); err != nil {
			return nil, err
		}
	}

	b.opts = []aci.Option{aci.WithCompression(b.Compression, b.Level)}
	if b.Jobs > 0 {
		b.opts = append(b.opts, aci.WithJobs(b.Jobs))
	}
	if b.CacheDir != "" {
		if b.cache, err = aci.OpenCache(b.CacheDir); err != nil {
			b.Warn(fmt.Sprintf("%v; building without the cache", err))
		} else {
			if b.CacheKeyValue != nil {
				if err := b.cache.UseKey(b.CacheKeyValue); err != nil {
					return nil, &UsageError{Msg: err.Error()}
				}
			} else if b.CacheKey != "" {
				if _, err := b.cache.LoadKey(b.CacheKey); err != nil {
					b.Warn(fmt.Sprintf("%v; until then, builds do not use the cache (slower)", err))
				}
			}
			b.opts = append(b.opts, aci.WithCache(b.cache))
		}
	}

	out := &Result{Name: im.Name.String(), Kind: b.Kind, Offline: t.Offline}
	img := whole
	depsName := base + ".deps"
	if b.Kind == Layered {
		prefix := b.LayerPrefix
		if prefix == "" {
			prefix = DefaultLayerPrefix(im.Name.String())
		}
		layerPaths, rest := PlanLayers(g, t.StorePaths(), b.MaxLayers)
		// Layers are written a few at a time: most are small, and one
		// image's compression would leave cores idle.
		images := make([]*Image, len(layerPaths))
		deps := make([]manifest.Dependency, len(layerPaths))
		eg, lctx := errgroup.WithContext(ctx)
		eg.SetLimit(max(2, min(4, runtime.GOMAXPROCS(0))))
		for i, paths := range layerPaths {
			eg.Go(func() error {
				var err error
				images[i], deps[i], err = b.layer(lctx, prefix, spec.System, paths)
				return err
			})
		}
		if err := eg.Wait(); err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("build of %s interrupted; nothing was written: %w", fileName, context.Cause(ctx))
			}
			return nil, err
		}
		var files []string
		for _, l := range images {
			out.Layers = append(out.Layers, *l)
			files = append(files, l.ACI)
		}
		if err := manifest.AddDependencies(im, deps); err != nil {
			return nil, err
		}
		img.Closure = &nixstore.Graph{Roots: g.Roots, Paths: rest}
		var list strings.Builder
		for _, f := range files {
			list.WriteString(f + "\n")
		}
		if err := os.WriteFile(b.st.Path(depsName), []byte(list.String()), 0o644); err != nil {
			return nil, fmt.Errorf("writing %s: %w", b.st.Final(depsName), err)
		}
		for i := range out.Layers {
			out.Layers[i].ACI = b.st.Final(out.Layers[i].ACI)
			if out.Layers[i].Signature != "" {
				out.Layers[i].Signature = b.st.Final(out.Layers[i].Signature)
			}
		}
	} else {
		b.add("", depsName)
	}

	res, err := b.write(ctx, fileName, img, b.Created)
	if err != nil {
		return nil, err
	}
	for _, cf := range res.Conflicts {
		b.Warn(fmt.Sprintf("two packages provide %s", cf))
	}
	if b.Kind == Layered {
		b.add(depsName, "")
	}
	argsName := base + ".rkt-args"
	if b.Kind == Thin {
		if err := os.WriteFile(b.st.Path(argsName), []byte(manifest.RktVolumeArgs(g.StorePaths())), 0o644); err != nil {
			return nil, fmt.Errorf("writing %s: %w", b.st.Final(argsName), err)
		}
		b.add(argsName, "")
	} else {
		b.add("", argsName)
	}
	signed, err := b.sign(ctx, fileName)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("build of %s interrupted; nothing was written: %w", fileName, context.Cause(ctx))
	}
	gcroot := b.st.Final(base + ".gcroot")
	committed = true
	err = b.st.Commit(b.names, b.stale, func() error {
		// The new image is in place: point its roots at its packages. The
		// staging roots still hold them until this is done. (Inside a Nix
		// build, the derivation's references are its roots.)
		if !inNix {
			if err := t.Realise(context.WithoutCancel(ctx), gcroot); err != nil {
				return fmt.Errorf("%s is written, but registering its GC roots failed (a garbage collection may remove what it needs; build again): %w", b.st.Final(fileName), err)
			}
			removeStaleRoots(gcroot, len(t.Packages))
		}
		if len(b.layersWritten) > 0 && !inNix { // stat data would make a derivation's output differ
			if err := recordLayers(b.OutDir, b.layersWritten); err != nil {
				b.Warn(fmt.Sprintf("recording the layers written (the next build writes them again): %v", err))
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out.ACI = b.st.Final(fileName)
	out.ImageID, out.StorePaths, out.CachedPaths, out.Size = res.ImageID, res.StorePaths, res.CachedPaths, res.Size
	out.Conflicts = res.Conflicts
	if !inNix {
		out.GCRoots = gcRoots(gcroot, len(t.Packages))
	}
	out.Version, _ = im.Labels.Get("version")
	out.OS, _ = im.Labels.Get("os")
	out.Arch, _ = im.Labels.Get("arch")
	if b.Kind == Thin {
		out.RktArgs = b.st.Final(argsName)
	}
	if b.Kind == Layered {
		out.Deps = b.st.Final(depsName)
	}
	if signed {
		out.Signature = b.st.Final(fileName + ".asc")
	}
	if b.cache != nil && b.CacheMax > 0 {
		if _, err := b.cache.GC(b.CacheMax); err != nil {
			b.Warn(fmt.Sprintf("trimming cache: %v", err))
		}
	}
	return out, nil
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

// layer writes (or reuses) the layer image of paths, returning it
// (its files relative to the output directory) and the dependency that
// names it.
func (b *build) layer(ctx context.Context, prefix, system string, paths []nixstore.PathInfo) (*Image, manifest.Dependency, error) {
	name, version, err := LayerName(prefix, paths)
	if err != nil {
		return nil, manifest.Dependency{}, fmt.Errorf("layer of %s: %w", paths[0].Path, err)
	}
	lm, err := manifest.NewLayer(name, version, system)
	if err != nil {
		return nil, manifest.Dependency{}, err
	}
	file, err := manifest.FlatFileName(lm)
	if err != nil {
		return nil, manifest.Dependency{}, err
	}
	l := &Image{ACI: file, Name: name, Version: version, StorePaths: len(paths)}
	signer := ""
	if b.Signer != nil {
		signer = b.Signer.Fingerprint
	}
	b.mu.Lock()
	e, reuse := readIndexOnce(b).reusable(b.OutDir, file, signer)
	b.mu.Unlock()
	if reuse {
		l.ImageID, l.Size, l.Reused = e.ImageID, e.Size, true
		if signer != "" {
			l.Signature = file + ".asc"
		}
	} else {
		roots := make([]string, len(paths))
		for i, p := range paths {
			roots[i] = p.Path
		}
		res, err := b.write(ctx, file, aci.Image{Manifest: lm, Closure: &nixstore.Graph{Roots: roots, Paths: paths}}, time.Unix(0, 0))
		if err != nil {
			return nil, manifest.Dependency{}, err
		}
		l.ImageID, l.Size = res.ImageID, res.Size
		signed, err := b.sign(ctx, file)
		if err != nil {
			return nil, manifest.Dependency{}, err
		}
		e := indexEntry{ImageID: res.ImageID, Size: res.Size}
		if signed {
			l.Signature = file + ".asc"
			e.SignedBy = signer
		}
		b.mu.Lock()
		if b.layersWritten == nil {
			b.layersWritten = map[string]indexEntry{}
		}
		b.layersWritten[file] = e
		b.mu.Unlock()
	}
	labels := map[string]string{"version": version}
	for _, k := range []string{"os", "arch"} {
		labels[k], _ = lm.Labels.Get(k)
	}
	return l, manifest.Dependency{Name: name, ImageID: l.ImageID, Labels: labels}, nil
}

// readIndexOnce reads the output directory's layer index the first time
// it is needed.
func readIndexOnce(b *build) *layerIndex {
	if b.index == nil {
		b.index = readIndex(b.OutDir)
	}
	return b.index
}

func gcRoots(gcroot string, n int) []string {
	roots := []string{gcroot}
	for i := 2; i <= n; i++ {
		roots = append(roots, fmt.Sprintf("%s-%d", gcroot, i))
	}
	return roots
}

// removeStaleRoots removes the roots gcroot-N, N > n, that a previous
// build with more packages left.
func removeStaleRoots(gcroot string, n int) {
	for i := max(n+1, 2); ; i++ {
		r := fmt.Sprintf("%s-%d", gcroot, i)
		fi, err := os.Lstat(r)
		if err != nil || fi.Mode()&os.ModeSymlink == 0 {
			return
		}
		os.Remove(r)
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

// graphFromFiles reads exportReferencesGraph files (bounded: they are
// input) and returns the closure of roots they describe.
func graphFromFiles(files, roots []string) (*nixstore.Graph, error) {
	byPath := map[string]nixstore.PathInfo{}
	for _, f := range files {
		data, err := safeio.ReadFile(f, 256<<20)
		if err != nil {
			return nil, fmt.Errorf("reading the closure graph: %w", err)
		}
		g, err := nixstore.ReadGraph(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("closure graph %s: %w", f, err)
		}
		for _, p := range g.Paths {
			byPath[p.Path] = p
		}
	}
	// Only what the roots reach, and all of it.
	seen := map[string]bool{}
	var out []nixstore.PathInfo
	todo := append([]string(nil), roots...)
	for len(todo) > 0 {
		p := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		if seen[p] {
			continue
		}
		seen[p] = true
		info, ok := byPath[p]
		if !ok {
			return nil, fmt.Errorf("the closure graph lacks %s: export the references graph of every package (exportReferencesGraph)", p)
		}
		out = append(out, info)
		todo = append(todo, info.References...)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return &nixstore.Graph{Roots: roots, Paths: out}, nil
}
