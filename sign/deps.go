package sign

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/appc/spec/schema"
	"github.com/appc/spec/schema/types"

	"github.com/nix2aci/nix2aci/internal/safeio"
	"github.com/nix2aci/nix2aci/manifest"
)

// Reasons a dependency tree is refused.
const (
	ReasonMissingDependency  Reason = "missing-dependency"
	ReasonUnpinnedDependency Reason = "unpinned-dependency"
	ReasonDependencyMismatch Reason = "dependency-mismatch"
	ReasonDependencyGraph    Reason = "dependency-graph"
	ReasonDepsFile           Reason = "bad-deps-file"
)

// Bounds on a dependency tree, whatever its manifests and files say.
const (
	// MaxDependencyDepth is how deep a tree may be: an app's layers are
	// at depth 1.
	MaxDependencyDepth = 16
	// DefaultMaxDependencies is how many images a tree may hold besides
	// the app when DependencyOptions sets no bound (a layered build makes
	// 100 by default).
	DefaultMaxDependencies = 1000
	// maxDepsFile bounds a .deps file: 1000 names of at most 231 bytes.
	maxDepsFile = 256 << 10
)

// DependencyFiles is where the files of an app's dependencies are: a
// directory, opened as a root so that no name and no symlink in it leads
// out, and, for a .deps file, the file names it lists.
//
// A dependency named N with labels version V, os O and arch A is looked
// for as nix2aci build writes layers into --out, N with each "/" made
// "_" (manifest.FlatFileName: example.com_nix_libfoo-V-O-A.aci), and, in
// a directory without a .deps file, as nix2aci publish puts it in a site,
// <dir of N>/<last component of N>-V-O-A.aci (manifest.FileName). Its
// signature is the file beside it with ".asc" appended.
type DependencyFiles struct {
	root *os.Root
	dir  string
	// site and siteDir are where site paths are looked up: dir, or for
	// an app found in a site by default, the site's base path.
	site    *os.Root
	siteDir string
	// deps is the .deps file read, "" when the files are looked up in
	// dir by name; listed is what it lists.
	deps   string
	listed map[string]bool
	order  []string
	// looked says, when the app's dependency files were found by
	// default, where verify looked, for the message if one is missing.
	looked string
}

// Dir is the directory the dependency files are read from.
func (d *DependencyFiles) Dir() string { return d.dir }

// DepsFile is the .deps file the dependencies are listed in, or "".
func (d *DependencyFiles) DepsFile() string { return d.deps }

// Close releases the directory.
func (d *DependencyFiles) Close() error {
	if d.site != d.root {
		d.site.Close()
	}
	return d.root.Close()
}

func depsFileError(file string, format string, args ...any) error {
	return &VerifyError{Reason: ReasonDepsFile, Msg: fmt.Sprintf("%s: ", safeio.Quote(file)) + fmt.Sprintf(format, args...)}
}

// OpenDepsFile reads the .deps file at path, which a layered build writes
// beside the app (the layer files, one per line, relative to its
// directory) and a deploy runs as `rkt fetch $(cat X.deps)`. It is
// hostile: at most 256 KiB, a regular file opened without blocking, its
// words (manifest.ShellWords) the words the shell makes of it, each one
// plain file name in the .deps file's directory (no "/", no "..", no
// leading "-" that rkt would take for a flag), ending in ".aci" (rkt
// fetches any other word by discovery), each listed once.
func OpenDepsFile(file string) (*DependencyFiles, error) {
	data, err := safeio.ReadFile(file, maxDepsFile)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, &VerifyError{Reason: ReasonMissingDependency, Msg: fmt.Sprintf("no .deps file %s: give the one the layered build wrote beside the app, or the directory holding its dependencies (--deps-dir DIR)", safeio.Quote(file))}
		}
		var tl *safeio.TooLargeError
		if errors.As(err, &tl) {
			return nil, depsFileError(file, "more than %d bytes; a .deps file names one layer file per line", maxDepsFile)
		}
		return nil, depsFileError(file, "%v", err)
	}
	words, err := parseDeps(file, data)
	if err != nil {
		return nil, err
	}
	listed := map[string]bool{}
	for _, w := range words {
		listed[w] = true
	}
	dir := filepath.Dir(file)
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("opening the directory of %s: %w", safeio.Quote(file), err)
	}
	return &DependencyFiles{root: root, dir: dir, site: root, siteDir: dir, deps: file, listed: listed, order: words}, nil
}

