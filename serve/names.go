package serve

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nix2aci/nix2aci/manifest"
	"github.com/nix2aci/nix2aci/nixstore"
	"github.com/nix2aci/nix2aci/pipeline"
	"github.com/nix2aci/nix2aci/pkgs"
)

// request is an image file asked for.
type request struct {
	rel      string   // the file in the tree, under the base path
	name     string   // the image's name
	packages []string // the components after the prefix
	version  string
	os, arch string
	asc      bool
	oci      bool // an OCI image, asked through the registry API

	// From the meta names at the front of packages (see meta):
	wanted []string // the package names
	shell  bool     // a shell and coreutils
	system string   // the Nix system to build for
}

var (
	componentRE = regexp.MustCompile(`^[a-z0-9]+(?:[-._~][a-z0-9]+)*$`)
	versionRE   = regexp.MustCompile(`^[a-z0-9][a-z0-9._~]*$`)
)

// checkComponents checks the "/"-separated components of a name.
func checkComponents(comps []string) error {
	if len(comps) > MaxComponents {
		return fmt.Errorf("the name has %d components: at most %d are served", len(comps), MaxComponents)
	}
	for _, c := range comps {
		if !componentRE.MatchString(c) {
			return fmt.Errorf("the name component %q is not lower-case letters and digits joined by single - . _ ~ (no empty component, no .., no upper case)", bounded(c, 80))
		}
	}
	return nil
}

// Meta names: at the front of a name, before its packages, they change
// what the image holds or what it is built for rather than naming a
// package.
var (
	// metaShell adds a shell and coreutils (bashInteractive and coreutils
	// from nixpkgs; busybox from the offline set).
	metaShell = "shell"
	// metaSystems build for another system, Docker's names for them;
	// the file asked for must then name that system's appc arch.
	metaSystems = map[string]string{"arm64": "aarch64-linux", "amd64": "x86_64-linux"}
)

// meta reads q's meta names and its system: the one a meta name asks
// for, else the one of the file's os and arch labels (so that rkt on an
// aarch64 host, asking for its own arch, gets an aarch64 image). A
// failure is answered as it says.
func (s *Server) meta(q *request) *failure {
	ps := q.packages
	seen := map[string]bool{}
	for len(ps) > 0 {
		p := ps[0]
		if p == metaShell {
			q.shell = true
		} else if sys, ok := metaSystems[p]; ok {
			if q.system != "" {
				return &failure{status: http.StatusBadRequest, msg: fmt.Sprintf("%s names two systems: give at most one of arm64, amd64", q.name)}
			}
			q.system = sys
		} else {
			break
		}
		if seen[p] {
			return &failure{status: http.StatusBadRequest, msg: fmt.Sprintf("%s names %s twice", q.name, p)}
		}
		seen[p] = true
		ps = ps[1:]
	}
	for _, p := range ps {
		if _, ok := metaSystems[p]; ok || p == metaShell {
			return &failure{status: http.StatusBadRequest, msg: fmt.Sprintf("%s: the meta name %s comes first, before the packages: %s/%s/…", q.name, p, s.o.Prefix, p)}
		}
	}
	q.wanted = ps
	if len(q.wanted) == 0 && !q.shell {
		return &failure{status: http.StatusNotFound, msg: fmt.Sprintf("%s names no package: add one, e.g. %s/busybox", q.name, q.name)}
	}
	fileSystem, ok := manifest.SystemOf(q.os, q.arch)
	if !ok {
		return &failure{status: http.StatusNotFound, msg: fmt.Sprintf("%s is for %s/%s: nix2aci builds linux images for amd64, aarch64, i386, armv6l, armv7l and ppc64le (as a server can: see its systems)", q.name, q.os, q.arch)}
	}
	if q.system == "" {
		q.system = fileSystem
	} else if q.system != fileSystem {
		_, arch, _ := manifest.OSArch(q.system)
		return &failure{status: http.StatusNotFound, msg: fmt.Sprintf("%s is built for %s: ask for %s-%s-linux-%s.aci, not linux-%s (rkt asks for its own arch: on this host, rkt fetch '%s:%s,arch=%s')", q.name, q.system, path.Base(q.name), q.version, arch, q.arch, q.name, q.version, arch)}
	}
	if !slices.Contains(s.o.Systems, q.system) {
		return &failure{status: http.StatusUnprocessableEntity, msg: fmt.Sprintf("%s: this server builds for %s only, and its Nix cannot build for %s: give the server a Nix remote builder for %s (Nix's builders setting), or emulation (binfmt_misc and extra-platforms = %s), and restart it", q.name, strings.Join(s.o.Systems, ", "), q.system, q.system, q.system)}
	}
	return nil
}

