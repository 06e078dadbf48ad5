package serve

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/prometheus/client_golang/prometheus"
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

type etag struct {
	size  int64
	mtime time.Time
	tag   string
}

// failure is a failed build's answer.
type failure struct {
	status int
	msg    string
	until  time.Time
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

// Registry is the server's Prometheus registry (what /metrics shows).
func (s *Server) Registry() *prometheus.Registry { return s.metrics.reg }

// parseFile parses rel, the path under the base path.
func (s *Server) parseFile(rel string) (*request, error) {
	comps := strings.Split(rel, "/")
	if err := checkComponents(comps); err != nil {
		return nil, err
	}
	q := &request{rel: rel}
	file := comps[len(comps)-1]
	if f, ok := strings.CutSuffix(file, ".asc"); ok {
		file, q.asc = f, true
	}
	f, ok := strings.CutSuffix(file, ".aci")
	if !ok || len(comps) < 2 {
		return nil, fmt.Errorf("%s is not an image: give PREFIX/NAME-VERSION-OS-ARCH.aci (or .aci.asc)", bounded(rel, 200))
	}
	parts := strings.Split(f, "-")
	if len(parts) < 4 {
		return nil, fmt.Errorf("%s is not NAME-VERSION-OS-ARCH.aci", bounded(file, 200))
	}
	n := len(parts)
	q.version, q.os, q.arch = parts[n-3], parts[n-2], parts[n-1]
	last := strings.Join(parts[:n-3], "-")
	q.packages = append(append([]string{}, comps[1:len(comps)-1]...), last)
	q.name = strings.Join(append(comps[:len(comps)-1:len(comps)-1], last), "/")
	return q, nil
}

// file serves an image or signature, building it first if it is a name
// under the prefix not built yet.
func (s *Server) file(w http.ResponseWriter, r *http.Request, rel string) {
	if rel == "pubkeys/"+s.fp+".asc" {
		w.Header().Set("Content-Type", "application/pgp-keys")
		w.Header().Set("Cache-Control", "public, max-age=3600")
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(s.pubkey))
		return
	}
	q, err := s.parseFile(rel)
	if err != nil {
		fail(w, http.StatusBadRequest, "%v", err)
		return
	}
	if rec, ok := w.(*recorder); ok {
		rec.name = q.name
	}
	latest := q.version == "latest"
	if latest {
		q.version = s.o.Version
		q.rel = imageRel(q.name, q.version, q.os, q.arch)
		if q.asc {
			q.rel += ".asc"
		}
	}
	if s.back.send(w, r, q.rel, latest) {
		s.metrics.hits.WithLabelValues(s.back.kind()).Inc()
		return
	}
	if !strings.HasPrefix(q.name, s.o.Prefix+"/") {
		fail(w, http.StatusNotFound, "%s is not under the prefix %s, the only one this server builds", q.name, s.o.Prefix)
		return
	}
	if f := s.meta(q); f != nil {
		fail(w, f.status, "%s", f.msg)
		return
	}
	if q.version != s.o.Version {
		fail(w, http.StatusNotFound, "%s:%s is not here: this server builds version %s (or ask for latest)", q.name, q.version, s.o.Version)
		return
	}
	// Refused without a build slot or an evaluation.
	if f := s.unknown(q); f != nil {
		fail(w, f.status, "%s", f.msg)
		return
	}
	if f := s.ensure(r.Context(), q); f != nil {
		if f.status == http.StatusServiceUnavailable {
			w.Header().Set("Retry-After", "10")
		}
		fail(w, f.status, "%s", f.msg)
		return
	}
	if !s.back.send(w, r, q.rel, latest) {
		fail(w, http.StatusInternalServerError, "%s was built but its file %s is not in the data directory", q.name, q.rel)
	}
}

// stat returns the FileInfo of a regular file of the tree (see open).
func (s *Server) stat(rel string) (os.FileInfo, bool) {
	f, fi, ok := s.open(rel)
	if ok {
		f.Close()
	}
	return fi, ok
}

// open opens a regular file of the tree, refusing links out of it and
// anything that is not a regular file. It is one openat2 call, the
// kernel resolving the path beneath the data directory (symbolic links
// inside it are followed, none leads out), where the kernel has openat2
// (Linux 5.6); else os.Root, which walks the path a component at a time.
func (s *Server) open(rel string) (*os.File, os.FileInfo, bool) {
	return s.openData(path.Join(strings.TrimPrefix(s.basePath, "/"), rel))
}

