package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/nix2aci/nix2aci/aci"
	"github.com/nix2aci/nix2aci/fetch"
	"github.com/nix2aci/nix2aci/internal/safeio"
	"github.com/nix2aci/nix2aci/manifest"
	"github.com/nix2aci/nix2aci/oci"
	"github.com/nix2aci/nix2aci/pipeline"
	"github.com/nix2aci/nix2aci/sign"
)

type buildOptions struct {
	pipeline.Request
	json     bool
	link     bool
	progress bool
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
--layered writes each of the closure's most shared store paths as a layer
image of its own (the same file whichever app needs it) and an app image
that lists them as dependencies, with <image>.deps naming them in order:
  (cd ACIs && sudo rkt fetch $(cat X.deps)) && sudo rkt run ACIs/X.aci

--format oci writes an OCI image layout (<image>.oci) instead, from the
same plan; oci-archive and docker-archive the tar files podman load and
docker load take. podman takes oci:DIR:TAG where DIR is lower case (it
names the image after DIR), so an image in ACIs is run from there:
  (cd ACIs && podman run oci:X.oci:VERSION)

Without nixpkgs in NIX_PATH, recipes use nix2aci's offline package set,
which has busybox and busybox-static (from the host's busybox-static).
SOURCE_DATE_EPOCH, if set, is the image's "created" time.`,
		Flags: append([]cli.Flag{
			&cli.BoolFlag{Name: "fat", Usage: "put every store path of the closure into the image (default)"},
			&cli.BoolFlag{Name: "thin", Usage: "mount store paths from the host instead (writes .rkt-args)"},
			&cli.BoolFlag{Name: "layered", Usage: "put the most shared store paths into layer images the app image depends on (writes .deps)"},
			&cli.IntFlag{Name: "max-layers", Usage: "with --layered, at most `N` images below the app: layer groups, a base and its images, layers by popularity (rkt pays per image)", DefaultText: strconv.Itoa(pipeline.DefaultMaxLayers)},
			&cli.StringFlag{Name: "layer-prefix", Usage: "with --layered, name layers `PREFIX`/<store path name> (default: the app name's host + /nix)"},
			&cli.StringFlag{Name: "layer-group", Usage: "write no app: only the layer group image `NAME` (PREFIX/NAME) holding the target's closure less --base's, as a recipe's layer group NAME would (with --format oci: a base image layout, for --base)"},
			&cli.StringFlag{Name: "describe", Usage: "with --layer-group, also write a description of the image (name, version, image ID, store paths, the files below it) as `FILE` in --out (buildLayer's layer.json)"},
			&cli.StringFlag{Name: "base", Usage: "build the app on the base `FILE` (a layer group image, or a buildLayer output) or NAME:VERSION (fetched by appc discovery, its signature checked against --trust-dir): it depends on it by image ID and holds none of its store paths; with --format oci, the image layout DIR a --layer-group --format oci build wrote, whose layers become the app's lowest"},
			&cli.StringFlag{Name: "trust-dir", Value: "/etc/rkt/trustedkeys", Usage: "with --base NAME:VERSION, the trust store `DIR` in rkt's layout whose keys a fetched base must be signed by"},
			&cli.StringFlag{Name: "insecure-options", Usage: "with --base NAME:VERSION, \"http\" allows fetching it over plain http (as rkt's --insecure-options=http)"},
			&cli.StringFlag{Name: "format", Value: "aci", Usage: "write an ACI (aci), an OCI image layout directory <image>.oci (oci, for skopeo, podman and umoci as oci:DIR:TAG), or the tar file podman load takes as <image>.oci.tar (oci-archive) or docker load as <image>.docker.tar (docker-archive)"},
			&cli.StringFlag{Name: "out", Aliases: []string{"o"}, Value: "ACIs", Usage: "output `DIR`"},
			&cli.StringFlag{Name: "name", Usage: "image name (an AC Identifier, e.g. example.com/busybox)"},
			&cli.BoolFlag{Name: "json", Usage: "print one JSON object describing what was built"},
			&cli.StringFlag{Name: "exec", Usage: "the app's command, `\"PROGRAM [ARG...]\"` (quoted as in a shell), over the recipe's"},
			&cli.StringFlag{Name: "user", Usage: "run the app as `USER` (a name in the image's /etc/passwd, or a uid)"},
			&cli.StringFlag{Name: "group", Usage: "run the app as `GROUP` (a name in the image's /etc/group, or a gid)"},
			&cli.StringSliceFlag{Name: "env", Usage: "set `K=V` in the app's environment (repeatable)"},
			&cli.StringSliceFlag{Name: "label", Usage: "add the image label `K=V` (repeatable)"},
			&cli.StringSliceFlag{Name: "annotation", Usage: "add the annotation `K=V` (repeatable)"},
			&cli.StringSliceFlag{Name: "port", Usage: "declare the port `NAME:[PROTOCOL:]PORT`, e.g. http:8080 (repeatable; rkt run --port NAME:HOSTPORT)"},
			&cli.StringSliceFlag{Name: "mount", Usage: "declare the mount point `NAME:/PATH[:ro]` (repeatable; rkt run --volume NAME,kind=host,source=DIR)"},
			&cli.StringFlag{Name: "pkgs", EnvVars: []string{"NIX2ACI_PKGS"}, Usage: "`DIR` of recipes overriding the built-in ones"},
			&cli.StringFlag{Name: "compression", Value: "gzip", Usage: "gzip, xz or none"},
			&cli.IntFlag{Name: "level", Usage: "gzip level 1 (fastest) to 9 (smallest)", DefaultText: strconv.Itoa(aci.DefaultLevel)},
			&cli.IntFlag{Name: "jobs", Aliases: []string{"j"}, Usage: "parallel compression jobs", DefaultText: "one per CPU, at most 12"},
			&cli.BoolFlag{Name: "no-cache", Usage: "neither use nor fill the cache of compressed store paths, nor reuse layer files in --out (nothing to prove them with)"},
			&cli.StringFlag{Name: "cache-dir", Usage: "cache `DIR` (default $XDG_CACHE_HOME/nix2aci or ~/.cache/nix2aci)"},
			&cli.StringFlag{Name: "cache-key", EnvVars: []string{"NIX2ACI_CACHE_KEY"}, Usage: "path of the `FILE` holding the secret key that tags cache entries (never the key itself: for that, NIX2ACI_CACHE_KEY_HEX); a warm build takes only members tagged under it; made if missing; never inside the cache (default $XDG_CONFIG_HOME/nix2aci/cache-key or ~/.config/nix2aci/cache-key)"},
			&cli.StringFlag{Name: "cache-max-size", Value: "10G", Usage: "after a build, trim the cache to this `SIZE` (least recently used first)"},
			&cli.BoolFlag{Name: "no-link", Usage: "do not create the ./result.aci (and result.aci.asc, result.rkt-args) symlinks, or an OCI build's ./result.oci (.oci.tar, .docker.tar) and result.podman-args"},
			&cli.StringSliceFlag{Name: "closure-graph", Usage: "inside a Nix build (buildACI): the target's closure from exportReferencesGraph `FILE` instead of nix-store; no cache, no GC roots"},
			&cli.BoolFlag{Name: "no-exec-check", Usage: "build even if the app's program or its interpreter (#! line, ELF loader) is not in the image"},
		}, append(buildSignFlags(), identityFlag())...),
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
	// passphrase fails at once. An OCI image is signed once written.
	var ociSigning *ociBuildSigning
	if o.Format != oci.ACI {
		if ociSigning, err = buildOCISigning(c, o); err != nil {
			return err
		}
	} else if c.IsSet("identity") {
		return usagef("--identity names what an OCI image is signed as: it goes with --format oci or oci-archive")
	} else if o.Signer, err = buildSigner(c); err != nil {
		return err
	}
	stderr := c.App.ErrWriter
	o.Warn = func(msg string) { fmt.Fprintf(stderr, "nix2aci: warning: %s\n", safeio.Terminal(msg, 300, 2000)) }
	if ociSigning != nil {
		o.SignOCI = ociSigning.signer(o.OutDir, o.Warn)
	}
	var bar *progressBar
	if o.progress {
		bar = newProgressBar(stderr)
		o.Progress = bar.update
	}
	out, err := pipeline.Build(c.Context, o.Request)
	bar.done()
	if err != nil {
		if pipeline.IsUsage(err) {
			return usagef("%v", err)
		}
		return err
	}
	var sigstore string
	var identities []string
	if ociSigning != nil {
		sigstore, identities = ociSigning.sigstore, ociSigning.signed
	}
	result := ""
	if o.link {
		if err := linkResults(out); err != nil {
			return err
		}
		result = resultLink
		if out.OCI != "" {
			result = "result" + oci.Extension(out.Format)
		}
	}
	if o.json {
		return printJSON(c.App.Writer, struct {
			*pipeline.Result
			Link string `json:"result,omitempty"`
			// An OCI image's lookaside tree and the identities it was
			// signed as.
			Sigstore   string   `json:"sigstore,omitempty"`
			Identities []string `json:"identities,omitempty"`
		}{out, result, sigstore, identities})
	}
	if out.OCI != "" {
		printOCI(c.App.Writer, stderr, out)
		if sigstore != "" {
			printSigned(c, sigstore, identities)
		}
		return nil
	}
	fmt.Fprintln(c.App.Writer, out.ACI)
	fmt.Fprintln(stderr, out.ImageID)
	if out.RktArgs != "" {
		fmt.Fprintf(stderr, "run it with: sudo rkt run $(cat %s) %s\n", out.RktArgs, out.ACI)
	}
	if out.Deps != "" {
		reused := 0
		for _, l := range out.Layers {
			if l.Reused {
				reused++
			}
		}
		below := ""
		if len(out.Base) > 0 {
			below = fmt.Sprintf(" on a base of %d %s", len(out.Base), plural(len(out.Base), "image", "images"))
		}
		fmt.Fprintf(stderr, "%d %s (%d reused)%s, listed in rendering order in %s\n", len(out.Layers), plural(len(out.Layers), "layer", "layers"), reused, below, out.Deps)
		if out.Kind != manifest.LayerKind { // a layer group is no app to run
			fmt.Fprintf(stderr, "run it with: (cd %s && sudo rkt fetch $(cat %s)) && sudo rkt run %s\n", filepath.Dir(out.Deps), filepath.Base(out.Deps), out.ACI)
		}
		fmt.Fprintf(stderr, "or publish it: nix2aci publish --out SITE --base-url URL %s\n", filepath.Dir(out.ACI))
	}
	return nil
}

func buildOptionsFrom(c *cli.Context) (*buildOptions, error) {
	if c.NArg() > 1 && c.String("layer-group") != "" {
		// A layer group of several packages: store paths only.
	} else if c.NArg() != 1 || c.Args().First() == "" {
		return nil, usagef("build takes one TARGET (got %d): e.g. nix2aci build busybox --fat", c.NArg())
	}
	kind := pipeline.Fat
	n := 0
	for _, k := range []string{pipeline.Fat, pipeline.Thin, pipeline.Layered} {
		if c.Bool(k) {
			kind = k
			n++
		}
	}
	if n > 1 {
		if c.Bool("layered") && c.Bool("thin") {
			return nil, usagef("--layered and --thin exclude each other: a layered image holds its store paths in layer images, a thin one mounts them from the host; choose one")
		}
		return nil, usagef("--fat, --thin and --layered exclude each other: choose one")
	}
	if c.IsSet("layer-group") {
		if c.Bool(pipeline.Thin) {
			return nil, usagef("--layer-group writes a layer group image, which holds store paths: it does not go with --thin")
		}
		kind = pipeline.Layered
	}
	if c.IsSet("describe") && !c.IsSet("layer-group") {
		return nil, usagef("--describe goes with --layer-group")
	}
	if c.IsSet("max-layers") && kind != pipeline.Layered {
		return nil, usagef("--max-layers applies to --layered builds only")
	}
	if c.IsSet("layer-prefix") && kind != pipeline.Layered {
		return nil, usagef("--layer-prefix applies to --layered builds only")
	}
	if c.IsSet("max-layers") && c.Int("max-layers") < 1 {
		return nil, usagef("--max-layers %d: give at least 1", c.Int("max-layers"))
	}
	format, err := oci.ParseFormat(c.String("format"))
	if err != nil {
		return nil, usagef("--format: %v", err)
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
		Request: pipeline.Request{
			Target:        c.Args().First(),
			Kind:          kind,
			Format:        format,
			MaxLayers:     c.Int("max-layers"),
			LayerPrefix:   c.String("layer-prefix"),
			OutDir:        c.String("out"),
			Name:          c.String("name"),
			Recipes:       c.String("pkgs"),
			Compression:   comp,
			Level:         c.Int("level"),
			Jobs:          c.Int("jobs"),
			CacheMax:      maxSize,
			NoExecCheck:   c.Bool("no-exec-check"),
			ClosureGraphs: c.StringSlice("closure-graph"),
			Base:          c.String("base"),
			GroupOnly:     c.String("layer-group"),
			Describe:      c.String("describe"),
			GroupPackages: c.Args().Tail(),
		},
		json:     c.Bool("json"),
		link:     !c.Bool("no-link"),
		progress: !c.Bool("json") && isTerminal(c.App.ErrWriter),
	}
	keyHex := secret(cacheKeyHexEnv) // taken from the environment at start (secrets.go)
	if !c.Bool("no-cache") && kind != pipeline.Thin {
		if o.CacheDir = c.String("cache-dir"); o.CacheDir == "" {
			o.CacheDir = defaultCacheDir()
		}
		if o.CacheKey, o.CacheKeyValue, err = cacheKeyFrom(c, keyHex); err != nil {
			return nil, err
		}
	}
	if base := c.String("base"); base != "" && format == oci.ACI { // an OCI base is a layout directory (pipeline.loadOCIBase)
		if _, err := os.Stat(base); err != nil {
			// A name: fetched, and judged by the trust store.
			trust, err := sign.LoadTrustDir(c.String("trust-dir"))
			if err != nil {
				return nil, fmt.Errorf("--base %s is no file, so it is fetched by name, its signature judged by the trust store (--trust-dir): %w", base, err)
			}
			o.BaseFetch = fetch.Options{Trust: trust}
		}
	}
	switch c.String("insecure-options") {
	case "":
	case "http":
		o.BaseFetch.InsecureHTTP = true
	default:
		return nil, usagef("--insecure-options takes http (nothing else is insecure enough to allow)")
	}
	if o.Name != "" {
		if err := manifest.CheckIdentifier(o.Name); err != nil {
			return nil, usagef("--name: %v", err)
		}
	}
	if o.Overrides, err = overridesFrom(c); err != nil {
		return nil, err
	}
	if o.LayerPrefix != "" {
		if err := manifest.CheckIdentifier(o.LayerPrefix); err != nil {
			return nil, usagef("--layer-prefix: %v", err)
		}
	}
	if sde := os.Getenv("SOURCE_DATE_EPOCH"); sde != "" {
		secs, err := strconv.ParseInt(sde, 10, 64)
		if err != nil {
			return nil, usagef("SOURCE_DATE_EPOCH=%q is not a number of seconds since 1970", sde)
		}
		o.Created = time.Unix(secs, 0).UTC()
	}
	return o, nil
}

// writeFileAtomic writes data to path with perm atomically (see
// safeio.WriteFileAtomic); with replace unset an existing path is a usage
// error and is left alone.
func writeFileAtomic(path string, data []byte, perm os.FileMode, replace bool) error {
	if replace {
		return safeio.WriteFileAtomic(path, data, perm)
	}
	err := safeio.CreateFileAtomic(path, data, perm)
	if errors.Is(err, os.ErrExist) {
		return usagef("%s exists; not overwriting it", path)
	}
	return err
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

// defaultCacheKey is where the cache key lives: with the user's
// configuration, away from the cache it guards.
func defaultCacheKey() string {
	if d := os.Getenv("XDG_CONFIG_HOME"); d != "" {
		return filepath.Join(d, "nix2aci", "cache-key")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".config", "nix2aci", "cache-key")
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
	last  time.Time
	shown bool
}

func newProgressBar(w io.Writer) *progressBar {
	return &progressBar{w: w, last: time.Now()}
}

func (b *progressBar) update(name string, p aci.Progress) {
	if time.Since(b.last) < 100*time.Millisecond && p.StorePaths < p.TotalStorePaths {
		return
	}
	b.last = time.Now()
	b.shown = true
	fmt.Fprintf(b.w, "\r\033[K%s: %d/%d store paths, %d/%d MB ", name, p.StorePaths, p.TotalStorePaths, p.Bytes>>20, p.TotalBytes>>20)
}

func (b *progressBar) done() {
	if b != nil && b.shown {
		fmt.Fprint(b.w, "\r\033[K")
	}
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// overridesFrom reads the flags that set manifest fields for one build.
func overridesFrom(c *cli.Context) (manifest.Overrides, error) {
	o := manifest.Overrides{User: c.String("user"), Group: c.String("group")}
	for _, f := range []string{"user", "group"} {
		if err := manifest.CheckUserGroup("--"+f, c.String(f)); err != nil {
			return o, usagef("%v", err)
		}
	}
	if e := c.String("exec"); e != "" {
		words, err := manifest.SplitCommand(e)
		if err != nil || len(words) == 0 || !strings.HasPrefix(words[0], "/") {
			return o, usagef("--exec %s: give the program's absolute path in the image, then its arguments, e.g. --exec '/bin/app --port 80'", safeio.QuoteAlways(e))
		}
		o.Exec = words
	}
	for _, kv := range []struct {
		flag  string
		dst   *map[string]string
		check func(k, v string) error
	}{
		{"env", &o.Env, func(k, _ string) error { return manifest.CheckEnvName(k) }},
		{"label", &o.Labels, manifest.CheckLabel},
		{"annotation", &o.Annotations, manifest.CheckAnnotation},
	} {
		for _, s := range c.StringSlice(kv.flag) {
			k, v, err := manifest.ParseKeyValue("--"+kv.flag, s)
			if err != nil {
				return o, usagef("%v", err)
			}
			if err := kv.check(k, v); err != nil {
				return o, usagef("--%s: %v", kv.flag, err)
			}
			if *kv.dst == nil {
				*kv.dst = map[string]string{}
			}
			(*kv.dst)[k] = v
		}
	}
	for _, s := range c.StringSlice("port") {
		p, err := manifest.ParsePort(s)
		if err != nil {
			return o, usagef("--port: %v", err)
		}
		o.Ports = append(o.Ports, p)
	}
	for _, s := range c.StringSlice("mount") {
		m, err := manifest.ParseMount(s)
		if err != nil {
			return o, usagef("--mount: %v", err)
		}
		o.Mounts = append(o.Mounts, m)
	}
	return o, nil
}
