package serve

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nix2aci/nix2aci/pipeline"
	"github.com/nix2aci/nix2aci/pkgs"
	"github.com/nix2aci/nix2aci/publish"
)

// failure is a failed build's answer.
type failure struct {
	status int
	msg    string
	until  time.Time
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

// build builds q's image and publishes it into the data directory.
func (s *Server) build(q *request) *failure {
	if q.oci {
		if _, ok := s.manifestOf(q); ok {
			return nil // built while this request waited
		}
		if ok, err := s.back.fetchOCI(s.ctx, q); err != nil {
			return &failure{status: http.StatusBadGateway, msg: fmt.Sprintf("asking the image store %s: %v", s.o.Store, err)}
		} else if ok {
			return nil // built by another replica
		}
	} else if ok, _ := s.back.have(s.ctx, q.rel); ok {
		return nil // built while this request waited
	}
	ctx, release, f := s.back.claim(q)
	if release == nil {
		return f // nil: another replica built it
	}
	defer release()
	return s.buildWith(ctx, q)
}

// buildWith builds q's image within parent (the server's life, or a
// lease's), at most MaxBuilds at a time.
func (s *Server) buildWith(parent context.Context, q *request) *failure {
	select {
	case s.sem <- struct{}{}:
	case <-s.ctx.Done():
		return &failure{status: http.StatusServiceUnavailable, msg: "the server is shutting down"}
	}
	defer func() { <-s.sem }()
	start := time.Now()
	s.metrics.started.Inc()
	ctx, cancel := context.WithTimeout(parent, s.o.BuildTimeout)
	defer cancel()
	var f *failure
	if q.oci {
		f = s.buildOCI(ctx, q)
	} else {
		f = s.buildIn(ctx, q)
	}
	d := time.Since(start)
	s.metrics.duration.Observe(d.Seconds())
	if f != nil {
		s.metrics.failed.WithLabelValues(strconv.Itoa(f.status)).Inc()
		s.o.Logger.Warn("build", "name", q.name, "version", q.version, "status", f.status, "duration", d, "error", bounded(f.msg, 500))
		return f
	}
	s.o.Logger.Info("build", "name", q.name, "version", q.version, "status", http.StatusOK, "duration", d)
	return nil
}

// stageRecipe writes q's generated recipe into a new build directory in
// the work directory and returns both; the caller removes the directory.
func (s *Server) stageRecipe(q *request) (dir, recipe string, f *failure) {
	dir, err := os.MkdirTemp(s.o.Work, "build-")
	if err != nil {
		return "", "", &failure{status: http.StatusInternalServerError, msg: fmt.Sprintf("staging the build: %v", err)}
	}
	recipe = filepath.Join(dir, "image.nix")
	if err := os.WriteFile(recipe, []byte(s.recipeFor(q)), 0o600); err != nil {
		os.RemoveAll(dir)
		return "", "", &failure{status: http.StatusInternalServerError, msg: fmt.Sprintf("staging the build: %v", err)}
	}
	return dir, recipe, nil
}

func (s *Server) buildIn(ctx context.Context, q *request) *failure {
	dir, recipe, f := s.stageRecipe(q)
	if f != nil {
		return f
	}
	defer os.RemoveAll(dir)
	res, err := s.o.Build(ctx, pipeline.Request{
		Kind: pipeline.Layered, Target: recipe, Name: q.name, OutDir: s.out,
		Signer: s.signer, NoGCRoots: true,
		Recipes: s.o.Recipes, Flakes: s.o.Flake != "", CacheDir: s.o.CacheDir, CacheKey: s.o.CacheKey, CacheMax: s.o.CacheMax,
	})
	if err == nil {
		// Only the new images are published: a layer the tree holds
		// already (with its signature) is left there, and publish proves
		// it is the very layer the app pins (its image ID, read from the
		// file) signed by the key. If that fails, everything is published,
		// which says what is wrong.
		var all, fresh []string
		for _, l := range res.Layers {
			all = append(all, l.ACI)
			rel := imageRel(l.Name, l.Version, res.OS, res.Arch)
			if _, ok := s.stat(rel); ok {
				if _, ok := s.stat(rel + ".asc"); ok {
					continue
				}
			}
			fresh = append(fresh, l.ACI)
		}
		all, fresh = append(all, res.ACI), append(fresh, res.ACI)
		// The build signed every image it wrote (a layer it reused was
		// signed when written): publish checks the signatures.
		o := publish.Options{Site: s.o.Data, BaseURL: s.base, PublicKey: s.o.Key}
		s.publishMu.Lock()
		var rep *publish.Report
		pstart := time.Now()
		rep, err = publish.Publish(ctx, fresh, o)
		if err != nil && len(fresh) < len(all) && ctx.Err() == nil {
			fresh = all
			rep, err = publish.Publish(ctx, all, o)
		}
		if err == nil {
			s.o.Logger.Info("publish", "name", q.name, "images", len(fresh), "of", len(all), "duration", time.Since(pstart))
		}
		if err == nil {
			err = s.back.complete(ctx, res, rep)
		}
		// The app's own files leave the build directory (the tree has
		// them now, or the build failed); its layers stay, for the next
		// image on them to reuse, until the tree's copy is collected.
		for _, f := range append([]string{res.ACI, res.Deps, res.RktArgs, res.Signature}, res.GCRoots...) {
			if f != "" {
				os.Remove(f)
			}
		}
		for _, l := range res.Layers {
			s.outLayers[imageRel(l.Name, l.Version, res.OS, res.Arch)] = l.ACI
		}
		if err == nil {
			s.touch(q.rel)
			s.collect(strings.TrimSuffix(q.rel, ".asc"))
		}
		s.publishMu.Unlock()
	}
	return s.buildFailure(ctx, q, err)
}

// buildFailure is the answer to a build of q that ended with err within
// ctx (nil: none).
func (s *Server) buildFailure(ctx context.Context, q *request, err error) *failure {
	if err == nil {
		return nil
	}
	switch {
	case s.ctx.Err() != nil:
		return &failure{status: http.StatusServiceUnavailable, msg: "the server is shutting down; the build of " + q.name + " was cancelled"}
	case errors.Is(ctx.Err(), context.Canceled):
		return &failure{status: http.StatusServiceUnavailable, msg: "the build of " + q.name + " was cancelled: its lease in the image store was lost to another replica"}
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return &failure{status: http.StatusGatewayTimeout, msg: fmt.Sprintf("building %s took longer than the build deadline of %s: it was cancelled, Nix included, and nothing was kept", q.name, s.o.BuildTimeout)}
	}
	msg := err.Error()
	if i := strings.Index(msg, unknownMarker); i >= 0 {
		names := strings.SplitN(msg[i+len(unknownMarker):], "\n", 2)[0]
		return &failure{status: http.StatusNotFound, msg: fmt.Sprintf("%s: no recipe and no package attribute is named %s", q.name, strings.TrimSpace(names))}
	}
	var nf *pkgs.NotFoundError
	if errors.As(err, &nf) && strings.Contains(msg, "is not in nix2aci's offline package set") {
		return &failure{status: http.StatusNotFound, msg: fmt.Sprintf("%s: %s", q.name, msg)}
	}
	if i := strings.Index(msg, systemMarker); i >= 0 {
		return &failure{status: http.StatusUnprocessableEntity, msg: fmt.Sprintf("%s cannot be built for %s: %s", q.name, q.system, strings.SplitN(msg[i+len(systemMarker):], "\n", 2)[0])}
	}
	var ue *pipeline.UsageError
	if errors.As(err, &ue) {
		return &failure{status: http.StatusUnprocessableEntity, msg: fmt.Sprintf("%s cannot be built: %s", q.name, msg)}
	}
	return &failure{status: http.StatusBadGateway, msg: fmt.Sprintf("building %s failed: %s", q.name, msg)}
}

// uploadList is what a build puts into the store: its layers, in
// rendering order, then the app, each as published now (rep) or as the
// tree held it already (its path and the image ID the app pins, which
// publish proved). The app depends on all its layers, flat (its marker
// names each), whatever the layers pin among themselves; a layer's
// marker names none.
func (s *Server) uploadList(res *pipeline.Result, rep *publish.Report) *publish.Report {
	byPath := map[string]publish.Published{}
	for _, p := range rep.Images {
		byPath[filepath.ToSlash(p.Path)] = p
	}
	dir := strings.TrimPrefix(s.basePath, "/")
	up := &publish.Report{}
	add := func(name, version, id string, depends []string) {
		p := path.Join(dir, imageRel(name, version, res.OS, res.Arch))
		q, ok := byPath[p]
		if ok {
			delete(byPath, p)
		} else {
			q = publish.Published{Name: name, Version: version, OS: res.OS, Arch: res.Arch, ImageID: id, Path: p}
		}
		q.Depends = depends
		up.Images = append(up.Images, q)
	}
	var layers []string
	for _, l := range res.Layers {
		add(l.Name, l.Version, l.ImageID, nil)
		layers = append(layers, l.ImageID)
	}
	add(res.Name, res.Version, res.ImageID, layers)
	for _, p := range sortedPublished(byPath) {
		p.Depends = nil
		up.Images = append(up.Images, p)
	}
	return up
}

func sortedPublished(m map[string]publish.Published) []publish.Published {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]publish.Published, 0, len(keys))
	for _, k := range keys {
		out = append(out, m[k])
	}
	return out
}
