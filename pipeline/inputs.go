package pipeline

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/nix2aci/nix2aci/aci"
	"github.com/nix2aci/nix2aci/manifest"
	"github.com/nix2aci/nix2aci/nixstore"
	"github.com/nix2aci/nix2aci/pkgs"
)

// A build's inputs (steps 1 and 2 of run): the target resolved to its
// packages and settings, the packages built, their closure read, and the
// app's manifest and skeleton made, all that the plan is made from.

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

func (b *build) inNix() bool { return len(b.ClosureGraphs) > 0 }
