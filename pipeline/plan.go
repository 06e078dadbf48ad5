package pipeline

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/appc/spec/schema"
	"github.com/appc/spec/schema/types"

	"github.com/nix2aci/nix2aci/aci"
	"github.com/nix2aci/nix2aci/internal/safeio"
	"github.com/nix2aci/nix2aci/manifest"
	"github.com/nix2aci/nix2aci/nixstore"
	"github.com/nix2aci/nix2aci/oci"
	"github.com/nix2aci/nix2aci/pkgs"
)

// A Plan is every image a build writes, decided before any is written:
// what each image holds, its manifest, and the images it is rendered on.
// Planners (fat, thin, layered, grouped, on a base) make plans; one
// writer (build.writePlan) carries out any plan without knowing which
// planner made it.
type Plan struct {
	// Images in an order they can be written in: each after every image
	// it depends on. The last is the target's image (the app).
	Images []*PlanImage
	// Base is an image outside the plan that the lowest planned images
	// depend on (nil for none): a published base.
	Base *Base
}

// PlanImage is one image of a plan.
type PlanImage struct {
	// Manifest is the image's manifest without its dependencies on
	// images of the plan, which the writer adds, by image ID, once they
	// are written. For a Shared image whose version is VersionFromContents,
	// the version label is set then too.
	Manifest *schema.ImageManifest
	// Content is what the archive holds (its Manifest is set by the
	// writer).
	Content aci.Image
	// DependsOn are the images it is rendered on, in rendering order.
	DependsOn []*PlanImage
	// OnBase says it depends on the plan's Base, before DependsOn.
	OnBase bool
	// Shared images (layers, groups) are named by their contents, so that
	// any app's build writes the same file for them: the writer may reuse
	// one already in the output directory when the layer index proves it.
	Shared bool
	// VersionFromContents sets the version label, once the dependencies
	// are written, to a digest of the image's store paths and the image
	// IDs it depends on.
	VersionFromContents bool
	// HoldsPaths makes the manifest say which store paths the image and
	// everything below it hold (annotation StorePathsAnnotation), so that
	// an app can be built on it as a base without its bytes.
	HoldsPaths bool
	// Created is the mtime of entries not from the store.
	Created time.Time
}

// Base is a published image an app is built on: it holds Paths (itself
// and its dependencies), and the app depends on it by ImageID.
type Base struct {
	// File is the image file, when it is at hand (listed in .deps).
	File    string
	Name    string
	ImageID string
	Labels  map[string]string
	// Paths are the store paths it holds, its dependencies included.
	Paths map[string]bool
	// Dependencies are the images it is rendered on.
	Dependencies types.Dependencies
	// Images is how many images its tree holds, itself included.
	Images int
	// near are files where the images below it may be (a description's).
	near []string
	// layout is an OCI base's image (ocibase.go).
	layout *oci.Stored
}

// StorePathsAnnotation lists, in a base image's manifest, the store paths
// the image and its dependencies hold, sorted, one per line;
// ImagesAnnotation says how many images that is (a decimal number), so
// that an app built on it knows what is left of its layer budget.
const (
	StorePathsAnnotation = "nix2aci/store-paths"
	ImagesAnnotation     = "nix2aci/images"
)

