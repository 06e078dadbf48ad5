package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/urfave/cli/v2"

	"github.com/nix2aci/nix2aci/objstore"
	"github.com/nix2aci/nix2aci/pkgs"
	"github.com/nix2aci/nix2aci/publish"
	"github.com/nix2aci/nix2aci/serve"
)

// shutdownGrace is how long a stopping server lets requests in flight
// finish.
const shutdownGrace = 20 * time.Second

func serveCommand() *cli.Command {
	return &cli.Command{
		Name:  "serve",
		Usage: "answer appc discovery for PREFIX/PACKAGE[/PACKAGE…]: build, sign and publish each image on first request",
		Description: `An image server for rkt fetch PREFIX/curl/jq: the name is --prefix
followed by package names (recipes, else package attributes, dotted ones
included; lower case), and the image holds those packages and CA
certificates, layered, signed with --key. It is built the first time it
is asked for, published into --data (a publish tree: copied to a static
host, rkt fetch works without the server) and served from there after,
across restarts. Its version is a label naming the package set and this
nix2aci build (printed at start); latest is served as that version.

Concurrent requests for one image build it once; --max-builds run at a
time and --queue more wait (then 503 with Retry-After); a build past
--build-timeout is cancelled, Nix included (504). Failures answer with a
plain-text reason: 404 naming unknown packages (at once: the recipe
names and the package set's are read at start, in one evaluation),
502 with Nix's message;
a failed name is answered from memory for --failure-ttl. With --max-disk,
the least recently used apps and OCI images are removed after a build,
whole, never the one just built nor a file being served. One log line per
request and per build on stderr; Prometheus metrics at /metrics. SIGTERM
or SIGINT: builds are cancelled, requests in flight finish, exit 0.

The same names are a read-only registry for podman pull and skopeo (the
OCI distribution pull API at /v2/): HOST:PORT/curl/jq:latest (or the
version) is built on its first pull as a layered OCI image, and signed
with --key when a client asks, through the registry signature extension,
for the reference it pulled: a policy.json with signedBy for the key is
all a client needs.

With --store s3://BUCKET (and --s3-endpoint for a store other than
AWS), --data is a staging tree: images built are uploaded to the bucket,
a completion marker last, and image requests are answered with a
redirect to a URL signed for --redirect-expiry (or under --public-url).
Replicas sharing the bucket build each image once between them, through
a lease in the bucket (--lease). The bucket is checked at start: bad
credentials or a missing bucket exit 2, an unreachable endpoint 1.`,
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "listen", Value: "127.0.0.1:8080", Usage: "listen on `ADDR` (host:port)"},
			&cli.StringFlag{Name: "prefix", Usage: "the `HOST` every name starts with, e.g. images.example.com", Required: true},
			&cli.StringFlag{Name: "base-url", Usage: "where clients reach the images (default https://PREFIX/acis)"},
			&cli.StringFlag{Name: "data", Usage: "the publish tree `DIR` images are built into and served from", Required: true},
			&cli.StringFlag{Name: "pkgs", Usage: "a `DIR` of recipes beside the built-in ones", EnvVars: []string{"NIX2ACI_PKGS"}},
			&cli.StringFlag{Name: "nixpkgs", Usage: "build from the nixpkgs at `PATH` (default: nixpkgs in NIX_PATH, else the offline set)"},
			&cli.StringFlag{Name: "flake", Usage: "build the packages of the flake `REF` (path:/src/flake, github:NixOS/nixpkgs/COMMIT, …), locked at start: its packages.SYSTEM over its legacyPackages.SYSTEM over its nixpkgs input's"},
			&cli.IntFlag{Name: "max-builds", Value: serve.DefaultMaxBuilds, Usage: "builds at a time"},
			&cli.IntFlag{Name: "queue", Value: serve.DefaultQueue, Usage: "builds waiting beyond --max-builds before requests get 503"},
			&cli.DurationFlag{Name: "build-timeout", Value: serve.DefaultBuildTimeout, Usage: "a build's deadline"},
			&cli.StringFlag{Name: "max-disk", Usage: "keep the tree's images and the OCI images' blobs under `SIZE` (e.g. 20G): least recently used apps and OCI images are removed whole after a build, then the layers and blobs no image needs (default: no bound)"},
			&cli.BoolFlag{Name: "no-cache", Usage: "compress every store path afresh for each image (default: a cache of compressed store paths in DATA/.nix2aci-serve/cache, keyed by a key made there)"},
			&cli.DurationFlag{Name: "failure-ttl", Value: serve.DefaultFailureTTL, Usage: "how long a failed name is answered from memory"},
			&cli.StringFlag{Name: "store", Usage: "keep images in the S3-compatible bucket `s3://BUCKET` and answer image requests with a redirect there (default: serve them from --data); credentials from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE or ~/.aws"},
			&cli.StringFlag{Name: "s3-endpoint", Usage: "the S3 `URL` of an S3-compatible store (default: AWS's for the region)"},
			&cli.StringFlag{Name: "s3-region", Usage: "the bucket's `REGION` (default: AWS_REGION or the AWS config's, else us-east-1)"},
			&cli.BoolFlag{Name: "s3-path-style", Usage: "address the bucket as ENDPOINT/BUCKET (default: on with --s3-endpoint, off on AWS)"},
			&cli.DurationFlag{Name: "redirect-expiry", Value: objstore.DefaultExpiry, Usage: "how long a signed URL that a redirect points to stays valid"},
			&cli.StringFlag{Name: "public-url", Usage: "redirect to `URL`/KEY, unsigned, where the bucket (or a CDN in front of it) is public"},
			&cli.DurationFlag{Name: "lease", Value: serve.DefaultLeaseTTL, Usage: "with --store: how long a build's lease in the bucket holds unless renewed; a replica killed mid-build holds a name at most this long"},
			&cli.StringFlag{Name: "replica", Usage: "with --store: this replica's `NAME` in build leases (default: host name and a random suffix)"},
		}, signingKeyFlags()...),
		Action: runServe,
	}
}

