package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/nix2aci/nix2aci/aci"
	"github.com/nix2aci/nix2aci/manifest"
	"github.com/nix2aci/nix2aci/nixstore"
	"github.com/nix2aci/nix2aci/outdir"
	"github.com/nix2aci/nix2aci/pkgs"
)

type buildOptions struct {
	target      string
	thin        bool
	outDir      string
	name        string
	json        bool
	recipes     string
	compression aci.Compression
	level       int
	jobs        int
	cacheDir    string // "" disables the cache
	cacheMax    int64
	link        bool
	execCheck   bool
	created     time.Time
	progress    bool
}

func buildCommand() *cli.Command {
	return &cli.Command{
		Name:      "build",
		Usage:     "build an ACI from a recipe, nixpkgs attribute, store path or .nix file",
		ArgsUsage: "TARGET",
		Description: `TARGET is a recipe name (nix2aci pkgs list), a nixpkgs attribute, a
/nix/store path (or a link to one, like ./result) or a .nix file.

--fat (the default) puts the whole closure into the image. --thin puts in
only a mount point per store path and writes <image>.rkt-args beside it:
  sudo rkt run $(cat ACIs/X.rkt-args) ACIs/X.aci

Without nixpkgs in NIX_PATH, recipes use nix2aci's offline package set,
which has busybox and busybox-static (from the host's busybox-static).
SOURCE_DATE_EPOCH, if set, is the image's "created" time.`,
		Flags: append([]cli.Flag{
			&cli.BoolFlag{Name: "fat", Usage: "put every store path of the closure into the image (default)"},
			&cli.BoolFlag{Name: "thin", Usage: "mount store paths from the host instead (writes .rkt-args)"},
			&cli.StringFlag{Name: "out", Aliases: []string{"o"}, Value: "ACIs", Usage: "output `DIR`"},
			&cli.StringFlag{Name: "name", Usage: "image name (an AC Identifier, e.g. example.com/busybox)"},
			&cli.BoolFlag{Name: "json", Usage: "print one JSON object describing what was built"},
			&cli.StringFlag{Name: "pkgs", EnvVars: []string{"NIX2ACI_PKGS"}, Usage: "`DIR` of recipes overriding the built-in ones"},
			&cli.StringFlag{Name: "compression", Value: "gzip", Usage: "gzip, xz or none"},
			&cli.IntFlag{Name: "level", Usage: "gzip level 1 (fastest) to 9 (smallest) (default 6)"},
			&cli.IntFlag{Name: "jobs", Aliases: []string{"j"}, Usage: "parallel compression jobs (default: one per CPU, at most 12)"},
			&cli.BoolFlag{Name: "no-cache", Usage: "neither use nor fill the cache of compressed store paths"},
			&cli.StringFlag{Name: "cache-dir", Usage: "cache `DIR` (default $XDG_CACHE_HOME/nix2aci or ~/.cache/nix2aci)"},
			&cli.StringFlag{Name: "cache-max-size", Value: "10G", Usage: "after a build, trim the cache to this `SIZE` (least recently used first)"},
			&cli.BoolFlag{Name: "no-link", Usage: "do not create the ./result.aci (and result.aci.asc, result.rkt-args) symlinks"},
			&cli.BoolFlag{Name: "no-exec-check", Usage: "build even if the app's program or its interpreter (#! line, ELF loader) is not in the image"},
		}, buildSignFlags()...),
		BashComplete: completeRecipes,
		Action:       runBuild,
	}
}

func runBuild(c *cli.Context) error {
	o, err := buildOptionsFrom(c)
	if err != nil {
		return err
	}
	// Load (and unlock) any signing key before the long part, so a wrong
	// passphrase fails at once.
	signer, err := buildSigner(c)
	if err != nil {
		return err
	}
	out, err := build(c, o, signer)
	if err != nil {
		return err
	}
	if o.json {
		return printJSON(c.App.Writer, out)
	}
	fmt.Fprintln(c.App.Writer, out.ACI)
	fmt.Fprintln(c.App.ErrWriter, out.ImageID)
	if out.RktArgs != "" {
		fmt.Fprintf(c.App.ErrWriter, "run it with: sudo rkt run $(cat %s) %s\n", out.RktArgs, out.ACI)
	}
	return nil
}

