package pkgs

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"regexp"
	"strings"

	"github.com/nix2aci/nix2aci/internal/safeio"
	"github.com/nix2aci/nix2aci/nixstore"
)

// flakeRef matches what nix build reads as a flake reference with an
// output attribute: .#app, path:/dir#pkg, github:owner/repo#pkg,
// git+https://…#pkg, nixpkgs#hello. Names without "#" are recipes,
// attributes or files as before.
var flakeRef = regexp.MustCompile(`^([a-z][a-z0-9+]*:[^#\s]*|\.{1,2}(/[^#\s]*)?|/[^#\s]*|[A-Za-z][A-Za-z0-9_-]*)#[^\s]*$`)

// IsFlakeRef reports whether target names a flake output.
func IsFlakeRef(target string) bool { return flakeRef.MatchString(target) }

// flakeFeatures are what flakes need on Nix 2.8, where they are
// experimental.
const flakeFeatures = "nix-command flakes"

// flake builds a flake output as nix build resolves it (packages.<system>.X,
// then legacyPackages.<system>.X, then X) and packages it like a store path.
func (o options) flake(ctx context.Context, target string) (*Target, error) {
	if _, err := exec.LookPath("nix"); err != nil {
		return nil, nixstore.ErrNixNotInstalled
	}
	cmd := nixstore.Command(ctx, "nix", "build", "--extra-experimental-features", flakeFeatures, "--no-link", "--json", "--", target)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return nil, context.Cause(ctx)
		}
		return nil, flakeError(target, stderr.String())
	}
	var built []struct {
		DrvPath string            `json:"drvPath"`
		Outputs map[string]string `json:"outputs"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &built); err != nil || len(built) != 1 {
		return nil, fmt.Errorf("reading nix build's output for %s: want one derivation, got %q", target, nixstore.Tail(stdout.String(), 300))
	}
	out := built[0].Outputs["out"]
	if out == "" {
		for _, p := range built[0].Outputs { // a derivation without "out"
			out = p
			break
		}
	}
	if !nixstore.IsStorePath(out) {
		return nil, fmt.Errorf("nix build gave %q for %s, not a store path", nixstore.Tail(out, 200), target)
	}
	name, version := ParseName(nixstore.NamePart(out))
	return &Target{Kind: "flake", Packages: []Package{{Name: nixstore.NamePart(out), PName: name, Version: version, DrvPath: built[0].DrvPath, OutPath: out, System: HostSystem()}}}, nil
}

// flakeError keeps Nix's reason and adds what to do about the usual ones.
func flakeError(target, stderr string) error {
	msg := nixstore.ErrorMessage(stderr)
	var hint string
	switch {
	case strings.Contains(msg, "unable to download") || strings.Contains(msg, "Couldn't resolve host") || strings.Contains(msg, "unable to fetch"):
		hint = "this flake (or one of its inputs) needs the network; offline, build a local flake whose inputs are in the store (nix flake archive it where there is network, then nix copy)"
	case strings.Contains(msg, "is not a derivation"):
		hint = "the attribute after # must be a package (a derivation), e.g. .#default or .#packages." + HostSystem() + ".app"
	case strings.Contains(msg, "does not provide attribute"):
		hint = "name an output the flake has: nix flake show " + strings.SplitN(target, "#", 2)[0]
	case strings.Contains(msg, "experimental"):
		hint = "this Nix refuses flakes; nix2aci enables nix-command and flakes for the call, which needs Nix 2.4 or newer"
	}
	reason := "nix build failed:\n  " + msg
	if hint != "" {
		reason += "\n  " + hint
	}
	return &NotFoundError{Target: target, Reason: reason}
}

// WithFlakes lets recipes call builtins.getFlake: evaluation enables the
// experimental features flakes need on Nix 2.8.
func WithFlakes() Option { return func(o *options) { o.flakes = true } }

// FlakeLock is a flake reference resolved and locked by Nix.
type FlakeLock struct {
	// URL is the locked reference (with its narHash, and rev where the
	// source has one): builtins.getFlake of it reads exactly these files.
	URL string `json:"url"`
	// Revision is the source's commit, where it has one.
	Revision string `json:"revision,omitempty"`
	// NarHash is the hash of the flake's source tree.
	NarHash string `json:"narHash"`
	// LastModified is the source's time, Unix seconds.
	LastModified int64 `json:"lastModified"`
}

// maxFlakeMetadata bounds what LockFlake reads of nix flake metadata.
const maxFlakeMetadata = 4 << 20

// LockFlake resolves ref (path:/dir, github:owner/repo/rev, a registry
// name, …) with nix flake metadata, so that a server evaluates one fixed
// source however its reference moves later.
func LockFlake(ctx context.Context, ref string) (*FlakeLock, error) {
	if _, err := exec.LookPath("nix"); err != nil {
		return nil, nixstore.ErrNixNotInstalled
	}
	if ref == "" || strings.ContainsAny(ref, "#\n") {
		return nil, &NotFoundError{Target: ref, Reason: "a package set flake is a flake reference without #attribute, e.g. path:/src/my-flake or github:NixOS/nixpkgs/<commit>"}
	}
	cmd := nixstore.Command(ctx, "nix", "flake", "metadata", "--extra-experimental-features", flakeFeatures, "--json", "--", ref)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return nil, context.Cause(ctx)
		}
		return nil, flakeError(ref, stderr.String())
	}
	if stdout.Len() > maxFlakeMetadata {
		return nil, fmt.Errorf("nix flake metadata of %s wrote over %d bytes", ref, maxFlakeMetadata)
	}
	var m struct {
		URL          string `json:"url"`
		Revision     string `json:"revision"`
		LastModified int64  `json:"lastModified"`
		Locked       struct {
			NarHash string `json:"narHash"`
		} `json:"locked"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &m); err != nil {
		return nil, fmt.Errorf("reading nix flake metadata of %s: %w", ref, err)
	}
	if m.URL == "" || m.Locked.NarHash == "" || strings.ContainsAny(m.URL, "\"\\$\n") {
		return nil, fmt.Errorf("nix flake metadata gave no locked reference for %s (%q)", ref, nixstore.Tail(m.URL, 200))
	}
	return &FlakeLock{URL: m.URL, Revision: m.Revision, NarHash: m.Locked.NarHash, LastModified: m.LastModified}, nil
}

