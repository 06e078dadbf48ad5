package pkgs

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"regexp"
	"strings"

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
