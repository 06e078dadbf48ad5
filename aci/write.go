package aci

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/appc/spec/schema"

	"github.com/nix2aci/nix2aci/fragcache"
	"github.com/nix2aci/nix2aci/gzmember"
	"github.com/nix2aci/nix2aci/manifest"
	"github.com/nix2aci/nix2aci/nixstore"
)

// Compression is how an archive is compressed.
type Compression = gzmember.Compression

// The compressions Write can produce; the ACI spec also allows bzip2, which
// nothing is gained by writing.
const (
	Gzip = gzmember.Gzip
	Xz   = gzmember.Xz
	None = gzmember.None
)

// ParseCompression checks a compression name given by a user.
func ParseCompression(s string) (Compression, error) {
	switch c := Compression(s); c {
	case Gzip, Xz, None:
		return c, nil
	}
	return "", fmt.Errorf("unknown compression %q: use gzip, xz or none", s)
}

// DefaultLevel is the gzip level used unless WithCompression says
// otherwise (see gzmember.DefaultLevel).
const DefaultLevel = gzmember.DefaultLevel

// FormatVersion changes whenever the bytes Write produces for a store
// path change: it is part of every cache entry's name (see
// fragcache.Cache.Fragment), and records of images (the layer index) are
// bound to it.
const FormatVersion = "nix2aci-fragment-3"

// LayerFormatVersion is FormatVersion for OCI layers (AsLayer): their tar
// names have no rootfs/ prefix, so their fragments differ from an ACI's
// and are cached apart from them.
const LayerFormatVersion = "nix2aci-oci-layer-1"

// Image is what Write puts into an archive.
type Image struct {
	Manifest *schema.ImageManifest
	// Closure is every store path the image needs.
	Closure *nixstore.Graph
	// Packages are linked into the root (/bin/..., /lib/...), first wins.
	Packages []string
	// Thin images hold no store contents, only a mount target per store
	// path; the manifest should carry a mount point for each (ThinMounts).
	Thin bool
	// Extra are files and directories the image gets at its root unless
	// its packages provide those paths.
	Extra []Extra
}

// Result says what Write wrote.
type Result struct {
	ImageID string `json:"imageID"`
	// DiffID and Digest are an OCI layer's (AsLayer) SHA-256 digests of
	// its uncompressed tar stream and of its compressed bytes, as
	// "sha256:<hex>"; ImageID is then empty.
	DiffID      string     `json:"diffID,omitempty"`
	Digest      string     `json:"digest,omitempty"`
	Size        int64      `json:"size"`
	TarSize     int64      `json:"uncompressedSize"`
	StorePaths  int        `json:"storePaths"`
	CachedPaths int        `json:"cachedPaths"`
	Conflicts   []Conflict `json:"conflicts,omitempty"`
}

// Progress is reported after each store path is written.
type Progress struct {
	StorePaths, TotalStorePaths int
	Bytes, TotalBytes           int64 // NAR sizes of the store paths done, and of the closure
}

type config struct {
	compression Compression
	level       int
	jobs        int
	cache       *fragcache.Cache
	modTime     time.Time
	progress    func(Progress)
	// layer writes an OCI layer (AsLayer) instead of an ACI.
	layer bool
	// maxEntries and maxNameBytes are what Inspect reads (tests lower
	// them).
	maxEntries, maxNameBytes int
}

// Option sets how Write works.
type Option func(*config)

// WithCompression sets the compression and, for gzip, its level (1-9;
// 0 means DefaultLevel).
func WithCompression(c Compression, level int) Option {
	return func(o *config) { o.compression, o.level = c, level }
}

// WithJobs sets how many chunks are compressed at once (default: one per CPU).
func WithJobs(n int) Option { return func(o *config) { o.jobs = n } }

// WithCache reuses and stores compressed store paths in c.
func WithCache(c *fragcache.Cache) Option { return func(o *config) { o.cache = c } }

// WithModTime sets the mtime of entries that are not from the store (the
// manifest, the symlink farm, rootfs/nix/store). Default: the Unix epoch.
func WithModTime(t time.Time) Option { return func(o *config) { o.modTime = t } }

// WithProgress calls f after each store path is written, from one goroutine.
func WithProgress(f func(Progress)) Option { return func(o *config) { o.progress = f } }

// AsLayer makes Write write an OCI image layer instead of an ACI: the
// same entries, written by the same rules, but no manifest and no rootfs/
// prefix (the tar's root is the container's root), and the Result says
// the layer's DiffID and Digest. The image needs no manifest then.
func AsLayer() Option { return func(o *config) { o.layer = true } }

// WriteFile writes the image to path atomically: to a temporary file in the
// same directory, renamed into place only when complete. On any error,
// including a cancelled ctx, nothing is left at path or beside it.
func WriteFile(ctx context.Context, path string, img Image, opts ...Option) (res *Result, err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating output directory: %w", err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("creating output file: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if res, err = Write(ctx, tmp, img, opts...); err != nil {
		return nil, err
	}
	if err = tmp.Chmod(0o644); err != nil {
		return nil, err
	}
	if err = tmp.Close(); err != nil {
		return nil, fmt.Errorf("writing %s: %w", path, err)
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return nil, fmt.Errorf("renaming output into place: %w", err)
	}
	return res, nil
}

