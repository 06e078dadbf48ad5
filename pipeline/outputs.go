package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/nix2aci/nix2aci/aci"
	"github.com/nix2aci/nix2aci/internal/safeio"
	"github.com/nix2aci/nix2aci/manifest"
	"github.com/nix2aci/nix2aci/nixstore"
	"github.com/nix2aci/nix2aci/pkgs"
)

// A build's outputs: the names of the target's files, chosen before
// anything is built (step 1 of run); the files beside an ACI build's
// image, and what the build made (finish, step 4; finishOCI in oci.go for
// an OCI build); and the staged files, noted as they are written (add)
// and moved into place at once, with the GC roots (commit, step 5).

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

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
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