// maxNixConfig bounds what BuildSystems reads of Nix's configuration and
// of a machines file.
const maxNixConfig = 4 << 20

// BuildSystems are the Nix systems this machine's Nix can build for: its
// own system, its extra-platforms, and those of its remote builders (the
// builders setting, or the machines file it names). The host's system is
// always first.
func BuildSystems(ctx context.Context) ([]string, error) {
	host := HostSystem()
	if _, err := exec.LookPath("nix"); err != nil {
		return nil, nixstore.ErrNixNotInstalled
	}
	cmd := nixstore.Command(ctx, "nix", "show-config", "--extra-experimental-features", "nix-command", "--json")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("reading Nix's settings (nix show-config): %s", nixstore.ErrorMessage(stderr.String()))
	}
	if stdout.Len() > maxNixConfig {
		return nil, fmt.Errorf("nix show-config wrote over %d bytes", maxNixConfig)
	}
	var conf map[string]struct {
		Value json.RawMessage `json:"value"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &conf); err != nil {
		return nil, fmt.Errorf("reading nix show-config: %w", err)
	}
	var system, builders string
	var extra []string
	json.Unmarshal(conf["system"].Value, &system)
	json.Unmarshal(conf["extra-platforms"].Value, &extra)
	json.Unmarshal(conf["builders"].Value, &builders)
	if system == "" {
		system = host
	}
	out := []string{host}
	add := func(s string) {
		s = strings.TrimSpace(s)
		if s == "" || s == "-" {
			return
		}
		for _, x := range out {
			if x == s {
				return
			}
		}
		out = append(out, s)
	}
	add(system)
	for _, s := range extra {
		add(s)
	}
	for _, s := range builderSystems(builders, 0) {
		add(s)
	}
	return out, nil
}

// builderSystems reads the systems of Nix's builders setting: machines
// separated by ";" or newlines, each "URI SYSTEMS …" with SYSTEMS
// comma-separated, or "@FILE" naming a machines file (followed once).
func builderSystems(spec string, depth int) []string {
	var out []string
	for _, m := range strings.FieldsFunc(spec, func(r rune) bool { return r == ';' || r == '\n' }) {
		m = strings.TrimSpace(m)
		if i := strings.IndexByte(m, '#'); i >= 0 {
			m = strings.TrimSpace(m[:i])
		}
		if f, ok := strings.CutPrefix(m, "@"); ok {
			if depth > 0 {
				continue
			}
			b, err := safeio.ReadFile(f, maxNixConfig)
			if err != nil {
				continue
			}
			out = append(out, builderSystems(string(b), depth+1)...)
			continue
		}
		fields := strings.Fields(m)
		if len(fields) >= 2 {
			out = append(out, strings.Split(fields[1], ",")...)
		}
	}
	return out
}