// Write writes the image as an ACI to w: one pass over the store, chunks
// compressed in parallel, the image ID hashed on the way.
func Write(ctx context.Context, w io.Writer, img Image, opts ...Option) (*Result, error) {
	cfg := config{compression: Gzip, level: DefaultLevel, jobs: runtime.GOMAXPROCS(0), modTime: time.Unix(0, 0), maxEntries: maxEntries, maxNameBytes: maxNameBytes}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.level == 0 {
		cfg.level = DefaultLevel
	}
	if cfg.compression == Gzip && (cfg.level < 1 || cfg.level > 9) {
		return nil, fmt.Errorf("gzip level %d is out of range: use 1 (fastest) to 9 (smallest)", cfg.level)
	}
	if cfg.compression != Gzip {
		// Only gzip members are cached: without compression there is
		// nothing to save, and the cache takes only members in Write's
		// gzip format, so an xz build would rewrite its entries every
		// time and use none.
		cfg.cache = nil
	}
	if (img.Manifest == nil && !cfg.layer) || img.Closure == nil {
		return nil, errors.New("image needs a manifest and a closure")
	}
	var mjson []byte
	if !cfg.layer {
		var err error
		if mjson, err = manifest.Marshal(img.Manifest); err != nil {
			return nil, fmt.Errorf("manifest: %w", err)
		}
	}
	// Every store path must be there before anything is written: a thin
	// image with a missing path would run with an empty directory.
	for _, p := range img.Closure.Paths {
		if _, err := os.Lstat(p.Path); err != nil {
			return nil, &nixstore.InvalidPathError{Path: p.Path, Reason: "it is in the closure but missing from the store; rebuild it (nix-store --realise) or repair the store (nix-store --verify --repair)"}
		}
	}
	farm, conflicts, err := imageFarm(img)
	if err != nil {
		return nil, err
	}

	// An ACI's image ID hashes its tar stream with SHA-512; an OCI
	// layer's DiffID with SHA-256, and its digest hashes what is written.
	h, version, root := sha512.New(), FormatVersion, "rootfs/"
	var digest hash.Hash
	if cfg.layer {
		h, version, root = sha256.New(), LayerFormatVersion, ""
		digest = sha256.New()
		w = io.MultiWriter(w, digest)
	}
	mcfg := gzmember.Config{Compression: cfg.compression, Level: cfg.level, Jobs: max(1, cfg.jobs), Tap: h}
	mw, err := gzmember.NewWriter(ctx, w, mcfg)
	if err != nil {
		return nil, err
	}
	b := &builder{
		cfg:    cfg,
		mw:     mw,
		root:   root,
		format: version + "\x00" + mcfg.MemberFormat(),
		done:   Progress{TotalStorePaths: len(img.Closure.Paths), TotalBytes: img.Closure.NarSize()},
	}
	var sizes gzmember.Totals
	if err = b.produce(img, mjson, farm); err != nil {
		err = mw.Abort(err)
	} else {
		sizes, err = mw.Close()
	}
	for _, f := range b.frags {
		f.Close()
	}
	if err != nil {
		return nil, err
	}
	res := &Result{
		Size:        sizes.Out,
		TarSize:     sizes.In,
		StorePaths:  len(img.Closure.Paths),
		CachedPaths: b.cachedPaths,
		Conflicts:   conflicts,
	}
	if cfg.layer {
		res.DiffID = "sha256:" + hex.EncodeToString(h.Sum(nil))
		res.Digest = "sha256:" + hex.EncodeToString(digest.Sum(nil))
	} else {
		res.ImageID = "sha512-" + hex.EncodeToString(h.Sum(nil))
	}
	return res, nil
}

// builder writes the entries of one archive, in archive order, into the
// member writer: a segment for the header (manifest, early farm), one per
// store path (cached when the cache has its members), and one for the
// rest of the farm and the end-of-archive blocks.
type builder struct {
	cfg config
	mw  *gzmember.Writer
	// root is the prefix of every entry's name: "rootfs/" in an ACI,
	// nothing in an OCI layer.
	root string
	// format names what a store path's members depend on besides its
	// contents, for the cache (fragcache.Cache.Fragment).
	format string
	// frags are the fragments opened, to close what a failed write left
	// open (old entries, half-written new ones).
	frags []*fragcache.Fragment
	// entries and nameBytes count the entries written and their names.
	entries, nameBytes int
	// done is the progress made; cachedPaths counts the store paths
	// whose members all came from the cache. The member writer's output
	// goroutine alone touches them until it is closed.
	done        Progress
	cachedPaths int
}

// countingTar is a tar writer that counts the entries written and
// refuses one past what Inspect reads, so that no image is written that
// inspect, sign and verify --full would refuse.
type countingTar struct {
	*tar.Writer
	b *builder
}

