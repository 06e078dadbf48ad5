package pipeline

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/nix2aci/nix2aci/aci"
	"github.com/nix2aci/nix2aci/manifest"
	"github.com/nix2aci/nix2aci/nixstore"
	"github.com/nix2aci/nix2aci/oci"
)

// written is what the writer made of one planned image.
type written struct {
	Image
	held   []string    // the store paths it and its dependencies hold
	images int         // how many images its tree holds
	res    *aci.Result // nil when reused
	layer  oci.Layer   // an OCI build's layer
	// done is closed once the images above it can be written: its image
	// ID is known (or it failed). Its signing may still run then.
	done     chan struct{}
	doneOnce sync.Once
}

func (w *written) finish() { w.doneOnce.Do(func() { close(w.done) }) }

// writePlan writes (or reuses) every image of plan into the staging
// directory, each once the images it depends on are written, a few at a
// time, and signs each when the request has a signer.
func (b *build) writePlan(ctx context.Context, plan *Plan) (map[*PlanImage]*written, error) {
	if err := plan.check(); err != nil {
		return nil, err
	}
	out := make(map[*PlanImage]*written, len(plan.Images))
	for _, im := range plan.Images {
		out[im] = &written{done: make(chan struct{})}
	}
	// Most layers are small, and one image's compression would leave
	// cores idle: a few images are written at once.
	slots := make(chan struct{}, max(2, min(4, runtime.GOMAXPROCS(0))))
	eg, gctx := errgroup.WithContext(ctx)
	for _, im := range plan.Images {
		w := out[im]
		eg.Go(func() error {
			defer w.finish()
			for _, d := range im.DependsOn {
				select {
				case <-out[d].done:
				case <-gctx.Done():
					return context.Cause(gctx)
				}
			}
			if err := gctx.Err(); err != nil {
				return context.Cause(gctx)
			}
			select {
			case slots <- struct{}{}:
			case <-gctx.Done():
				return context.Cause(gctx)
			}
			defer func() { <-slots }()
			return b.writeImage(gctx, plan, im, w, out)
		})
	}
	if err := eg.Wait(); err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("build interrupted; nothing was written: %w", context.Cause(ctx))
		}
		return nil, err
	}
	return out, nil
}