// parseDeps returns the file names the .deps file (named file) lists.
func parseDeps(file string, data []byte) ([]string, error) {
	words, err := manifest.ShellWords(data)
	if err != nil {
		return nil, depsFileError(file, "%v; rkt fetch $(cat FILE) would not get the file names it appears to hold", err)
	}
	listed := map[string]bool{}
	for _, w := range words {
		switch {
		case strings.HasPrefix(w, "-"):
			return nil, depsFileError(file, "%s starts with \"-\": rkt fetch would take it for an option", safeio.Quote(w))
		case strings.Contains(w, "/") || w == "." || w == ".." || !filepath.IsLocal(w):
			return nil, depsFileError(file, "%s is not a plain file name in the .deps file's directory", safeio.Quote(w))
		case !strings.HasSuffix(w, schema.ACIExtension) || w == schema.ACIExtension:
			return nil, depsFileError(file, "%s does not end in %s: rkt fetch would look the word up by discovery instead of reading a file", safeio.Quote(w), schema.ACIExtension)
		case listed[w]:
			return nil, depsFileError(file, "%s is listed twice", safeio.Quote(w))
		}
		listed[w] = true
	}
	return words, nil
}

// OpenDepsDir looks for dependency files by name in dir (see
// DependencyFiles), such as a build's --out or a site's base path.
func OpenDepsDir(dir string) (*DependencyFiles, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, &VerifyError{Reason: ReasonMissingDependency, Msg: fmt.Sprintf("the dependency directory %s does not exist", safeio.Quote(dir))}
		}
		return nil, fmt.Errorf("opening the dependency directory: %w", err)
	}
	return &DependencyFiles{root: root, dir: dir, site: root, siteDir: dir}, nil
}

// FindDependencyFiles finds the dependency files of the app at image,
// named appName, as a layered build or a site leaves them: the .deps file
// beside it (X.deps for X.aci) or, when image is a link such as
// result.aci, beside the file it points to; without one, by name in the
// directory that file is in and, when that directory is where a site
// puts appName (<base>/example.com for example.com/app), in the site's
// base path.
func FindDependencyFiles(image, appName string) (*DependencyFiles, error) {
	candidates := []string{strings.TrimSuffix(image, schema.ACIExtension) + ".deps"}
	dir := filepath.Dir(image)
	if real, err := filepath.EvalSymlinks(image); err == nil && real != image {
		candidates = append(candidates, strings.TrimSuffix(real, schema.ACIExtension)+".deps")
		dir = filepath.Dir(real)
	}
	for _, c := range candidates {
		if _, err := os.Lstat(c); err == nil {
			return OpenDepsFile(c)
		}
	}
	d, err := OpenDepsDir(dir)
	if err != nil {
		return nil, err
	}
	where := safeio.Quote(dir)
	if sub := filepath.FromSlash(path.Dir(appName)); sub != "." && (filepath.Clean(dir) == sub || strings.HasSuffix(filepath.Clean(dir), string(filepath.Separator)+sub)) {
		base := strings.TrimSuffix(strings.TrimSuffix(filepath.Clean(dir), sub), string(filepath.Separator))
		if base == "" {
			base = "."
			if filepath.IsAbs(dir) {
				base = string(filepath.Separator)
			}
		}
		if site, err := os.OpenRoot(base); err == nil {
			d.site, d.siteDir = site, base
			where += " and the site " + safeio.Quote(base)
		}
	}
	quoted := make([]string, len(candidates))
	for i, c := range candidates {
		quoted[i] = safeio.Quote(c)
	}
	d.looked = fmt.Sprintf("there is no %s, so the dependencies were looked for in %s", strings.Join(quoted, " nor "), where)
	return d, nil
}