func buildOptionsFrom(c *cli.Context) (*buildOptions, error) {
	if c.NArg() != 1 || c.Args().First() == "" {
		return nil, usagef("build takes one TARGET (got %d): e.g. nix2aci build busybox --fat", c.NArg())
	}
	if c.Bool("fat") && c.Bool("thin") {
		return nil, usagef("--fat and --thin exclude each other: choose one")
	}
	comp, err := aci.ParseCompression(c.String("compression"))
	if err != nil {
		return nil, usagef("--compression: %v", err)
	}
	if l := c.Int("level"); l != 0 && (l < 1 || l > 9 || comp != aci.Gzip) {
		return nil, usagef("--level %d: levels 1 to 9 apply to --compression gzip only", l)
	}
	maxSize, err := parseSize(c.String("cache-max-size"))
	if err != nil {
		return nil, usagef("--cache-max-size: %v", err)
	}
	o := &buildOptions{
		target:      c.Args().First(),
		thin:        c.Bool("thin"),
		outDir:      c.String("out"),
		name:        c.String("name"),
		json:        c.Bool("json"),
		recipes:     c.String("pkgs"),
		compression: comp,
		level:       c.Int("level"),
		jobs:        c.Int("jobs"),
		cacheMax:    maxSize,
		link:        !c.Bool("no-link"),
		execCheck:   !c.Bool("no-exec-check"),
		progress:    !c.Bool("json") && isTerminal(c.App.ErrWriter),
	}
	if !c.Bool("no-cache") && !o.thin {
		if o.cacheDir = c.String("cache-dir"); o.cacheDir == "" {
			o.cacheDir = defaultCacheDir()
		}
	}
	if o.name != "" {
		if err := manifest.CheckIdentifier(o.name); err != nil {
			return nil, usagef("--name: %v", err)
		}
	}
	if sde := os.Getenv("SOURCE_DATE_EPOCH"); sde != "" {
		secs, err := strconv.ParseInt(sde, 10, 64)
		if err != nil {
			return nil, usagef("SOURCE_DATE_EPOCH=%q is not a number of seconds since 1970", sde)
		}
		o.created = time.Unix(secs, 0).UTC()
	}
	return o, nil
}

// buildOutput is what build prints with --json.
type buildOutput struct {
	ACI         string         `json:"aci"`
	RktArgs     string         `json:"rktArgs,omitempty"`
	Signature   string         `json:"signature,omitempty"`
	GCRoots     []string       `json:"gcRoots"`
	Result      string         `json:"result,omitempty"`
	Name        string         `json:"name"`
	Version     string         `json:"version"`
	OS          string         `json:"os"`
	Arch        string         `json:"arch"`
	Kind        string         `json:"kind"`
	ImageID     string         `json:"imageID"`
	StorePaths  int            `json:"storePaths"`
	CachedPaths int            `json:"cachedPaths"`
	Size        int64          `json:"size"`
	Offline     bool           `json:"offline"`
	Conflicts   []aci.Conflict `json:"conflicts,omitempty"`
}

