package pkgs

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"

	"github.com/nix2aci/nix2aci/internal/safeio"
	"github.com/nix2aci/nix2aci/manifest"
	"github.com/nix2aci/nix2aci/nixstore"
)

//go:embed recipes/*.nix nix/*.nix
var embedded embed.FS

// Package is one package of a resolved target.
type Package struct {
	Name    string `json:"name"`
	PName   string `json:"pname"`
	Version string `json:"version"`
	DrvPath string `json:"drvPath,omitempty"`
	OutPath string `json:"storePath"`
	System  string `json:"system"`
}

// Target is a resolved build target: its packages and image settings.
type Target struct {
	// Kind is "store-path", "file", "recipe", "attr" or "flake".
	Kind string `json:"kind"`
	// Offline is true when the offline package set stood in for nixpkgs.
	Offline  bool      `json:"offline"`
	Packages []Package `json:"packages"`
	// Layers are the recipe's named layer groups, lowest first (see
	// pipeline.PlanGroups): each becomes one image of a chain below the
	// app.
	Layers []LayerGroup  `json:"layers,omitempty"`
	Spec   manifest.Spec `json:"spec"`
}

// LayerGroup is a named group of packages a recipe layers its image on.
type LayerGroup struct {
	Name     string    `json:"name"`
	Packages []Package `json:"packages"`
}

// AllPackages are the packages and the layer groups' packages, in order:
// everything the build realises.
func (t *Target) AllPackages() []Package {
	all := append([]Package(nil), t.Packages...)
	for _, g := range t.Layers {
		all = append(all, g.Packages...)
	}
	return all
}

// StorePaths returns the packages' output paths, in order.
func (t *Target) StorePaths() []string {
	out := make([]string, len(t.Packages))
	for i, p := range t.Packages {
		out[i] = p.OutPath
	}
	return out
}

type options struct {
	userDir string
	busybox string
	nixBin  string
	flakes  bool
}

// Option changes how targets resolve.
type Option func(*options)

// WithUserRecipes adds a directory of recipes (NAME.nix) that override the
// built-in ones.
func WithUserRecipes(dir string) Option { return func(o *options) { o.userDir = dir } }

// WithHostBusybox names the static busybox the offline package set imports
// (default /bin/busybox).
func WithHostBusybox(path string) Option { return func(o *options) { o.busybox = path } }

func newOptions(opts []Option) options {
	o := options{busybox: "/bin/busybox", nixBin: "nix-instantiate"}
	for _, f := range opts {
		f(&o)
	}
	return o
}

// NotFoundError reports a target that is none of the things a target can
// be, or whose evaluation failed.
type NotFoundError struct{ Target, Reason string }

func (e *NotFoundError) Error() string {
	return fmt.Sprintf("cannot build %q: %s", e.Target, e.Reason)
}