// VerifiedDependency is one image of an app's dependency tree, verified.
type VerifiedDependency struct {
	Image        string `json:"image"`     // its file
	Signature    string `json:"signature"` // its signature file
	DependencyOf string `json:"dependencyOf"`
	*Verified
}

// DependencyOptions change how VerifyDependencies reads the tree.
type DependencyOptions struct {
	// VerifyOptions apply to each dependency (Now, MaxImageSize, Full);
	// its image ID is always computed.
	VerifyOptions
	// MaxImages bounds the images of the tree besides the app (0:
	// DefaultMaxDependencies).
	MaxImages int
}

// VerifyDependencies checks the whole dependency tree of the verified app
// as rkt would fetch and render it, from the files in files: for every
// dependency of the app, and of each dependency in turn, that it is
// pinned by image ID (rkt would otherwise render whatever its name and
// labels resolve to), that its file is there and its signature (the file
// beside it) passes every check VerifyWith makes, the key trusted for
// the dependency's own name, that its image ID, computed from the file,
// is the pin and its name and labels those the dependency asks for.
// Trees rkt cannot render as written are refused: a cycle (rkt would
// fetch forever) and an image reached twice (rkt's renderer lists a
// dependency once for every path to it, files of images listed first
// winning, so a copy can end up above an image that depends on it and
// cover that image's files). The depth (MaxDependencyDepth) and the
// number of images are bounded; the images are verified one after
// another, and only the manifests of the path from the app to the image
// at hand are kept. With a .deps file, every dependency must be listed in
// it and everything listed must be a dependency: a deploy runs
// `rkt fetch $(cat X.deps)`. It returns the dependencies in the order
// they were checked (depth first, in manifest order).
func VerifyDependencies(ctx context.Context, app *Verified, files *DependencyFiles, trust *Trust, o DependencyOptions) ([]*VerifiedDependency, error) {
	if o.MaxImages <= 0 {
		o.MaxImages = DefaultMaxDependencies
	}
	o.ImageID, o.ImageIDIfDependencies = true, false
	w := &depWalker{ctx: ctx, files: files, trust: trust, o: o, seen: map[string]string{}, used: map[string]bool{}}
	top := link{name: app.Name, labels: app.Manifest.Labels, id: app.ImageID}
	if err := w.walk(app.Manifest, []link{top}); err != nil {
		return nil, err
	}
	for _, l := range files.order {
		if !w.used[l] {
			return nil, depsFileError(files.deps, "lists %s, which is no dependency of %s; rkt fetch $(cat FILE) would import it too (list only the app's layers)", safeio.Quote(l), app.Name)
		}
	}
	return w.out, nil
}

// link is an image on the path from the app to the dependency at hand.
type link struct {
	name   string
	labels types.Labels
	id     string
}

func (l link) String() string {
	if l.id == "" {
		return l.name
	}
	return l.name + " (" + short(l.id) + ")"
}

type depWalker struct {
	ctx   context.Context
	files *DependencyFiles
	trust *Trust
	o     DependencyOptions
	seen  map[string]string // image ID -> the image that listed it first
	used  map[string]bool   // names of the .deps file found
	out   []*VerifiedDependency
}