// build is the pipeline: recipe -> packages -> closure -> manifest ->
// archive -> signature. Everything is written into a staging directory
// inside the output directory and moved into place only when all of it is
// there (see package outdir): a failed or interrupted build leaves the
// previous image, its signature, its .rkt-args and its GC roots as they
// were.
func build(c *cli.Context, o *buildOptions, signer imageSigner) (*buildOutput, error) {
	ctx := c.Context
	stderr := c.App.ErrWriter
	var popts []pkgs.Option
	if o.recipes != "" {
		popts = append(popts, pkgs.WithUserRecipes(o.recipes))
	}
	t, err := pkgs.Resolve(ctx, o.target, popts...)
	if err != nil {
		return nil, err
	}
	if o.name != "" {
		t.Spec.Name = o.name
	} else if t.Spec.Name != "" {
		// A name typed into a recipe is never rewritten either; names
		// taken from package names are made valid.
		if err := manifest.CheckIdentifier(t.Spec.Name); err != nil {
			return nil, fmt.Errorf("the recipe's name: %w", err)
		}
	}
	// Name the outputs before building, to place the GC roots beside them.
	first := t.Packages[0]
	spec := t.Spec
	spec.Name = orDefault(spec.Name, first.PName)
	spec.Version = orDefault(spec.Version, first.Version)
	spec.System = orDefault(spec.System, first.System)
	spec.Exec = []string{"/placeholder"}
	probe, err := manifest.New(spec)
	if err != nil {
		return nil, err
	}
	fileName, err := manifest.FileName(probe)
	if err != nil {
		return nil, err
	}
	base := strings.TrimSuffix(fileName, ".aci")
	st, err := outdir.Begin(o.outDir)
	if err != nil {
		return nil, err
	}
	committed := false
	defer func() {
		if !committed {
			st.Abort()
		}
	}()
	// Roots inside the staging directory keep the packages alive while
	// the image is written; the final roots replace the old ones only
	// when the new image replaces the old image.
	if err := t.Realise(ctx, st.Path("gcroot")); err != nil {
		return nil, err
	}
	if err := t.Finish(); err != nil {
		return nil, err
	}
	g, err := nixstore.Closure(ctx, t.StorePaths())
	if err != nil {
		return nil, err
	}
	spec = t.Spec
	spec.Created = o.created
	spec.Kind = map[bool]string{false: "fat", true: "thin"}[o.thin]
	if o.thin {
		spec.Mounts = append(spec.Mounts, manifest.StoreMounts(g.StorePaths())...)
	}
	im, err := manifest.New(spec)
	if err != nil {
		return nil, err
	}

	img := aci.Image{Manifest: im, Closure: g, Packages: t.StorePaths(), Thin: o.thin}
	if o.execCheck {
		if err := aci.CheckExec(img); err != nil {
			return nil, err
		}
	}

	opts := []aci.Option{aci.WithCompression(o.compression, o.level), aci.WithModTime(o.created)}
	if o.jobs > 0 {
		opts = append(opts, aci.WithJobs(o.jobs))
	}
	var cache *aci.Cache
	if o.cacheDir != "" {
		if cache, err = aci.OpenCache(o.cacheDir); err != nil {
			fmt.Fprintf(stderr, "nix2aci: warning: %v; building without the cache\n", err)
		} else {
			opts = append(opts, aci.WithCache(cache))
		}
	}
	var bar *progressBar
	if o.progress {
		bar = newProgressBar(stderr, fileName)
		opts = append(opts, aci.WithProgress(bar.update))
	}
	res, err := aci.WriteFile(ctx, st.Path(fileName), img, opts...)
	bar.done()
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("build of %s interrupted; nothing was written: %w", fileName, context.Cause(ctx))
		}
		return nil, fmt.Errorf("writing %s: %w", st.Final(fileName), err)
	}
	for _, cf := range res.Conflicts {
		fmt.Fprintf(stderr, "nix2aci: warning: two packages provide %s\n", cf)
	}
	names, stale := []string{fileName}, []string(nil)
	argsName := base + ".rkt-args"
	if o.thin {
		if err := os.WriteFile(st.Path(argsName), []byte(manifest.RktVolumeArgs(g.StorePaths())), 0o644); err != nil {
			return nil, fmt.Errorf("writing %s: %w", st.Final(argsName), err)
		}
		names = append(names, argsName)
	} else {
		stale = append(stale, argsName)
	}
	ascName := fileName + ".asc"
	if signer != nil {
		if err := signer(ctx, st.Path(fileName), st.Path(ascName)); err != nil {
			return nil, err
		}
		names = append(names, ascName)
	} else {
		stale = append(stale, ascName) // it would sign the old image
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("build of %s interrupted; nothing was written: %w", fileName, context.Cause(ctx))
	}
	gcroot := st.Final(base + ".gcroot")
	committed = true
	err = st.Commit(names, stale, func() error {
		// The new image is in place: point its roots at its packages. The
		// staging roots still hold them until this is done.
		if err := t.Realise(context.WithoutCancel(ctx), gcroot); err != nil {
			return fmt.Errorf("%s is written, but registering its GC roots failed (a garbage collection may remove what it needs; build again): %w", st.Final(fileName), err)
		}
		removeStaleRoots(gcroot, len(t.Packages))
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := &buildOutput{
		ACI: st.Final(fileName), Name: im.Name.String(), Kind: map[bool]string{false: "fat", true: "thin"}[o.thin],
		ImageID: res.ImageID, StorePaths: res.StorePaths, CachedPaths: res.CachedPaths, Size: res.Size,
		Offline: t.Offline, Conflicts: res.Conflicts, GCRoots: gcRoots(gcroot, len(t.Packages)),
	}
	out.Version, _ = im.Labels.Get("version")
	out.OS, _ = im.Labels.Get("os")
	out.Arch, _ = im.Labels.Get("arch")
	if o.thin {
		out.RktArgs = st.Final(argsName)
	}
	if signer != nil {
		out.Signature = st.Final(ascName)
	}
	if o.link {
		if err := linkResults(out); err != nil {
			return nil, err
		}
		out.Result = resultLink
	}
	if cache != nil && o.cacheMax > 0 {
		if _, err := cache.GC(o.cacheMax); err != nil {
			fmt.Fprintf(stderr, "nix2aci: warning: trimming cache: %v\n", err)
		}
	}
	return out, nil
}

func gcRoots(gcroot string, n int) []string {
	roots := []string{gcroot}
	for i := 2; i <= n; i++ {
		roots = append(roots, fmt.Sprintf("%s-%d", gcroot, i))
	}
	return roots
}

// removeStaleRoots removes the roots gcroot-N, N > n, that a previous
// build with more packages left.
func removeStaleRoots(gcroot string, n int) {
	for i := max(n+1, 2); ; i++ {
		r := fmt.Sprintf("%s-%d", gcroot, i)
		fi, err := os.Lstat(r)
		if err != nil || fi.Mode()&os.ModeSymlink == 0 {
			return
		}
		os.Remove(r)
	}
}

// The links a build leaves in the working directory, named so that rkt
// reads them: a path is an image file to rkt only if it ends in .aci, and
// its signature is looked for at <path>.asc.
const (
	resultLink = "result.aci"
	resultSig  = "result.aci.asc"
	resultArgs = "result.rkt-args"
)

// linkResults points result.aci (and result.aci.asc, result.rkt-args) at
// what the build wrote, and removes a link of the previous build that
// would now lie (a signature or volume list of another image).
func linkResults(out *buildOutput) error {
	for _, l := range []struct{ link, target string }{{resultLink, out.ACI}, {resultSig, out.Signature}, {resultArgs, out.RktArgs}} {
		if l.target == "" {
			if fi, err := os.Lstat(l.link); err == nil && fi.Mode()&os.ModeSymlink != 0 {
				os.Remove(l.link)
			}
			continue
		}
		if err := replaceSymlink(l.target, l.link); err != nil {
			return err
		}
	}
	return nil
}

// replaceSymlink points link at target (relative to link's directory when
// target is relative), replacing an old link but never a real file. The
// new link is made under a unique temporary name and renamed over the
// old one, so concurrent builds never collide.
func replaceSymlink(target, link string) error {
	if fi, err := os.Lstat(link); err == nil && fi.Mode()&os.ModeSymlink == 0 {
		return fmt.Errorf("%s exists and is not a symlink; not replacing it (use --no-link)", link)
	} else if old, err := os.Readlink(link); err == nil && strings.HasPrefix(old, nixstore.StoreDir+"/") {
		return fmt.Errorf("%s points into the Nix store (%s), like nix-build's result: not replacing it; remove it or use --no-link", link, old)
	}
	for i := 0; ; i++ {
		tmp := fmt.Sprintf("%s.tmp-%d-%d", link, os.Getpid(), rand.Uint32())
		err := os.Symlink(target, tmp)
		if errors.Is(err, fs.ErrExist) && i < 10 {
			continue
		}
		if err != nil {
			return fmt.Errorf("creating %s: %w", link, err)
		}
		if err := os.Rename(tmp, link); err != nil {
			os.Remove(tmp)
			return fmt.Errorf("creating %s: %w", link, err)
		}
		return nil
	}
}

// writeFileAtomic writes data to path with perm through a temporary file
// in the same directory, so that path never holds half a file. With
// replace unset, an existing path is an error and is left alone.
func writeFileAtomic(path string, data []byte, perm os.FileMode, replace bool) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Chmod(perm)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if replace {
		return os.Rename(tmp.Name(), path)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, os.ErrExist) {
			return usagef("%s exists; not overwriting it", path)
		}
		return err
	}
	return nil
}