// Group is a named group of packages whose closure (less what lower
// groups hold) becomes one image of a chain: see PlanGroups.
type Group struct {
	Name  string
	Roots []string
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

// planSingle is the plan of a fat or thin image: one image with the
// whole closure.
func planSingle(app *schema.ImageManifest, content aci.Image) *Plan {
	return &Plan{Images: []*PlanImage{{Manifest: app, Content: content}}}
}

// Layering is what a layered plan is made of: the closure, the app's
// own packages, the named groups (lowest first), a base, and the layer
// budget for what is left.
type Layering struct {
	Closure *nixstore.Graph // the app's closure and every group's
	App     []string        // the app's packages (they stay in the app image)
	Groups  []Group
	Base    *Base
	Prefix  string // names the layers and groups
	System  string
	Budget  int // images below the app at most: the base's, the groups, then layers by popularity
	// GroupOnly plans the groups alone, the top one last, and no app.
	GroupOnly bool
	Created   time.Time
	AppRoots  []string // the roots of the app's own closure
	// First are store paths that get a layer of their own before the
	// most popular ones, the budget permitting (see PlanLayers).
	First []string
}

// PlanGroups makes the plan of an app built in layers. Each group becomes
// one image holding the closure of its packages less what the base and
// the groups below it hold, depending on the group directly below it (the
// lowest on the base): a chain. Of what is left of the app's closure, the
// app's own packages stay in the app image and the rest is layered by
// popularity within the budget (see PlanLayers), or stays with the app
// when the budget is 0. The app depends on the top of the chain and on
// its layers. No store path is in two images, by construction; check
// proves it of the finished plan.
func PlanGroups(l Layering, app *schema.ImageManifest, content aci.Image) (*Plan, error) {
	index := make(map[string]nixstore.PathInfo, len(l.Closure.Paths))
	for _, p := range l.Closure.Paths {
		index[p.Path] = p
	}
	taken := map[string]bool{}
	if l.Base != nil {
		for p := range l.Base.Paths {
			taken[p] = true
		}
	}
	plan := &Plan{Base: l.Base}
	var below *PlanImage
	named := map[string]bool{}
	for _, grp := range l.Groups {
		if named[grp.Name] {
			return nil, &UsageError{fmt.Sprintf("two layer groups are named %s: name each once", safeio.Quote(grp.Name))}
		}
		named[grp.Name] = true
		if strings.Contains(grp.Name, "/") || manifest.CheckIdentifier(grp.Name) != nil {
			return nil, &UsageError{fmt.Sprintf("the layer group name %s is not one AC Name (lower case letters, digits, -, ., _ ~): rename it, e.g. \"runtime\"", safeio.Quote(grp.Name))}
		}
		paths, err := closureOf(index, grp.Roots, taken)
		if err != nil {
			return nil, fmt.Errorf("layer group %s: %w", grp.Name, err)
		}
		if len(paths) == 0 {
			return nil, &UsageError{fmt.Sprintf("the layer group %s holds nothing that the base or the groups below it do not: remove it, or move packages into it", grp.Name)}
		}
		name := l.Prefix + "/" + grp.Name
		if err := manifest.CheckIdentifier(name); err != nil {
			return nil, &UsageError{fmt.Sprintf("layer group %s: %v", grp.Name, err)}
		}
		lm, err := manifest.NewLayer(name, "0", l.System)
		if err != nil {
			return nil, err
		}
		g := &PlanImage{Manifest: lm, Content: aci.Image{Closure: graphOf(paths)}, Shared: true,
			VersionFromContents: true, HoldsPaths: true, Created: time.Unix(0, 0)}
		if below != nil {
			g.DependsOn = []*PlanImage{below}
		} else {
			g.OnBase = l.Base != nil
		}
		for _, p := range paths {
			taken[p.Path] = true
		}
		plan.Images = append(plan.Images, g)
		below = g
	}
	if l.GroupOnly {
		if below == nil {
			return nil, &UsageError{"a group-only build needs a group"}
		}
		return plan, plan.check()
	}
	// What is left of the app's closure.
	appClosure, err := closureOf(index, l.AppRoots, taken)
	if err != nil {
		return nil, err
	}
	if l.Base != nil && !l.sharesBase(index) {
		return nil, &UsageError{fmt.Sprintf("the app shares no store path with the base %s: a base that saves nothing is a mistake (built from another nixpkgs?); build without --base, or on a base built from the same package set", l.Base.Name)}
	}
	rest := graphOf(appClosure)
	var layers []*PlanImage
	left := l.Budget - len(l.Groups)
	if l.Base != nil {
		left -= max(1, l.Base.Images)
	}
	if left > 0 {
		layerPaths, kept := PlanLayers(rest, l.App, left, l.First...)
		for _, paths := range layerPaths {
			name, version, err := LayerName(l.Prefix, paths)
			if err != nil {
				return nil, fmt.Errorf("layer of %s: %w", paths[0].Path, err)
			}
			lm, err := manifest.NewLayer(name, version, l.System)
			if err != nil {
				return nil, err
			}
			layers = append(layers, &PlanImage{Manifest: lm, Content: aci.Image{Closure: graphOf(paths)}, Shared: true, Created: time.Unix(0, 0)})
		}
		rest = graphOf(kept)
	}
	content.Closure = &nixstore.Graph{Roots: l.AppRoots, Paths: rest.Paths}
	top := &PlanImage{Manifest: app, Content: content, Created: l.Created}
	if below != nil {
		top.DependsOn = append(top.DependsOn, below)
	} else {
		top.OnBase = l.Base != nil
	}
	top.DependsOn = append(top.DependsOn, layers...)
	plan.Images = append(plan.Images, layers...)
	plan.Images = append(plan.Images, top)
	return plan, plan.check()
}

// sharesBase reports whether the app or a group needs a store path the
// base holds.
func (l Layering) sharesBase(index map[string]nixstore.PathInfo) bool {
	roots := append([]string(nil), l.AppRoots...)
	for _, g := range l.Groups {
		roots = append(roots, g.Roots...)
	}
	all, _ := closureOf(index, roots, nil)
	for _, p := range all {
		if l.Base.Paths[p.Path] {
			return true
		}
	}
	return false
}

// closureOf returns the closure of roots in index, less the paths taken
// (and what only they reach is still included: a path's references are
// followed whether or not it is taken), sorted by path.
func closureOf(index map[string]nixstore.PathInfo, roots []string, taken map[string]bool) ([]nixstore.PathInfo, error) {
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
		info, ok := index[p]
		if !ok {
			return nil, &missingPathError{p}
		}
		if !taken[p] {
			out = append(out, info)
		}
		todo = append(todo, info.References...)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

// missingPathError is a path a closure lacks.
type missingPathError struct{ path string }

func (e *missingPathError) Error() string { return e.path + " is not in the closure" }

func graphOf(paths []nixstore.PathInfo) *nixstore.Graph {
	roots := make([]string, len(paths))
	for i, p := range paths {
		roots[i] = p.Path
	}
	return &nixstore.Graph{Roots: roots, Paths: paths}
}

// check proves what every plan must hold: images after their
// dependencies, the target's image last, no store path in two images of
// the dependency tree (nor in an image and the base), and a tree, not a
// graph: no image reached twice.
func (p *Plan) check() error {
	pos := map[*PlanImage]int{}
	for i, im := range p.Images {
		for _, d := range im.DependsOn {
			if _, ok := pos[d]; !ok {
				return fmt.Errorf("plan: %s is written before its dependency %s", im.Manifest.Name, d.Manifest.Name)
			}
		}
		pos[im] = i
	}
	owner := map[string]string{}
	if p.Base != nil {
		for path := range p.Base.Paths {
			owner[path] = p.Base.Name
		}
	}
	visited := map[*PlanImage]bool{}
	var walk func(im *PlanImage) error
	walk = func(im *PlanImage) error {
		if visited[im] {
			return fmt.Errorf("plan: %s is reached twice in the dependency tree (rkt would render it twice)", im.Manifest.Name)
		}
		visited[im] = true
		if im.Content.Closure != nil {
			for _, path := range im.Content.Closure.Paths {
				if o, ok := owner[path.Path]; ok {
					return fmt.Errorf("plan: %s is in both %s and %s", path.Path, o, im.Manifest.Name)
				}
				owner[path.Path] = im.Manifest.Name.String()
			}
		}
		for _, d := range im.DependsOn {
			if err := walk(d); err != nil {
				return err
			}
		}
		return nil
	}
	return walk(p.Images[len(p.Images)-1])
}

// renderOrder returns the images the target's image depends on, each
// once, in the order rkt renders them beneath it: for each dependency in
// the manifest's order, its own dependencies first, then itself (a later
// one lies above an earlier one).
func (p *Plan) renderOrder() []*PlanImage {
	var order []*PlanImage
	var visit func(im *PlanImage)
	visit = func(im *PlanImage) {
		for _, d := range im.DependsOn {
			visit(d)
			order = append(order, d)
		}
	}
	visit(p.Images[len(p.Images)-1])
	return order
}