// walk checks the dependencies of im, the last image of chain, and theirs.
func (w *depWalker) walk(im *schema.ImageManifest, chain []link) error {
	parent := chain[len(chain)-1]
	for _, d := range im.Dependencies {
		name := d.ImageName.String()
		what := fmt.Sprintf("%s (a dependency of %s)", describeDep(d), parent.name)
		for i, c := range chain {
			if c.name == name && labelsHave(c.labels, d.Labels) {
				return &VerifyError{Reason: ReasonDependencyGraph, Msg: fmt.Sprintf("the dependencies form a cycle: %s depends on %s again; rkt would fetch them forever", pathOf(chain[i:]), describeDep(d))}
			}
		}
		if d.ImageID == nil {
			return &VerifyError{Reason: ReasonUnpinnedDependency, Msg: fmt.Sprintf("%s is not pinned by image ID: rkt would render whatever its name and labels resolve to; rebuild %s so that its manifest names each dependency's imageID", what, parent.name)}
		}
		id := d.ImageID.String()
		if by, ok := w.seen[id]; ok {
			return &VerifyError{Reason: ReasonDependencyGraph, Msg: fmt.Sprintf("%s is reached twice in the dependency tree, through %s and through %s: rkt's renderer lists it once for each path, so a copy can end up above an image that depends on it and cover that image's files; nix2aci refuses such trees (depend on each image once)", describeDep(d), by, parent.name)}
		}
		if len(chain) > MaxDependencyDepth {
			return &VerifyError{Reason: ReasonDependencyGraph, Msg: fmt.Sprintf("the dependency tree is more than %d images deep (%s → %s)", MaxDependencyDepth, pathOf(chain), describeDep(d))}
		}
		if len(w.out) == w.o.MaxImages {
			return &VerifyError{Reason: ReasonDependencyGraph, Msg: fmt.Sprintf("the dependency tree holds more than %d images; raise the bound (--max-deps) if that is meant", w.o.MaxImages)}
		}
		if err := w.ctx.Err(); err != nil {
			return context.Cause(w.ctx)
		}
		vd, err := w.verify(d, what, im)
		if err != nil {
			return err
		}
		vd.DependencyOf = parent.name
		switch {
		case vd.ImageID != id:
			return &VerifyError{Reason: ReasonDependencyMismatch, Msg: fmt.Sprintf("%s is pinned to image ID %s, but %s has image ID %s: it is not the image the app was built on; rebuild the app, or put the layer files of its own build beside it", what, short(id), safeio.Quote(vd.Image), short(vd.ImageID))}
		case vd.Name != name:
			return &VerifyError{Reason: ReasonDependencyMismatch, Msg: fmt.Sprintf("%s is found in %s, whose image is named %s", what, safeio.Quote(vd.Image), safeio.Quote(vd.Name))}
		case !labelsHave(vd.Manifest.Labels, d.Labels):
			return &VerifyError{Reason: ReasonDependencyMismatch, Msg: fmt.Sprintf("%s is found in %s, whose labels are %s", what, safeio.Quote(vd.Image), safeio.Quote(labelString(vd.Manifest.Labels)))}
		}
		w.seen[id] = parent.name
		w.out = append(w.out, vd)
		sub := vd.Manifest
		vd.Manifest = nil // only the chain's manifests are kept
		if len(sub.Dependencies) > 0 {
			if err := w.walk(sub, append(chain, link{name: vd.Name, labels: sub.Labels, id: vd.ImageID})); err != nil {
				return err
			}
		}
	}
	return nil
}

// place is where a dependency's file may be: name inside root, opened
// on dir.
type place struct {
	root *os.Root
	dir  string
	name string
}

func (p place) path() string { return filepath.Join(p.dir, filepath.FromSlash(p.name)) }

// verify finds the file of dependency d of im and verifies it.
func (w *depWalker) verify(d types.Dependency, what string, im *schema.ImageManifest) (*VerifiedDependency, error) {
	places, err := w.candidates(d, im)
	if err != nil {
		return nil, &VerifyError{Reason: ReasonMissingDependency, Msg: fmt.Sprintf("%s: %v", what, err)}
	}
	var f *os.File
	var found place
	for _, p := range places {
		if f, err = open(p); err == nil {
			found = p
			break
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, &VerifyError{Reason: ReasonMissingDependency, Msg: fmt.Sprintf("%s: %v", what, err)}
		}
	}
	if f == nil {
		return nil, w.missing(what, places)
	}
	defer f.Close()
	file := found.path()
	sigPlace := found
	sigPlace.name += ".asc"
	sig, err := open(sigPlace)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, &VerifyError{Reason: ReasonMissing, Msg: fmt.Sprintf("%s: no signature %s beside %s; sign it (nix2aci sign), or build the app with --sign, which signs every layer", what, safeio.Quote(file+".asc"), safeio.Quote(file))}
		}
		return nil, &VerifyError{Reason: ReasonMalformed, Msg: fmt.Sprintf("%s: cannot read the signature: %v", what, err)}
	}
	defer sig.Close()
	v, err := VerifyWith(safeio.WithContext(w.ctx, f), sig, w.trust, w.o.VerifyOptions)
	if err != nil {
		if w.ctx.Err() != nil {
			return nil, context.Cause(w.ctx)
		}
		var ve *VerifyError
		if errors.As(err, &ve) {
			return nil, &VerifyError{Reason: ve.Reason, Msg: fmt.Sprintf("%s, in %s: %s", what, safeio.Quote(file), ve.Msg)}
		}
		return nil, fmt.Errorf("%s, in %s: %w", what, safeio.Quote(file), err)
	}
	if w.files.listed != nil {
		w.used[found.name] = true
	}
	return &VerifiedDependency{Image: file, Signature: file + ".asc", Verified: v}, nil
}

