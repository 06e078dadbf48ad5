package serve

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/singleflight"
	"golang.org/x/sys/unix"

	"github.com/nix2aci/nix2aci/objstore"
	"github.com/nix2aci/nix2aci/pipeline"
	"github.com/nix2aci/nix2aci/pkgs"
	"github.com/nix2aci/nix2aci/publish"
	"github.com/nix2aci/nix2aci/sign"
)

// Defaults of Options.
const (
	DefaultMaxBuilds    = 2
	DefaultQueue        = 16
	DefaultBuildTimeout = 20 * time.Minute
	DefaultFailureTTL   = 30 * time.Second
	// MaxPath bounds a request's path, MaxComponents the components of
	// a name (the prefix included).
	MaxPath       = 512
	MaxComponents = 17
	// maxReason bounds the plain-text body of a failure.
	maxReason = 8 << 10
)

// Options configure a Server.
type Options struct {
	// Prefix is the host every name starts with (an AC Identifier
	// component, e.g. images.example.com).
	Prefix string
	// BaseURL is where Data's image directory is served, by this server:
	// http(s)://HOST[:PORT]/PATH with a non-empty PATH (e.g.
	// https://images.example.com/acis); the discovery template points there.
	BaseURL string
	// Key signs every image, and its public key is published.
	Key *openpgp.Entity
	// Data is the publish tree (created if needed).
	Data string
	// Work is where builds are staged ("": Data/.nix2aci-serve, which
	// publish trees ignore).
	Work string
	// Recipes is a directory of recipes beside the built-in ones. Its
	// recipe names are read at start (New), with the package set's.
	Recipes string
	// Flake, when set, is the package set: a locked flake reference
	// (pkgs.LockFlake). Package names are then attributes of its
	// packages.<system>, over its legacyPackages.<system>, over those of
	// its nixpkgs input. "": nixpkgs in NIX_PATH, else the offline set.
	Flake string
	// Source names the package set in each image's
	// nix2aci.io/package-set annotation, so that a user can tell where an
	// image came from (e.g. the locked flake reference, or nixpkgs' path
	// and revision).
	Source string
	// Systems are the Nix systems the server builds for (the host's
	// first; see pkgs.BuildSystems). nil: the host's only. A name asked
	// for another system is refused with 422 before anything is built.
	Systems []string
	// Version is the version label of every image built (see
	// VersionLabel); required, a literal without "-".
	Version string
	// CacheDir and CacheKey are the pipeline's cache of compressed store
	// paths, so that a store path already in a layer is not compressed
	// again for the next image ("": Work/cache and Work/cache.key, made
	// when missing); NoCache turns it off. CacheMax, when > 0, is the
	// size the cache is trimmed to after each build.
	CacheDir, CacheKey string
	CacheMax           int64
	NoCache            bool
	// MaxBuilds builds run at a time, Queue more wait.
	MaxBuilds, Queue int
	// BuildTimeout is a build's deadline, from when it starts.
	BuildTimeout time.Duration
	// MaxDisk, when > 0, bounds the bytes of the tree's images and the
	// OCI images' blobs: after each build the least recently used apps
	// of the prefix and OCI images are removed, whole, and the layers
	// and blobs no image left needs (see collect).
	MaxDisk int64
	// FailureTTL is how long a failed name is answered with its failure
	// without building again.
	FailureTTL time.Duration
	// Logger gets one line per request and per build (nil: discarded).
	Logger *slog.Logger
	// Build runs a build (nil: pipeline.Build); for tests.
	Build func(context.Context, pipeline.Request) (*pipeline.Result, error)

	// Store, when set, is where images are served from (see store.go):
	// builds are published into Data, then uploaded there, and image
	// requests are answered with a redirect to it. Replicas sharing one
	// store coordinate builds through leases in it, held for LeaseTTL
	// (DefaultLeaseTTL) and renewed, under the name Replica (default:
	// the host name and a random suffix).
	Store    objstore.Store
	LeaseTTL time.Duration
	Replica  string
}

// Server answers discovery and image requests; it is an http.Handler.
type Server struct {
	o        Options
	base     string // canonical base URL
	basePath string // its path, "/acis"
	fp       string
	pubkey   []byte
	host     string // this host's Nix system
	recipes  string // private directory of built-in recipes
	names    *packageNames
	ctx      context.Context
	cancel   context.CancelFunc
	builds   sync.WaitGroup
	group    singleflight.Group
	sem      chan struct{}
	metrics  *metrics
	// metricsHandler answers /metrics. No http.ServeMux: it would
	// clean paths and redirect, and names are checked as they are asked.
	metricsHandler http.Handler
	back           backend  // where the images are served from
	root           *os.Root // the data directory
	dir            *os.File // the data directory (O_PATH), for openat2; nil: none
	dirfd          int      // its descriptor (-1: none), valid while the Server is
	noOpenat2      atomic.Bool

	mu       sync.Mutex
	inflight map[string]bool
	failures map[string]*failure
	etags    map[string]etag
	sigs     map[string][]byte    // OCI signatures by identity and digest (registry.go)
	used     map[string]time.Time // image file -> last asked for
	reading  map[string]int       // image file -> requests reading it

	// gone are the OCI references collected, with the manifest digest
	// each named (under mu; see ocigc.go).
	gone map[string]string

	// publishMu makes publishing and collecting one at a time.
	publishMu sync.Mutex
	// out is the builds' output directory: the layers stay there, so that
	// a build on layers built before reuses them (the pipeline proves
	// each by its tagged index) instead of writing them again.
	out string
	// outLayers are its layer files by their path in the tree, to remove
	// with the tree's copy (under publishMu).
	outLayers map[string]string
	// signer signs each image as the pipeline writes it.
	signer *pipeline.Signer
	// stored are the images known complete in Options.Store, by key.
	stored map[string]storedImage
	// background are the questions to the store in flight (refresh);
	// asking bounds those about layers (layersComplete).
	background sync.WaitGroup
	asking     chan struct{}
	refreshes  chan struct{}
	// closing is set (under mu) once Close begins: no build or question
	// to the store starts after it.
	closing bool
}