// maxNames bounds the JSON of the names read at start: nixpkgs' top-level
// names are some hundreds of kilobytes for each system.
const maxNames = 32 << 20

// packageNames are the names a server can build, read once at start, so
// that a name that is none of them is refused at once: without a build
// slot and without a Nix evaluation for each request (a few clients
// asking for nonsense would otherwise keep every real image waiting).
type packageNames struct {
	// recipes are the recipe names: Options.Recipes' and the built-in
	// ones.
	recipes map[string]bool
	// attrs are, for each system with a package set, its top-level
	// attribute names.
	attrs map[string]map[string]bool
	// missing says, for each system without a package set, why.
	missing map[string]string
}

// knows says whether name may be a package of an image for system: a
// recipe, else an attribute of system's package set, a dotted one by its
// first part (whether the rest is there, the build tells).
func (n *packageNames) knows(system, name string) bool {
	if n.recipes[name] {
		return true
	}
	first, _, _ := strings.Cut(name, ".")
	return n.attrs[system][first]
}

// namesNix is the expression readNames evaluates: for each system, the
// top-level attribute names of its package set (only the names: the
// packages are not evaluated), or why it has none.
const namesNix = `# Generated by nix2aci serve: the names of its package set, by system.
{ pkgs }:
let
  flakeRef = %s;
  %s
  # Another system's set failing is that system's answer (422); this
  # host's failing is Nix's error, which says why.
  namesOf = system:
    let
      ps = packageSetFor system;
      names = let n = builtins.attrNames ps.set; in builtins.deepSeq n n;
      tried = if system == builtins.currentSystem then { success = true; value = names; } else builtins.tryEval names;
    in
      if !(ps ? set) then { error = ps.error; }
      else if tried.success then { names = tried.value; }
      else { error = "its package set for ${system} fails to evaluate (a throw or an assertion in it)"; };
in map (system: { inherit system; } // namesOf system) [ %s ]
`