func runServe(c *cli.Context) error {
	if c.NArg() > 0 {
		return usagef("serve takes no arguments, only flags")
	}
	prefix := c.String("prefix")
	base := c.String("base-url")
	if base == "" {
		base = "https://" + prefix + "/acis"
	}
	if _, err := publish.ParseBaseURL(base); err != nil {
		return err
	}
	if c.Int("max-builds") < 1 || c.Int("queue") < 0 || c.Duration("build-timeout") <= 0 || c.Duration("failure-ttl") <= 0 {
		return usagef("--max-builds must be at least 1, --queue at least 0, --build-timeout and --failure-ttl positive")
	}
	var maxDisk int64
	if v := c.String("max-disk"); v != "" {
		n, err := parseSize(v)
		if err != nil || n == 0 {
			return usagef("--max-disk %s is not a size like 500M or 20G", v)
		}
		maxDisk = n
	}
	// Relative directories are the working directory's, resolved once
	// here: the builds hand paths under them to Nix processes, which
	// resolve them against other directories.
	data, err := filepath.Abs(c.String("data"))
	if err != nil {
		return err
	}
	recipes := c.String("pkgs")
	if recipes != "" {
		if recipes, err = filepath.Abs(recipes); err != nil {
			return err
		}
	}
	nixpkgs := c.String("nixpkgs")
	if nixpkgs != "" {
		abs, err := filepath.Abs(nixpkgs)
		if err != nil {
			return err
		}
		if fi, err := os.Stat(abs); err != nil || !fi.IsDir() {
			return usagef("--nixpkgs %s is not a directory: give a nixpkgs checkout or store path", nixpkgs)
		}
		nixpkgs = abs
		// The Nix processes the builds run read it from there.
		os.Setenv("NIX_PATH", "nixpkgs="+abs)
	} else {
		for _, e := range strings.Split(os.Getenv("NIX_PATH"), ":") {
			if p, ok := strings.CutPrefix(e, "nixpkgs="); ok {
				nixpkgs = p
			}
		}
	}
	var lock *pkgs.FlakeLock
	flakeURL := ""
	if ref := c.String("flake"); ref != "" {
		var err error
		if lock, err = pkgs.LockFlake(c.Context, ref); err != nil {
			return usagef("--flake %s: %v", ref, err)
		}
		flakeURL = lock.URL
	}
	systems, err := pkgs.BuildSystems(c.Context)
	if err != nil {
		return err
	}
	key, err := loadSigningKey(c)
	if err != nil {
		return err
	}
	source := serve.Source(nixpkgs, lock)
	label, err := serve.VersionLabel(nixpkgs, flakeURL, recipes, buildIdentity())
	if err != nil {
		return err
	}
	store, err := openStore(c)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(c.App.ErrWriter, nil))
	s, err := serve.New(serve.Options{
		Store: store, LeaseTTL: c.Duration("lease"), Replica: c.String("replica"),
		Prefix: prefix, BaseURL: base, Key: key, Data: data, Recipes: recipes,
		Flake: flakeURL, Source: source, Systems: systems,
		Version: label, MaxBuilds: c.Int("max-builds"), Queue: c.Int("queue"),
		BuildTimeout: c.Duration("build-timeout"), FailureTTL: c.Duration("failure-ttl"), MaxDisk: maxDisk, NoCache: c.Bool("no-cache"), Logger: log,
	})
	if err != nil {
		var u *serve.UsageError
		if errors.As(err, &u) {
			return usageError{msg: u.Msg}
		}
		var ce *objstore.CheckError
		if errors.As(err, &ce) && ce.Config {
			return usageError{msg: "--store " + c.String("store") + ": " + ce.Msg}
		}
		if errors.As(err, &ce) {
			return fmt.Errorf("--store %s: %s", c.String("store"), ce.Msg)
		}
		return err
	}
	ln, err := net.Listen("tcp", c.String("listen"))
	if err != nil {
		s.Close()
		return usagef("--listen %s: %v", c.String("listen"), err)
	}
	// A stopping server is given time to finish the requests in flight.
	interruptGrace.Store(int64(shutdownGrace + 5*time.Second))
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	log.Info("serving", "listen", ln.Addr().String(), "prefix", prefix, "base", base, "version", label, "data", data, "packages", source, "systems", strings.Join(systems, ","))
	fmt.Fprintf(c.App.ErrWriter, "nix2aci: serving %s/PACKAGE… version %s on %s; rkt trust --prefix %s, then rkt fetch %s/busybox:%s\n", prefix, label, ln.Addr(), prefix, prefix, label)
	select {
	case err := <-served:
		s.Close()
		return fmt.Errorf("serving: %w", err)
	case <-c.Context.Done():
	}
	log.Info("stopping", "cause", context.Cause(c.Context).Error())
	closed := make(chan struct{})
	go func() { s.Close(); close(closed) }()
	ctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	err = srv.Shutdown(ctx)
	<-closed
	if err != nil {
		return fmt.Errorf("stopping: requests still in flight after %s: %w", shutdownGrace, err)
	}
	log.Info("stopped")
	return errStopped
}