func (tw countingTar) WriteHeader(hdr *tar.Header) error {
	b := tw.b
	b.entries++
	b.nameBytes += len(hdr.Name)
	switch {
	case b.entries > b.cfg.maxEntries:
		return fmt.Errorf("the image would hold more than %d entries (files, directories and links), more than inspect, sign and verify read: build it --layered (each layer is an image of its own) or --thin", b.cfg.maxEntries)
	case b.nameBytes > b.cfg.maxNameBytes:
		return fmt.Errorf("the image's entry names would take more than %d bytes, more than inspect, sign and verify read: build it --layered (each layer is an image of its own) or --thin", b.cfg.maxNameBytes)
	}
	return tw.Writer.WriteHeader(hdr)
}

// produce walks the image in archive order and writes it to the member
// writer, cutting a segment around each store path.
func (b *builder) produce(img Image, mjson []byte, farm []farmEntry) error {
	tw := countingTar{tar.NewWriter(b.mw), b}
	mt, root := b.cfg.modTime, b.root
	if !b.cfg.layer {
		if err := tw.WriteHeader(&tar.Header{Name: "manifest", Mode: 0o644, Size: int64(len(mjson)), ModTime: mt, Typeflag: tar.TypeReg, Format: tar.FormatPAX}); err != nil {
			return err
		}
		if _, err := tw.Write(mjson); err != nil {
			return err
		}
		if err := writeDir(tw, root, mt); err != nil {
			return err
		}
	}
	i := 0
	for ; i < len(farm) && pathLess(farm[i].rel, "nix"); i++ {
		if err := writeFarmEntry(tw, root, farm[i], mt); err != nil {
			return err
		}
	}
	if err := writeDir(tw, root+"nix/", mt); err != nil {
		return err
	}
	if err := writeDir(tw, root+"nix/store/", mt); err != nil {
		return err
	}
	if img.Thin {
		for _, p := range img.Closure.Paths {
			if err := writeMountTarget(tw, root, p.Path); err != nil {
				return err
			}
		}
		if err := b.cut(tw); err != nil {
			return err
		}
		for _, p := range img.Closure.Paths {
			b.pathDone(p, nil)
		}
	} else {
		if err := b.cut(tw); err != nil {
			return err
		}
		copyBuf := make([]byte, 256<<10)
		for _, p := range img.Closure.Paths {
			// Each store path is a segment of its own: its members
			// depend on its bytes alone, and may be cached.
			var st gzmember.Store
			f := b.cfg.cache.Fragment(b.format, p)
			if f != nil {
				b.frags = append(b.frags, f)
				st = f
			}
			if err := b.mw.Begin(st); err != nil {
				return err
			}
			tw = countingTar{tar.NewWriter(b.mw), b}
			if err := writeTree(tw, root, p.Path, copyBuf); err != nil {
				return err
			}
			if err := b.cut(tw); err != nil {
				return err
			}
			b.pathDone(p, f)
		}
	}
	tw = countingTar{tar.NewWriter(b.mw), b}
	for ; i < len(farm); i++ {
		if err := writeFarmEntry(tw, root, farm[i], mt); err != nil {
			return err
		}
	}
	return tw.Close() // end-of-archive blocks
}

// cut ends a tar segment (padding its last entry) and the member
// writer's segment with it.
func (b *builder) cut(tw countingTar) error {
	if err := tw.Flush(); err != nil {
		return err
	}
	return b.mw.Cut()
}

// pathDone reports progress once store path p (cached in f, if not nil)
// is in the archive.
func (b *builder) pathDone(p nixstore.PathInfo, f *fragcache.Fragment) {
	b.mw.Then(func() {
		if f != nil && f.Hit() {
			b.cachedPaths++
		}
		b.done.StorePaths++
		b.done.Bytes += p.NarSize
		if b.cfg.progress != nil {
			b.cfg.progress(b.done)
		}
	})
}

func writeDir(tw countingTar, name string, mt time.Time) error {
	return tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mt, Format: tar.FormatPAX})
}

func writeFarmEntry(tw countingTar, root string, e farmEntry, mt time.Time) error {
	if e.file {
		mode := e.mode
		if mode == 0 {
			mode = 0o644
		}
		if err := tw.WriteHeader(&tar.Header{Name: root + e.rel, Typeflag: tar.TypeReg, Mode: mode, Uid: e.uid, Gid: e.gid, Size: int64(len(e.data)), ModTime: mt, Format: tar.FormatPAX}); err != nil {
			return err
		}
		_, err := tw.Write(e.data)
		return err
	}
	if e.target == "" {
		mode := e.mode
		if mode == 0 {
			mode = 0o755
		}
		return tw.WriteHeader(&tar.Header{Name: root + e.rel + "/", Typeflag: tar.TypeDir, Mode: mode, Uid: e.uid, Gid: e.gid, ModTime: mt, Format: tar.FormatPAX})
	}
	return tw.WriteHeader(&tar.Header{Name: root + e.rel, Typeflag: tar.TypeSymlink, Linkname: e.target, Mode: 0o777, ModTime: mt, Format: tar.FormatPAX})
}