func defaultCacheDir() string {
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "nix2aci")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".cache", "nix2aci")
	}
	return ""
}

func parseSize(s string) (int64, error) {
	s = strings.TrimSpace(strings.ToUpper(s))
	mult := int64(1)
	for suffix, m := range map[string]int64{"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40} {
		if strings.HasSuffix(s, suffix) {
			s, mult = strings.TrimSuffix(s, suffix), m
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a size like 500M or 10G", s)
	}
	return n * mult, nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// progressBar shows store paths and bytes done on a terminal; a nil bar
// does nothing.
type progressBar struct {
	w     io.Writer
	name  string
	last  time.Time
	shown bool
}

func newProgressBar(w io.Writer, name string) *progressBar {
	return &progressBar{w: w, name: name, last: time.Now()}
}

func (b *progressBar) update(p aci.Progress) {
	if time.Since(b.last) < 100*time.Millisecond && p.StorePaths < p.TotalStorePaths {
		return
	}
	b.last = time.Now()
	b.shown = true
	fmt.Fprintf(b.w, "\r%s: %d/%d store paths, %d/%d MB ", b.name, p.StorePaths, p.TotalStorePaths, p.Bytes>>20, p.TotalBytes>>20)
}

func (b *progressBar) done() {
	if b != nil && b.shown {
		fmt.Fprint(b.w, "\r\033[K")
	}
}