// writeImage completes im's manifest from the images it depends on (now
// written) and writes it, or reuses a shared image the output directory
// holds already.
func (b *build) writeImage(ctx context.Context, plan *Plan, im *PlanImage, w *written, all map[*PlanImage]*written) error {
	if b.isOCI() {
		return b.writeLayer(ctx, plan, im, w, all)
	}
	m := im.Manifest
	var deps []manifest.Dependency
	var depIDs, below []string
	images := 1
	if im.OnBase {
		images += max(1, plan.Base.Images)
		deps = append(deps, manifest.Dependency{Name: plan.Base.Name, ImageID: plan.Base.ImageID, Labels: plan.Base.Labels})
		depIDs = append(depIDs, plan.Base.ImageID)
		for p := range plan.Base.Paths {
			below = append(below, p)
		}
	}
	for _, d := range im.DependsOn {
		dw := all[d]
		deps = append(deps, manifest.Dependency{Name: dw.Name, ImageID: dw.ImageID, Labels: dependencyLabels(d)})
		depIDs = append(depIDs, dw.ImageID)
		below = append(below, dw.held...)
		images += dw.images
	}
	var paths []nixstore.PathInfo
	if im.Content.Closure != nil {
		paths = im.Content.Closure.Paths
	}
	if im.VersionFromContents {
		if err := manifest.SetLabel(m, "version", contentVersion(paths, depIDs)); err != nil {
			return err
		}
	}
	w.held = below
	if im.HoldsPaths {
		var value string
		value, w.held = heldPaths(paths, below)
		m.Annotations.Set(StorePathsAnnotation, value)
		m.Annotations.Set(ImagesAnnotation, strconv.Itoa(images))
	}
	w.images = images
	if err := manifest.AddDependencies(m, deps); err != nil {
		return err
	}
	name := m.Name.String()
	version, _ := m.Labels.Get("version")
	var file string
	var err error
	if im.Shared {
		file, err = manifest.FlatFileName(m)
	} else {
		file, err = manifest.FileName(m)
	}
	if err != nil {
		return err
	}
	w.Image = Image{ACI: file, Name: name, Version: version, StorePaths: len(paths)}
	content := im.Content
	content.Manifest = m
	signer := ""
	if b.Signer != nil {
		signer = b.Signer.Fingerprint
	}
	var want indexEntry
	if im.Shared {
		want = indexEntry{Name: name, Version: version, Inputs: layerInputs(string(b.Compression), b.Level, paths, depIDs)}
		want.OS, _ = m.Labels.Get("os")
		want.Arch, _ = m.Labels.Get("arch")
		b.mu.Lock()
		e, reuse := readIndexOnce(b).reusable(b.OutDir, file, want, signer, b.cache)
		b.mu.Unlock()
		if reuse {
			w.ImageID, w.Size, w.Reused = e.ImageID, e.Size, true
			if signer != "" {
				w.Signature = file + ".asc"
			}
			return nil
		}
	}
	res, err := b.write(ctx, file, content, im.Created)
	if err != nil {
		return err
	}
	w.res = res
	w.ImageID, w.Size = res.ImageID, res.Size
	// The images above need its ID, not its signature: they are written
	// while it is signed.
	w.finish()
	signed, err := b.sign(ctx, file)
	if err != nil {
		return err
	}
	if signed {
		w.Signature = file + ".asc"
	}
	if !im.Shared {
		return nil
	}
	e := want
	e.ImageID, e.Size = res.ImageID, res.Size
	if signed {
		e.SignedBy = signer
	}
	b.mu.Lock()
	if b.layersWritten == nil {
		b.layersWritten = map[string]indexEntry{}
	}
	b.layersWritten[file] = e
	b.mu.Unlock()
	return nil
}

// dependencyLabels are the labels a dependency on im names it by: its
// version, os and arch (rkt finds it by name and these, then checks the
// image ID).
func dependencyLabels(im *PlanImage) map[string]string {
	labels := map[string]string{}
	for _, k := range []string{"version", "os", "arch"} {
		if v, ok := im.Manifest.Labels.Get(k); ok {
			labels[k] = v
		}
	}
	return labels
}

// contentVersion is the version of an image named by its contents: the
// first 32 hex digits of the SHA-256 of its store paths and of the image
// IDs it depends on, one per line.
func contentVersion(paths []nixstore.PathInfo, deps []string) string {
	h := sha256.New()
	for _, p := range paths {
		io.WriteString(h, p.Path+"\n")
	}
	for _, d := range deps {
		io.WriteString(h, "dep "+d+"\n")
	}
	return hex.EncodeToString(h.Sum(nil))[:32]
}

// heldPaths is the value of StorePathsAnnotation for an image holding
// paths on dependencies holding below.
func heldPaths(paths []nixstore.PathInfo, below []string) (string, []string) {
	all := append([]string(nil), below...)
	for _, p := range paths {
		all = append(all, p.Path)
	}
	sort.Strings(all)
	return strings.Join(all, "\n"), all
}

// readIndexOnce reads the output directory's layer index the first time
// it is needed.
func readIndexOnce(b *build) *layerIndex {
	if b.index == nil {
		b.index = readIndex(b.OutDir)
	}
	return b.index
}

// writeOptions are the build's archive options for an image or layer
// of name, its entries not from the store dated created, with progress
// reported as name's.
func (b *build) writeOptions(name string, created time.Time) []aci.Option {
	opts := append(b.opts[:len(b.opts):len(b.opts)], aci.WithModTime(created))
	if b.Progress != nil {
		opts = append(opts, aci.WithProgress(func(p aci.Progress) {
			b.mu.Lock()
			defer b.mu.Unlock()
			b.Progress(name, p)
		}))
	}
	return opts
}

// write writes img into the staging directory as name.
func (b *build) write(ctx context.Context, name string, img aci.Image, created time.Time) (*aci.Result, error) {
	opts := b.writeOptions(name, created)
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
