package serve

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/opencontainers/go-digest"

	"github.com/nix2aci/nix2aci/internal/safeio"
	"github.com/nix2aci/nix2aci/oci"
	"github.com/nix2aci/nix2aci/pipeline"
)

// buildOCI builds q's OCI image, layered as the ACIs are, and moves it
// into the data directory: its blobs, then its reference file. The
// layers the blob store holds are linked into the build's layout, not
// written again (pipeline.Request.ReuseBlobs): held meanwhile, so that
// the collector leaves them, until the reference is written.
func (s *Server) buildOCI(ctx context.Context, q *request) *failure {
	dir, recipe, f := s.stageRecipe(q)
	if f != nil {
		return f
	}
	defer os.RemoveAll(dir)
	var heldMu sync.Mutex
	var held []digest.Digest
	defer func() {
		for _, d := range held {
			s.release(blobRel(d))
		}
	}()
	hold := func(ds string) {
		d, err := digest.Parse(ds)
		if err != nil || d.Algorithm() != digest.SHA256 {
			return
		}
		s.acquire(blobRel(d))
		heldMu.Lock()
		held = append(held, d)
		heldMu.Unlock()
	}
	res, err := s.o.Build(ctx, pipeline.Request{
		Kind: pipeline.Layered, Format: oci.LayoutFormat, Target: recipe, Name: q.name, OutDir: filepath.Join(dir, "out"),
		NoGCRoots: true, Recipes: s.o.Recipes, Flakes: s.o.Flake != "", CacheDir: s.o.CacheDir, CacheKey: s.o.CacheKey, CacheMax: s.o.CacheMax,
		// Each package asked for is a layer of its own: a new version of
		// one is pulled as that layer alone.
		LayerReferencesFirst: true,
		ReuseBlobs:           &pipeline.BlobReuse{Dir: filepath.Join(s.o.Data, ociRoot, "blobs", "sha256"), Hold: hold},
	})
	if err == nil {
		err = s.importOCI(ctx, q, res)
	}
	if err == nil {
		// The build's links to the blobs it reused are removed before
		// its layers are recorded: a link, made or removed, changes the
		// blob's ctime, which its record holds.
		os.RemoveAll(dir)
		if err := res.RecordBlobs(); err != nil {
			s.o.Logger.Warn("reuse", "name", q.name, "error", fmt.Sprintf("recording its layers in the blob store's index (the next build writes them again): %v", err))
		}
	}
	if err == nil {
		s.publishMu.Lock()
		s.touch(q.rel)
		s.collect(q.rel)
		s.publishMu.Unlock()
	}
	return s.buildFailure(ctx, q, err)
}

// importOCI moves the blobs of the image layout a build of q made into
// the blob store (those it holds already stay), makes them servable
// (with a bucket: uploads them), and then writes q's reference file,
// which is never replaced. The blobs are held as read meanwhile, so that
// the collector leaves them.
func (s *Server) importOCI(ctx context.Context, q *request, res *pipeline.Result) error {
	d, err := digest.Parse(res.Digest)
	if err != nil {
		return fmt.Errorf("the build's manifest digest: %w", err)
	}
	src := filepath.Join(res.OCI, "blobs", "sha256")
	dst := filepath.Join(s.o.Data, ociRoot, "blobs", "sha256")
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	var blobs []digest.Digest
	defer func() {
		for _, b := range blobs {
			s.release(blobRel(b))
		}
	}()
	for _, e := range ents {
		name := e.Name()
		if _, err := hex.DecodeString(name); err != nil || len(name) != 64 || !e.Type().IsRegular() {
			continue
		}
		blobs = append(blobs, digest.NewDigestFromEncoded(digest.SHA256, name))
		s.acquire(blobRel(blobs[len(blobs)-1]))
		if fi, err := os.Lstat(filepath.Join(dst, name)); err == nil && fi.Mode().IsRegular() {
			continue
		}
		if err := moveFile(filepath.Join(src, name), filepath.Join(dst, name)); err != nil {
			return fmt.Errorf("moving the blob %s into the data directory: %w", name, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dst, d.Encoded())); err != nil {
		return fmt.Errorf("the build's layout has no manifest %s", d)
	}
	if res.Name != q.name || res.Version != q.version || res.OS != q.os || res.Arch != q.arch {
		return fmt.Errorf("the build made %s:%s for %s/%s, not the image asked for", res.Name, res.Version, res.OS, res.Arch)
	}
	if err := s.back.completeOCI(ctx, q, blobs, d); err != nil {
		return err
	}
	// With a bucket, its reference is the one served, by every replica:
	// another's, if it was there first.
	if ok, err := s.back.fetchOCI(ctx, q); err != nil || ok {
		return err
	}
	return s.writeRef(q.rel, d)
}

// writeLocal writes the file rel of the data directory whole, unless it
// is there: a reference file or a blob is never replaced (an image built
// before keeps its manifest).
func (s *Server) writeLocal(rel string, data []byte) error {
	p := filepath.Join(s.o.Data, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	err := safeio.CreateFileAtomic(p, data, 0o644)
	if errors.Is(err, fs.ErrExist) {
		return nil
	}
	return err
}

// moveFile renames src to dst, or copies it where they are on two file
// systems; dst appears whole or not at all.
func moveFile(src, dst string) error {
	err := os.Rename(src, dst)
	if err == nil || !errors.Is(err, syscall.EXDEV) {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	return safeio.WriteAtomic(dst, 0o644, func(w io.Writer) error {
		_, err := io.Copy(w, in)
		return err
	})
}