// readNames reads the names o's server can build: its recipes, and in
// one Nix evaluation the top-level attribute names of the package set
// for each of o.Systems. A package set that cannot be read, or that has
// nothing for this host, is an error: the server would build nothing.
func readNames(o Options) (*packageNames, error) {
	var popts []pkgs.Option
	if o.Recipes != "" {
		popts = append(popts, pkgs.WithUserRecipes(o.Recipes))
	}
	list, err := pkgs.List(popts...)
	if err != nil {
		return nil, &UsageError{err.Error()}
	}
	n := &packageNames{recipes: map[string]bool{}, attrs: map[string]map[string]bool{}, missing: map[string]string{}}
	for _, r := range list {
		if _, ok := pkgs.BuiltinRecipe(r.Name); ok || r.Source != "built-in" {
			n.recipes[r.Name] = true
		}
	}

	flake := "null"
	if o.Flake != "" {
		flake = strconv.Quote(o.Flake)
		popts = append(popts, pkgs.WithFlakes())
	}
	var systems []string
	for _, sys := range o.Systems {
		systems = append(systems, strconv.Quote(sys))
	}
	// Not in the work directory: a server that cannot start leaves
	// nothing behind.
	dir, err := os.MkdirTemp("", "nix2aci-names-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	file := filepath.Join(dir, "names.nix")
	if err := os.WriteFile(file, fmt.Appendf(nil, namesNix, flake, packageSetNix, strings.Join(systems, " ")), 0o600); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.BuildTimeout)
	defer cancel()
	start := time.Now()
	out, err := pkgs.Evaluate(ctx, file, maxNames, popts...)
	var nf *pkgs.NotFoundError
	switch {
	case err == nil:
	case errors.Is(err, context.DeadlineExceeded):
		return nil, fmt.Errorf("reading the package set's names at start took longer than the build deadline of %s", o.BuildTimeout)
	case errors.Is(err, nixstore.ErrNixNotInstalled):
		return nil, err
	case errors.As(err, &nf):
		return nil, &UsageError{fmt.Sprintf("the package set's names cannot be read (one evaluation at start), so nothing could be built: %s\n  give serve a package set that evaluates (--nixpkgs, nixpkgs in NIX_PATH, or --flake)", nf.Reason)}
	default:
		return nil, fmt.Errorf("reading the package set's names: %w", err)
	}
	var sets []struct {
		System string    `json:"system"`
		Names  *[]string `json:"names"`
		Error  string    `json:"error"`
	}
	if err := json.Unmarshal(out, &sets); err != nil {
		return nil, fmt.Errorf("reading the package set's names: %w", err)
	}
	for _, set := range sets {
		if !slices.Contains(o.Systems, set.System) {
			continue
		}
		if set.Names == nil {
			n.missing[set.System] = set.Error
			continue
		}
		m := make(map[string]bool, len(*set.Names))
		for _, a := range *set.Names {
			m[a] = true
		}
		n.attrs[set.System] = m
	}
	for _, sys := range o.Systems {
		_, ok := n.attrs[sys]
		if _, no := n.missing[sys]; !ok && !no {
			return nil, fmt.Errorf("reading the package set's names: the evaluation said nothing of %s", sys)
		}
	}
	if why, ok := n.missing[pkgs.HostSystem()]; ok && slices.Contains(o.Systems, pkgs.HostSystem()) {
		return nil, &UsageError{fmt.Sprintf("the package set has nothing for this host, %s: %s: give serve a package set that evaluates (--nixpkgs, nixpkgs in NIX_PATH, or --flake)", pkgs.HostSystem(), why)}
	}
	for _, sys := range o.Systems {
		o.Logger.Info("names", "system", sys, "attributes", len(n.attrs[sys]), "recipes", len(n.recipes), "error", n.missing[sys], "duration", time.Since(start))
	}
	return n, nil
}

// unknown is the answer to q when it cannot be built, as far as the
// names read at start tell: 422 when its system has no package set, 404
// naming the packages that are neither a recipe nor an attribute.
func (s *Server) unknown(q *request) *failure {
	if why, ok := s.names.missing[q.system]; ok {
		return &failure{status: http.StatusUnprocessableEntity, msg: fmt.Sprintf("%s cannot be built for %s: %s", q.name, q.system, why)}
	}
	var unknown []string
	for _, p := range q.wanted {
		if !s.names.knows(q.system, p) && !slices.Contains(unknown, p) {
			unknown = append(unknown, p)
		}
	}
	if len(unknown) > 0 {
		return &failure{status: http.StatusNotFound, msg: fmt.Sprintf("%s: no recipe and no package attribute is named %s", q.name, strings.Join(unknown, " "))}
	}
	return nil
}

// unknownDiscovered names the packages of a name asked for with
// ?ac-discovery=1 (its components after the prefix) that no system the
// name may be for knows: the one a meta name asks for, else any the
// server builds for. Layers' names (pipeline.DefaultLayerPrefix) are
// not packages: none is unknown there.
func (s *Server) unknownDiscovered(comps []string) []string {
	layers := strings.TrimPrefix(pipeline.DefaultLayerPrefix(s.o.Prefix), s.o.Prefix+"/")
	if comps[0] == layers {
		return nil
	}
	systems := s.o.Systems
	var wanted []string
	for _, c := range comps {
		if sys, ok := metaSystems[c]; ok {
			systems = []string{sys}
		} else if c != metaShell {
			wanted = append(wanted, c)
		}
	}
	var unknown []string
	for _, p := range wanted {
		known, any := false, false
		for _, sys := range systems {
			if _, ok := s.names.attrs[sys]; ok {
				any = true
				known = known || s.names.knows(sys, p)
			}
		}
		// A system without a package set, or not built for, is for the
		// image's request to refuse, saying so.
		if any && !known && !slices.Contains(unknown, p) {
			unknown = append(unknown, p)
		}
	}
	return unknown
}