// openData opens name, a path in the data directory, as open does.
func (s *Server) openData(name string) (*os.File, os.FileInfo, bool) {
	var f *os.File
	if s.dirfd >= 0 && !s.noOpenat2.Load() {
		defer runtime.KeepAlive(s.dir)
		fd, err := unix.Openat2(s.dirfd, name, &unix.OpenHow{
			Flags:   unix.O_RDONLY | unix.O_NONBLOCK | unix.O_CLOEXEC | unix.O_NOCTTY,
			Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS,
		})
		switch {
		case err == nil:
			f = os.NewFile(uintptr(fd), name)
		case errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM):
			s.noOpenat2.Store(true) // no openat2 (or a seccomp filter refuses it)
		default:
			return nil, nil, false
		}
	}
	if f == nil {
		var err error
		if f, err = s.root.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0); err != nil {
			return nil, nil, false
		}
	}
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, nil, false
	}
	return f, fi, true
}

// sendFile serves rel from the tree if it is there, with an ETag of its
// bytes, so that a client asking again (If-None-Match) gets 304.
func (s *Server) sendFile(w http.ResponseWriter, r *http.Request, rel string, latest bool) bool {
	f, fi, ok := s.open(rel)
	if !ok {
		return false
	}
	defer f.Close()
	s.touch(rel)
	s.acquire(rel)
	defer s.release(rel)
	tag, err := s.etag(rel, f, fi)
	if err != nil {
		fail(w, http.StatusInternalServerError, "reading %s: %v", rel, err)
		return true
	}
	h := w.Header()
	h.Set("ETag", tag)
	if latest {
		h.Set("Cache-Control", "no-cache")
	} else {
		h.Set("Cache-Control", "public, max-age=86400")
	}
	if strings.HasSuffix(rel, ".asc") {
		h.Set("Content-Type", "application/pgp-signature")
	} else {
		h.Set("Content-Type", "application/octet-stream")
	}
	http.ServeContent(w, r, "", fi.ModTime(), f)
	return true
}

// etag is the SHA-256 of a file's bytes, remembered while its size and
// modification time stay.
func (s *Server) etag(rel string, f *os.File, fi os.FileInfo) (string, error) {
	s.mu.Lock()
	e, ok := s.etags[rel]
	s.mu.Unlock()
	if ok && e.size == fi.Size() && e.mtime.Equal(fi.ModTime()) {
		return e.tag, nil
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, fi.Size())); err != nil {
		return "", err
	}
	tag := `"sha256-` + hex.EncodeToString(h.Sum(nil)) + `"`
	s.mu.Lock()
	s.etags[rel] = etag{fi.Size(), fi.ModTime(), tag}
	s.mu.Unlock()
	return tag, nil
}

// ensure builds and publishes q's image unless it is there, once however
// many ask at a time; it returns the failure to answer, if any.
func (s *Server) ensure(ctx context.Context, q *request) *failure {
	key := q.name + ":" + q.version + ":" + q.system
	if q.oci {
		key += ":oci"
	}
	s.mu.Lock()
	if f, ok := s.failures[key]; ok {
		if time.Now().Before(f.until) {
			s.mu.Unlock()
			s.metrics.hits.WithLabelValues("failure").Inc()
			return f
		}
		delete(s.failures, key)
	}
	if s.inflight[key] {
		s.metrics.hits.WithLabelValues("joined").Inc()
	} else {
		if len(s.inflight) >= s.o.MaxBuilds+s.o.Queue {
			s.mu.Unlock()
			return &failure{status: http.StatusServiceUnavailable, msg: fmt.Sprintf("%d builds are running or waiting, as many as this server takes: try again shortly", len(s.inflight))}
		}
		s.inflight[key] = true
	}
	s.mu.Unlock()
	ch := s.group.DoChan(key, func() (any, error) {
		s.mu.Lock()
		if s.closing {
			delete(s.inflight, key)
			s.group.Forget(key)
			s.mu.Unlock()
			return &failure{status: http.StatusServiceUnavailable, msg: "the server is shutting down"}, nil
		}
		s.builds.Add(1)
		s.mu.Unlock()
		defer s.builds.Done()
		f := s.build(q)
		s.mu.Lock()
		// Forgotten with its in-flight mark, at once: a request that finds
		// no mark starts a call of its own, never joins this ending one
		// (its mark would stay, counted against the queue).
		delete(s.inflight, key)
		s.group.Forget(key)
		if f != nil && f.status != http.StatusServiceUnavailable {
			f.until = time.Now().Add(s.o.FailureTTL)
			s.failures[key] = f
		}
		s.mu.Unlock()
		return f, nil
	})
	select {
	case res := <-ch:
		f, _ := res.Val.(*failure)
		return f
	case <-ctx.Done():
		return &failure{status: http.StatusServiceUnavailable, msg: "the request ended before the build"}
	}
}