var attrPattern = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_'-]*(\.[A-Za-z_][A-Za-z0-9_'-]*)*$`)

// Resolve evaluates target (see the package doc for what it may be).
func Resolve(ctx context.Context, target string, opts ...Option) (*Target, error) {
	o := newOptions(opts)
	if target == "" {
		return nil, &NotFoundError{Target: target, Reason: "no target given: name a recipe (nix2aci pkgs list), a nixpkgs attribute, a /nix/store path or a .nix file"}
	}
	if IsFlakeRef(target) {
		return o.flake(ctx, target)
	}
	// A store path, or a link into the store such as ./result.
	if strings.HasPrefix(target, nixstore.StoreDir+"/") || isStoreLink(target) {
		p, err := nixstore.ToStorePath(target)
		if err != nil {
			return nil, err
		}
		name, version := ParseName(nixstore.NamePart(p))
		return &Target{Kind: "store-path", Packages: []Package{{Name: nixstore.NamePart(p), PName: name, Version: version, OutPath: p, System: HostSystem()}}}, nil
	}
	if strings.HasSuffix(target, ".nix") {
		abs, err := filepath.Abs(target)
		if err != nil {
			return nil, err
		}
		if _, err := os.Stat(abs); err != nil {
			return nil, &NotFoundError{Target: target, Reason: "no such .nix file"}
		}
		return o.eval(ctx, "file", abs, target)
	}
	if file, err := o.recipeFile(target); err != nil {
		return nil, err
	} else if file != "" {
		return o.eval(ctx, "recipe", file, target)
	}
	if !attrPattern.MatchString(target) {
		return nil, &NotFoundError{Target: target, Reason: "it is not a recipe (see nix2aci pkgs list), a nixpkgs attribute, a /nix/store path or an existing .nix file"}
	}
	return o.eval(ctx, "attr", target, target)
}

func isStoreLink(p string) bool {
	fi, err := os.Lstat(p)
	if err != nil || fi.Mode()&os.ModeSymlink == 0 {
		return false
	}
	r, err := filepath.EvalSymlinks(p)
	return err == nil && strings.HasPrefix(r, nixstore.StoreDir+"/")
}

// recipeFile returns the file of recipe name: the user's, else a built-in
// one written to a temporary file by eval; "" if there is none.
func (o options) recipeFile(name string) (string, error) {
	if strings.ContainsAny(name, "/\\") {
		return "", nil
	}
	if o.userDir != "" {
		if err := checkRecipeDir(o.userDir); err != nil {
			return "", err
		}
		p := filepath.Join(o.userDir, name+".nix")
		if fi, err := os.Stat(p); err == nil {
			if !fi.Mode().IsRegular() {
				return "", &NotFoundError{Target: name, Reason: fmt.Sprintf("the recipe %s is not a regular file", p)}
			}
			return filepath.Abs(p)
		}
	}
	if _, err := fs.Stat(embedded, "recipes/"+name+".nix"); err == nil && name != "generic" {
		return "embedded:" + name, nil
	}
	return "", nil
}

// maxRecipe is the largest recipe file List reads for its summary.
const maxRecipe = 1 << 20

// checkRecipeDir checks that a user's recipe directory is a directory.
func checkRecipeDir(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("recipe directory (--pkgs, NIX2ACI_PKGS): %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("recipe directory (--pkgs, NIX2ACI_PKGS) %s is not a directory", safeio.Quote(dir))
	}
	return nil
}

// Recipe is a recipe as `pkgs list` shows it.
type Recipe struct {
	Name    string `json:"name"`
	Source  string `json:"source"` // "built-in" or the user file
	Summary string `json:"summary"`
}

// List returns the recipes a target may name, user recipes first.
func List(opts ...Option) ([]Recipe, error) {
	o := newOptions(opts)
	seen := map[string]bool{}
	var out []Recipe
	if o.userDir != "" {
		if err := checkRecipeDir(o.userDir); err != nil {
			return nil, err
		}
		files, err := filepath.Glob(filepath.Join(o.userDir, "*.nix"))
		if err != nil {
			return nil, err
		}
		for _, f := range files {
			b, err := safeio.ReadFile(f, maxRecipe)
			if err != nil {
				return nil, fmt.Errorf("reading recipe: %w", err)
			}
			n := strings.TrimSuffix(filepath.Base(f), ".nix")
			seen[n] = true
			out = append(out, Recipe{Name: n, Source: f, Summary: summary(b)})
		}
	}
	ents, _ := fs.ReadDir(embedded, "recipes")
	for _, e := range ents {
		n := strings.TrimSuffix(e.Name(), ".nix")
		if seen[n] {
			continue
		}
		b, _ := embedded.ReadFile("recipes/" + e.Name())
		out = append(out, Recipe{Name: n, Source: "built-in", Summary: summary(b)})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// summary is a recipe's first comment line.
func summary(b []byte) string {
	for _, l := range strings.Split(string(b), "\n") {
		if s, ok := strings.CutPrefix(strings.TrimSpace(l), "#"); ok {
			return strings.TrimSpace(s)
		}
	}
	return ""
}

// Evaluate evaluates the Nix file file (an absolute path) strictly, in
// one nix-instantiate call, and returns its value as JSON. The file is
// called as a recipe is, with the package set recipes get ({ pkgs, lib }:
// …), so that a caller reads what it needs of that set (such as its
// attribute names) without building anything. The JSON is at most max
// bytes: past that the evaluation is stopped and refused.
func Evaluate(ctx context.Context, file string, max int, opts ...Option) ([]byte, error) {
	if !filepath.IsAbs(file) {
		return nil, fmt.Errorf("evaluating %s: give an absolute path", file)
	}
	return newOptions(opts).instantiate(ctx, "value", file, file, max)
}

// errTooLarge is what a limitedBuffer returns once it is full.
var errTooLarge = errors.New("too large")

// limitedBuffer keeps at most max bytes (when max > 0), then refuses
// more: a child writing to it gets a broken pipe and stops. (No embedded
// bytes.Buffer: its ReadFrom would be used instead of Write.)
type limitedBuffer struct {
	buf  bytes.Buffer
	max  int
	over bool
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if b.max > 0 && len(p) > b.max-b.buf.Len() {
		b.over = true
		return 0, errTooLarge
	}
	return b.buf.Write(p)
}

// instantiate runs the driver expression on a target, once, and returns
// what it printed (at most max bytes, when max > 0).
func (o options) instantiate(ctx context.Context, kind, target, shown string, max int) ([]byte, error) {
	if _, err := exec.LookPath(o.nixBin); err != nil {
		return nil, nixstore.ErrNixNotInstalled
	}
	dir, err := os.MkdirTemp("", "nix2aci-eval-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	if err := writeEmbedded(dir); err != nil {
		return nil, err
	}
	if name, ok := strings.CutPrefix(target, "embedded:"); ok {
		target = filepath.Join(dir, "recipes", name+".nix")
	}
	args := []string{"--eval", "--strict", "--json", "--read-write-mode"}
	if o.flakes {
		args = append(args, "--extra-experimental-features", flakeFeatures)
	}
	args = append(args, filepath.Join(dir, "nix", "driver.nix"),
		"--argstr", "kind", kind, "--argstr", "target", target,
		"--argstr", "hostBusybox", o.busybox, "--argstr", "hostBusyboxVersion", busyboxVersion(ctx, o.busybox))
	cmd := nixstore.Command(ctx, o.nixBin, args...)
	var stderr bytes.Buffer
	stdout := &limitedBuffer{max: max}
	cmd.Stdout, cmd.Stderr = stdout, &stderr
	if err := cmd.Run(); err != nil || stdout.over {
		switch {
		case ctx.Err() != nil:
			return nil, context.Cause(ctx)
		case stdout.over:
			return nil, &NotFoundError{Target: shown, Reason: fmt.Sprintf("its evaluation printed over %d bytes", max)}
		}
		return nil, evalError(kind, shown, stderr.String())
	}
	return stdout.buf.Bytes(), nil
}

// eval runs the driver expression on a target, once.
func (o options) eval(ctx context.Context, kind, target, shown string) (*Target, error) {
	stdout, err := o.instantiate(ctx, kind, target, shown, 0)
	if err != nil {
		return nil, err
	}
	var raw struct {
		Offline  bool         `json:"offline"`
		Packages []Package    `json:"packages"`
		Layers   []LayerGroup `json:"layerGroups"`
		manifest.Spec
	}
	if err := json.Unmarshal(stdout, &raw); err != nil {
		return nil, fmt.Errorf("reading evaluation of %s: %w", shown, err)
	}
	if len(raw.Packages) == 0 {
		return nil, &NotFoundError{Target: shown, Reason: "its recipe lists no packages"}
	}
	for _, g := range raw.Layers {
		if len(g.Packages) == 0 {
			return nil, &NotFoundError{Target: shown, Reason: fmt.Sprintf("its layer group %q lists no packages", g.Name)}
		}
	}
	return &Target{Kind: kind, Offline: raw.Offline, Packages: raw.Packages, Layers: raw.Layers, Spec: raw.Spec}, nil
}

// evalError keeps what matters of Nix's error: the whole message from its
// first "error:" on, bounded (see nixstore.ErrorMessage).
func evalError(kind, target, stderr string) error {
	msg := nixstore.ErrorMessage(stderr)
	if kind == "attr" {
		return &NotFoundError{Target: target, Reason: "it is not a recipe (see nix2aci pkgs list), a /nix/store path or a .nix file, and as a package attribute:\n  " + msg}
	}
	return &NotFoundError{Target: target, Reason: "evaluation failed:\n  " + msg}
}

func writeEmbedded(dir string) error {
	return fs.WalkDir(embedded, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		dst := filepath.Join(dir, p)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		b, err := embedded.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o644)
	})
}

// busyboxVersion asks a busybox binary its version ("1.35.0"); "" if there
// is none.
func busyboxVersion(ctx context.Context, bin string) string {
	out, _ := exec.CommandContext(ctx, bin).CombinedOutput()
	m := regexp.MustCompile(`^BusyBox v([0-9][0-9A-Za-z.]*)`).FindSubmatch(out)
	if m == nil {
		return ""
	}
	return string(m[1])
}

// Realise builds the target's packages, and makes sure of the store paths
// more, and registers GC roots for all of them at gcroot (gcroot,
// gcroot-2, ..., and a derivation's outputs other than out suffixed with
// their names) so that they outlive a garbage collection; an empty gcroot
// builds without roots.
func (t *Target) Realise(ctx context.Context, gcroot string, more ...string) error {
	var args []string
	for _, p := range t.AllPackages() {
		if p.DrvPath != "" {
			args = append(args, p.DrvPath)
		} else {
			args = append(args, p.OutPath)
		}
	}
	args = append(args, more...)
	if gcroot != "" {
		if err := os.MkdirAll(filepath.Dir(gcroot), 0o755); err != nil {
			return err
		}
		args = append([]string{"--add-root", gcroot, "--indirect"}, args...)
	}
	cmd := nixstore.Command(ctx, "nix-store", append([]string{"--realise"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return nixstore.ErrNixNotInstalled
		}
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		return fmt.Errorf("building %s: %v:\n  %s", t.Packages[0].Name, err, nixstore.ErrorMessage(stderr.String()))
	}
	for _, p := range t.Packages {
		if _, err := os.Lstat(p.OutPath); err != nil {
			return &nixstore.InvalidPathError{Path: p.OutPath, Reason: "the build did not produce it"}
		}
	}
	return nil
}

// Finish fills in what the recipe left out, now that the packages exist:
// name and version from the first package, exec from its bin/.
func (t *Target) Finish() error {
	first := t.Packages[0]
	s := &t.Spec
	if s.Name == "" {
		s.Name = first.PName
	}
	if s.Version == "" {
		s.Version = first.Version
	}
	if s.System == "" {
		s.System = first.System
	}
	if len(s.Exec) == 0 {
		exe, err := defaultExec(first)
		if err != nil {
			return err
		}
		s.Exec = []string{exe}
	}
	return nil
}

func defaultExec(p Package) (string, error) {
	bin := filepath.Join(p.OutPath, "bin")
	if fi, err := os.Stat(filepath.Join(bin, p.PName)); err == nil && !fi.IsDir() {
		return "/bin/" + p.PName, nil
	}
	ents, err := os.ReadDir(bin)
	if err == nil {
		for _, e := range ents {
			if fi, err := os.Stat(filepath.Join(bin, e.Name())); err == nil && !fi.IsDir() {
				return "/bin/" + e.Name(), nil
			}
		}
	}
	return "", fmt.Errorf("%s has no bin/%s and no other program in bin/: write a recipe with exec = [ ... ] (see nix2aci pkgs list)", p.OutPath, p.PName)
}

// ParseName splits a Nix package name into name and version as Nix's
// parseDrvName does: the version starts at the first "-" followed by
// something other than a letter.
func ParseName(s string) (name, version string) {
	for i := 0; i+1 < len(s); i++ {
		if s[i] == '-' {
			c := s[i+1]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
				return s[:i], s[i+1:]
			}
		}
	}
	return s, ""
}

// HostSystem is the Nix system of this machine, e.g. x86_64-linux.
func HostSystem() string {
	arch := map[string]string{"amd64": "x86_64", "arm64": "aarch64", "386": "i686", "ppc64le": "powerpc64le", "arm": "armv7l"}[runtime.GOARCH]
	if arch == "" {
		arch = runtime.GOARCH
	}
	return arch + "-" + runtime.GOOS
}

// BuiltinRecipe returns the text of the built-in recipe name (not
// generic.nix), for callers that compose recipes (package serve).
func BuiltinRecipe(name string) ([]byte, bool) {
	if name == "generic" || strings.ContainsAny(name, "/\\") {
		return nil, false
	}
	b, err := embedded.ReadFile("recipes/" + name + ".nix")
	return b, err == nil
}