// candidates are the places the file of dependency d of im may be.
func (w *depWalker) candidates(d types.Dependency, im *schema.ImageManifest) ([]place, error) {
	// A dependency without os or arch labels is fetched for the os and
	// arch of the image that lists it.
	fake := &schema.ImageManifest{Name: d.ImageName, Labels: append(types.Labels{}, d.Labels...)}
	for _, l := range []string{"os", "arch"} {
		if _, ok := fake.Labels.Get(l); !ok {
			if v, ok := im.Labels.Get(l); ok {
				fake.Labels = append(fake.Labels, types.Label{Name: types.ACIdentifier(l), Value: v})
			}
		}
	}
	flat, err := manifest.FlatFileName(fake)
	if err != nil {
		return nil, err
	}
	files := w.files
	if files.listed != nil {
		if !files.listed[flat] {
			return nil, fmt.Errorf("%s does not list it (as %s, the name a layered build gives its file)", safeio.Quote(files.deps), safeio.Quote(flat))
		}
		return []place{{files.root, files.dir, flat}}, nil
	}
	site, err := manifest.FileName(fake)
	if err != nil {
		return nil, err
	}
	return []place{{files.root, files.dir, flat}, {files.site, files.siteDir, path.Join(path.Dir(d.ImageName.String()), site)}}, nil
}

// open opens p: a regular file, without blocking, never through a
// symlink or ".." that leads out of its directory.
func open(p place) (*os.File, error) {
	f, err := p.root.OpenFile(p.name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("%s cannot be opened inside %s (a symlink leading out of it?): %v", safeio.Quote(p.name), safeio.Quote(p.dir), unwrapPath(err))
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = &safeio.NotRegularError{Path: p.path(), Mode: fi.Mode()}
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func (w *depWalker) missing(what string, places []place) error {
	where := make([]string, len(places))
	for i, p := range places {
		where[i] = safeio.Quote(p.path())
	}
	msg := fmt.Sprintf("%s: no file %s", what, strings.Join(where, " nor "))
	switch {
	case w.files.looked != "":
		msg += "; " + w.files.looked + ": give the app's .deps file (--deps FILE.deps) or the directory holding its dependencies (--deps-dir DIR)"
	case w.files.deps != "":
		msg += fmt.Sprintf(", which %s lists", safeio.Quote(w.files.deps))
	}
	return &VerifyError{Reason: ReasonMissingDependency, Msg: msg}
}

// labelsHave reports whether have holds every label of want, with its
// value.
func labelsHave(have, want types.Labels) bool {
	for _, l := range want {
		if v, ok := have.Get(l.Name.String()); !ok || v != l.Value {
			return false
		}
	}
	return true
}

func labelString(ls types.Labels) string {
	parts := make([]string, len(ls))
	for i, l := range ls {
		parts[i] = l.Name.String() + "=" + l.Value
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

func describeDep(d types.Dependency) string {
	s := d.ImageName.String()
	if ls := labelString(d.Labels); ls != "" {
		s += "," + ls
	}
	return safeio.Quote(s)
}

func pathOf(chain []link) string {
	parts := make([]string, len(chain))
	for i, l := range chain {
		parts[i] = safeio.Quote(l.String())
	}
	return strings.Join(parts, " → ")
}