// UsageError is a server that cannot be made as configured.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

// New makes a Server. Close it to cancel its builds.
func New(o Options) (*Server, error) {
	if o.Prefix == "" || !componentRE.MatchString(o.Prefix) {
		return nil, &UsageError{fmt.Sprintf("the prefix %q is not a host name in lower case (an AC Identifier component such as images.example.com)", o.Prefix)}
	}
	u, err := publish.ParseBaseURL(o.BaseURL)
	if err != nil {
		return nil, err
	}
	if u.Path == "" {
		return nil, &UsageError{fmt.Sprintf("the base URL %s has no path: give one such as %s/acis, the directory the images are served from", u, u)}
	}
	if o.Key == nil {
		return nil, &UsageError{"the server needs a key to sign images with"}
	}
	if !versionRE.MatchString(o.Version) || o.Version == "latest" {
		return nil, &UsageError{fmt.Sprintf("the version label %q is not lower-case letters, digits and . _ ~ (and not latest)", o.Version)}
	}
	if o.Data == "" {
		return nil, &UsageError{"the server needs a data directory"}
	}
	if o.Work == "" {
		o.Work = filepath.Join(o.Data, ".nix2aci-serve")
	}
	if len(o.Systems) == 0 {
		o.Systems = []string{pkgs.HostSystem()}
	}
	if strings.ContainsAny(o.Flake, "\"$\n") {
		return nil, &UsageError{fmt.Sprintf("the flake reference %q has characters a locked reference does not have: give the one pkgs.LockFlake returns", o.Flake)}
	}
	if o.NoCache {
		o.CacheDir, o.CacheKey = "", ""
	} else {
		if o.CacheDir == "" {
			o.CacheDir = filepath.Join(o.Work, "cache")
		}
		if o.CacheKey == "" {
			o.CacheKey = filepath.Join(o.Work, "cache.key")
		}
	}
	if o.MaxBuilds <= 0 {
		o.MaxBuilds = DefaultMaxBuilds
	}
	if o.Queue < 0 {
		o.Queue = 0
	}
	if o.BuildTimeout <= 0 {
		o.BuildTimeout = DefaultBuildTimeout
	}
	if o.FailureTTL <= 0 {
		o.FailureTTL = DefaultFailureTTL
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Build == nil {
		o.Build = pipeline.Build
	}
	names, err := readNames(o)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.Data, 0o755); err != nil {
		return nil, fmt.Errorf("the data directory: %w", err)
	}
	if err := os.MkdirAll(o.Work, 0o700); err != nil {
		return nil, fmt.Errorf("the work directory: %w", err)
	}
	// Builds staged by an earlier run that was killed, and its output
	// directory (its layers are not known to this run, so they could not
	// be collected).
	if ents, err := os.ReadDir(o.Work); err == nil {
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), "build-") || e.Name() == "out" {
				os.RemoveAll(filepath.Join(o.Work, e.Name()))
			}
		}
	}
	recipes := filepath.Join(o.Work, "recipes")
	if err := writeRecipes(recipes); err != nil {
		return nil, err
	}
	var key bytes.Buffer
	if err := sign.WritePublicKey(&key, o.Key); err != nil {
		return nil, err
	}
	s := &Server{
		o: o, base: u.String(), basePath: u.Path, fp: strings.ToLower(sign.Fingerprint(o.Key)),
		pubkey: key.Bytes(), host: pkgs.HostSystem(), recipes: recipes, names: names,
		sem: make(chan struct{}, o.MaxBuilds), metrics: newMetrics(),
		inflight: map[string]bool{}, failures: map[string]*failure{}, etags: map[string]etag{}, sigs: map[string][]byte{},
		used: map[string]time.Time{}, reading: map[string]int{},
		out: filepath.Join(o.Work, "out"), outLayers: map[string]string{}, signer: pipeline.KeySigner(o.Key),
	}
	if s.root, err = os.OpenRoot(o.Data); err != nil {
		return nil, fmt.Errorf("the data directory: %w", err)
	}
	s.dirfd = -1
	if fd, err := unix.Open(o.Data, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err == nil {
		// Never closed while the Server is: an *os.File closes it when
		// the Server is garbage, so that no request can open a file
		// relative to a descriptor number reused by something else.
		s.dir, s.dirfd = os.NewFile(uintptr(fd), o.Data), fd
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.metricsHandler = promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{})
	s.back = disk{s}
	if o.Store != nil {
		if err := s.startStore(); err != nil {
			s.root.Close()
			return nil, err
		}
		s.back = store{s}
	}
	return s, nil
}

// Close cancels the builds running and waits for them to clean up.
func (s *Server) Close() {
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	s.cancel()
	s.builds.Wait()
	s.background.Wait()
}