// errStopped is a server stopped by a signal as asked: exit 0.
var errStopped = errors.New("stopped")

// buildIdentity names this nix2aci build by the digest of its executable.
func buildIdentity() string {
	exe, err := os.Executable()
	if err == nil {
		if f, err := os.Open(exe); err == nil {
			defer f.Close()
			h := sha256.New()
			if _, err := io.Copy(h, io.LimitReader(f, 1<<30)); err == nil {
				return fmt.Sprintf("exe %x", h.Sum(nil))
			}
		}
	}
	return "version " + version()
}

// openStore opens --store (nil without it), with the AWS SDK's usual
// credentials: the environment, then the shared files.
func openStore(c *cli.Context) (objstore.Store, error) {
	v := c.String("store")
	if v == "" {
		for _, f := range []string{"s3-endpoint", "s3-region", "s3-path-style", "public-url", "replica"} {
			if c.IsSet(f) {
				return nil, usagef("--%s is for --store s3://BUCKET: give --store too", f)
			}
		}
		return nil, nil
	}
	bucket, ok := strings.CutPrefix(v, "s3://")
	if !ok || bucket == "" || strings.ContainsAny(bucket, "/?#") {
		return nil, usagef("--store %s is not s3://BUCKET", v)
	}
	var opts []func(*config.LoadOptions) error
	if r := c.String("s3-region"); r != "" {
		opts = append(opts, config.WithRegion(r))
	}
	// The environment's credentials were taken out of it at start
	// (secrets.go): they come back as static credentials, which the SDK
	// prefers to its other sources as it preferred the environment's.
	if id, sec := secret("AWS_ACCESS_KEY_ID"), secret("AWS_SECRET_ACCESS_KEY"); id != "" || sec != "" {
		if id == "" || sec == "" {
			return nil, usagef("--store %s: set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or neither (then AWS_PROFILE or ~/.aws)", v)
		}
		opts = append(opts, config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(id, sec, secret("AWS_SESSION_TOKEN"))))
	}
	cfg, err := config.LoadDefaultConfig(c.Context, opts...)
	if err != nil {
		return nil, usagef("--store %s: the AWS configuration: %v", v, err)
	}
	pathStyle := c.String("s3-endpoint") != ""
	if c.IsSet("s3-path-style") {
		pathStyle = c.Bool("s3-path-style")
	}
	st, err := objstore.NewS3(cfg, objstore.S3Options{
		Endpoint: c.String("s3-endpoint"), Bucket: bucket, PathStyle: pathStyle,
		Expiry: c.Duration("redirect-expiry"), PublicURL: c.String("public-url"),
	})
	if err != nil {
		return nil, usagef("--store %s: %v", v, err)
	}
	return st, nil
}
