package serve

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nix2aci/nix2aci/manifest"
	"github.com/nix2aci/nix2aci/ocisign"
)

// The OCI distribution pull API (what podman pull, skopeo copy and docker
// pull ask), Nixery's protocol, over the same names as discovery: the
// repository HOST/curl/jq is the image of serve's name PREFIX/curl/jq,
// built on its first request as a layered OCI image, once, and served
// from the data directory after that:
//
//	GET /v2/                                    {} (and the headers below)
//	GET|HEAD /v2/<repo>/manifests/<tag|digest>  the image's manifest
//	GET|HEAD /v2/<repo>/blobs/<digest>          a layer or config blob
//	GET /v2/<repo>/tags/list                    the tags
//	GET /extensions/v2/<repo>/signatures/<digest>  its signatures
//
// Tags are "latest" and the server's version label, both the current
// version's image for the host's system (the first of Options.Systems;
// a meta name arm64 or amd64 asks for another). A manifest by digest is
// any image of the repository built, of this version or an earlier one.
// A tag asked for is built if it is not there; a digest and a blob never
// start a build.
//
// In the data directory, beside the publish tree's acis/, oci/ holds:
//
//	oci/blobs/sha256/<hex>                      every blob, manifests included
//	oci/blobs/sha256/.nix2aci-oci-layers.json   which blobs hold which layers
//	oci/refs/<name>/_<version>-<os>-<arch>      the image's manifest digest
//
// A build links the layers the blob store holds into its image instead
// of writing them again, as that index, tagged under the cache key,
// proves them (pipeline.Request.ReuseBlobs; with NoCache there is no key,
// and every layer is written): a new app on shared layers writes only
// its own. With Options.Store too, the data directory's blobs
// are reused; a replica that copied an image from the bucket has its
// manifest only, and writes its layers when it builds on them.
//
// A reference file is written after its blobs, so that it names only
// complete images, and never again: a manifest is the same bytes every
// time it is served, which its signatures sign. Options.MaxDisk removes
// the least recently used images, reference first (see ocigc.go); one
// is built again on its next pull by tag, the same bytes. With Options.Store the
// blobs are uploaded to the bucket under the same keys, then the
// reference (the image's completion marker there), and blob requests are
// redirected to the bucket; manifests are answered from the data
// directory, where a replica that finds an image complete in the bucket
// copies its manifest and reference instead of building it. Replicas
// build an image once between them, through a lease in the bucket on its
// reference's key, as for ACIs.
//
// Signatures are made when asked for, through the registry extension
// podman and skopeo read (containers/image's X-Registry-Supports-Signatures),
// for the identity the client asked for: the Host it connected to (with
// its port) and the repository, tagged with each tag that names the
// manifest; a pull by digest accepts any of them. They are remembered in
// memory, a bounded number.

const (
	ociRoot = "oci"
	// maxManifest bounds a manifest read from the data directory.
	maxManifest = 4 << 20
	// maxSignatures bounds the signatures remembered.
	maxSignatures = 4096
)

// regFail answers an error as the distribution spec's JSON: every error,
// 404 included, has a body saying what was wrong.
func regFail(w http.ResponseWriter, status int, code, format string, args ...any) {
	msg := bounded(fmt.Sprintf(format, args...), maxReason)
	body, _ := json.Marshal(map[string]any{"errors": []map[string]string{{"code": code, "message": msg}}})
	body = append(body, '\n')
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	w.Write(body)
}

// failureCode is the error code of a failure of a build or of a name.
func failureCode(f *failure) string {
	switch f.status {
	case http.StatusNotFound:
		return "NAME_UNKNOWN"
	case http.StatusBadRequest:
		return "NAME_INVALID"
	case http.StatusServiceUnavailable:
		return "TOOMANYREQUESTS"
	case http.StatusUnprocessableEntity:
		return "UNSUPPORTED"
	}
	return "UNKNOWN"
}

// isRegistryPath says whether p is a path of the registry API.
func isRegistryPath(p string) bool {
	return p == "/v2" || strings.HasPrefix(p, "/v2/") || strings.HasPrefix(p, "/extensions/v2/")
}

// registry answers a request of the registry API.
func (s *Server) registry(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Docker-Distribution-API-Version", "registry/2.0")
	p := r.URL.Path
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		h.Set("Allow", "GET, HEAD")
		regFail(w, http.StatusMethodNotAllowed, "UNSUPPORTED", "this registry is read-only: only GET and HEAD are served (images are built when pulled)")
		return
	}
	if p == "/v2" || p == "/v2/" {
		h.Set("X-Registry-Supports-Signatures", "1")
		h.Set("Content-Type", "application/json")
		h.Set("Content-Length", "3")
		if r.Method == http.MethodGet {
			io.WriteString(w, "{}\n")
		}
		return
	}
	sigs := strings.HasPrefix(p, "/extensions/v2/")
	rest := strings.TrimPrefix(strings.TrimPrefix(p, "/extensions"), "/v2/")
	comps := strings.Split(rest, "/")
	n := len(comps)
	if n < 3 || (sigs && comps[n-2] != "signatures") {
		regFail(w, http.StatusNotFound, "UNSUPPORTED", "nothing is served at %s: ask for /v2/REPOSITORY/manifests/TAG or /v2/REPOSITORY/blobs/DIGEST", bounded(p, 200))
		return
	}
	repo, kind, ref := strings.Join(comps[:n-2], "/"), comps[n-2], comps[n-1]
	if err := checkComponents(comps[:n-2]); err != nil {
		regFail(w, http.StatusBadRequest, "NAME_INVALID", "%v", err)
		return
	}
	q, f := s.ociRequest(comps[:n-2])
	if f != nil {
		regFail(w, f.status, failureCode(f), "%s", f.msg)
		return
	}
	if rec, ok := w.(*recorder); ok {
		rec.name = q.name
	}
	switch kind {
	case "manifests":
		s.manifest(w, r, q, repo, ref)
		return
	case "blobs":
		s.blob(w, r, q, ref)
		return
	case "tags":
		if ref != "list" {
			break
		}
		body, _ := json.Marshal(map[string]any{"name": repo, "tags": []string{"latest", s.o.Version}})
		h.Set("Content-Type", "application/json")
		h.Set("Content-Length", strconv.Itoa(len(body)))
		if r.Method == http.MethodGet {
			w.Write(body)
		}
		return
	case "signatures":
		if sigs {
			s.signatures(w, r, q, repo, ref)
			return
		}
	}
	regFail(w, http.StatusNotFound, "UNSUPPORTED", "nothing is served at %s: ask for /v2/REPOSITORY/manifests/TAG or /v2/REPOSITORY/blobs/DIGEST", bounded(p, 200))
}

// ociRequest is the image of a repository's components, for the
// current version and the system its meta names or the host's; a name
// that cannot be built is answered as a failure (404 naming unknown
// packages, without a build slot or an evaluation).
func (s *Server) ociRequest(comps []string) (*request, *failure) {
	q := &request{oci: true, name: s.o.Prefix + "/" + strings.Join(comps, "/"), packages: comps, version: s.o.Version}
	system := s.o.Systems[0]
	for _, c := range comps {
		if sys, ok := metaSystems[c]; ok {
			system = sys
			break
		}
	}
	var err error
	if q.os, q.arch, err = manifest.OSArch(system); err != nil {
		return nil, &failure{status: http.StatusUnprocessableEntity, msg: fmt.Sprintf("%s: %v", q.name, err)}
	}
	if f := s.meta(q); f != nil {
		return nil, f
	}
	if f := s.unknown(q); f != nil {
		return nil, f
	}
	q.rel = refRel(q, q.version)
	return q, nil
}

// refDir is the directory of q's name's reference files.
func refDir(q *request) string { return path.Join(ociRoot, "refs", q.name) }

// refRel is the reference file of q's name and system at version v.
func refRel(q *request, v string) string {
	return path.Join(refDir(q), "_"+v+"-"+q.os+"-"+q.arch)
}

// manifestOf is the digest of q's image's manifest, if it was built.
func (s *Server) manifestOf(q *request) (digest.Digest, bool) {
	return s.readRef(q.rel)
}

// readRef reads a reference file: the digest of a manifest the blob
// store holds.
func (s *Server) readRef(rel string) (digest.Digest, bool) {
	f, _, ok := s.openData(rel)
	if !ok {
		return "", false
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 200))
	if err != nil {
		return "", false
	}
	d, err := digest.Parse(strings.TrimSpace(string(b)))
	if err != nil || d.Algorithm() != digest.SHA256 {
		return "", false
	}
	return d, true
}

// refsOf are the versions of q's name built for q's system, by manifest
// digest.
func (s *Server) refsOf(q *request) map[digest.Digest][]string {
	out := map[digest.Digest][]string{}
	ents, err := os.ReadDir(filepath.Join(s.o.Data, filepath.FromSlash(refDir(q))))
	if err != nil {
		return out
	}
	suffix := "-" + q.os + "-" + q.arch
	for i, e := range ents {
		if i >= 256 {
			break
		}
		v, ok := strings.CutPrefix(e.Name(), "_")
		if v, ok = strings.CutSuffix(v, suffix); !ok || !versionRE.MatchString(v) {
			continue
		}
		if d, ok := s.readRef(path.Join(refDir(q), e.Name())); ok {
			out[d] = append(out[d], v)
		}
	}
	return out
}

// parseDigest parses a digest of a request; a malformed one is answered
// DIGEST_INVALID.
func parseDigest(w http.ResponseWriter, ref string) (digest.Digest, bool) {
	d, err := digest.Parse(ref)
	if err != nil {
		regFail(w, http.StatusBadRequest, "DIGEST_INVALID", "%s is not a digest (sha256:<64 hex digits>): %v", bounded(ref, 200), err)
		return "", false
	}
	return d, true
}

// manifest answers a manifest by tag, building the image if it is not
// there, or by digest.
func (s *Server) manifest(w http.ResponseWriter, r *http.Request, q *request, repo, ref string) {
	var d digest.Digest
	byTag := !strings.Contains(ref, ":")
	if byTag {
		if ref != "latest" && ref != s.o.Version {
			regFail(w, http.StatusNotFound, "MANIFEST_UNKNOWN", "%s has no tag %s: its tags are latest and %s (this server's version)", repo, bounded(ref, 200), s.o.Version)
			return
		}
		// Held as read: the collector leaves the reference, and so its
		// manifest and blobs, while it is answered.
		s.acquire(q.rel)
		defer s.release(q.rel)
		var ok bool
		if d, ok = s.manifestOf(q); !ok {
			if f := s.ensure(r.Context(), q); f != nil {
				if f.status == http.StatusServiceUnavailable {
					w.Header().Set("Retry-After", "10")
				}
				regFail(w, f.status, failureCode(f), "%s", f.msg)
				return
			}
			if d, ok = s.manifestOf(q); !ok {
				regFail(w, http.StatusInternalServerError, "UNKNOWN", "%s was built but its manifest is not in the data directory", q.name)
				return
			}
		} else {
			s.metrics.hits.WithLabelValues("disk").Inc()
		}
	} else {
		var ok bool
		if d, ok = parseDigest(w, ref); !ok {
			return
		}
		// Held as read: the collector leaves the references naming it.
		s.acquire(blobRel(d))
		defer s.release(blobRel(d))
		vs, ok := s.refsOf(q)[d]
		if !ok {
			regFail(w, http.StatusNotFound, "MANIFEST_UNKNOWN", "%s has no manifest %s: pull it by tag (latest or %s) first", repo, d, s.o.Version)
			return
		}
		for _, v := range vs {
			s.touch(refRel(q, v))
		}
	}
	body, mt, err := s.readManifest(d)
	if err != nil {
		regFail(w, http.StatusInternalServerError, "UNKNOWN", "%s: %v", q.name, err)
		return
	}
	if byTag {
		s.touch(q.rel)
	}
	h := w.Header()
	h.Set("Content-Type", mt)
	h.Set("Docker-Content-Digest", d.String())
	h.Set("ETag", `"`+d.String()+`"`)
	if byTag {
		h.Set("Cache-Control", "no-cache")
	} else {
		h.Set("Cache-Control", "public, max-age=31536000, immutable")
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	if r.Method == http.MethodGet {
		w.Write(body)
	}
}

// readManifest reads the manifest d from the blob store, checks its
// bytes against d, and says its media type.
func (s *Server) readManifest(d digest.Digest) ([]byte, string, error) {
	f, fi, ok := s.openData(blobRel(d))
	if !ok {
		return nil, "", fmt.Errorf("the manifest %s is not in the data directory", d)
	}
	defer f.Close()
	if fi.Size() > maxManifest {
		return nil, "", fmt.Errorf("the manifest %s is %d bytes, over %d", d, fi.Size(), maxManifest)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxManifest))
	if err != nil {
		return nil, "", err
	}
	if digest.FromBytes(b) != d {
		return nil, "", fmt.Errorf("the manifest %s in the data directory does not have that digest: remove %s and its reference files to build it again", d, blobRel(d))
	}
	var m struct {
		MediaType string `json:"mediaType"`
	}
	if err := json.Unmarshal(b, &m); err != nil || m.MediaType == "" {
		m.MediaType = ocispec.MediaTypeImageManifest
	}
	return b, m.MediaType, nil
}

// blobRel is a blob's file in the data directory.
func blobRel(d digest.Digest) string {
	return path.Join(ociRoot, "blobs", d.Algorithm().String(), d.Encoded())
}

// blob answers a blob. A blob is never built: a client asks for the
// manifest first, which builds the image.
func (s *Server) blob(w http.ResponseWriter, r *http.Request, q *request, ref string) {
	d, ok := parseDigest(w, ref)
	if !ok {
		return
	}
	if d.Algorithm() != digest.SHA256 || !s.back.sendBlob(w, r, d) {
		regFail(w, http.StatusNotFound, "BLOB_UNKNOWN", "there is no blob %s: pull %s by tag first, which builds the image", d, q.name)
		return
	}
	// A pull under way keeps its image among the recently used.
	s.touchRef(q.rel)
	s.metrics.hits.WithLabelValues(s.back.kind()).Inc()
}

// signatures answers the registry extension's signatures of a manifest:
// one for each tag of the repository naming it, for the host the client
// asked.
func (s *Server) signatures(w http.ResponseWriter, r *http.Request, q *request, repo, ref string) {
	d, ok := parseDigest(w, ref)
	if !ok {
		return
	}
	var sigs [][]byte
	for _, v := range s.refsOf(q)[d] {
		tags := []string{v}
		if v == s.o.Version {
			tags = append(tags, "latest")
		}
		for _, tag := range tags {
			id := r.Host + "/" + repo + ":" + tag
			// A host the reference grammar does not read as a host (no
			// dot, no port, not localhost) would be signed as docker.io's.
			if ref, err := ocisign.ParseReference(id); err != nil || ref.Domain != r.Host {
				continue
			}
			sig, err := s.signFor(id, d)
			if err != nil {
				regFail(w, http.StatusInternalServerError, "UNKNOWN", "signing %s: %v", id, err)
				return
			}
			sigs = append(sigs, sig)
		}
	}
	body, err := ocisign.ExtensionSignatures(d.String(), sigs)
	if err != nil {
		regFail(w, http.StatusBadRequest, "DIGEST_INVALID", "%v", err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	if r.Method == http.MethodGet {
		w.Write(body)
	}
}

// signFor is the signature of the manifest d for the identity id, made
// once and remembered.
func (s *Server) signFor(id string, d digest.Digest) ([]byte, error) {
	key := id + "@" + d.String()
	s.mu.Lock()
	sig, ok := s.sigs[key]
	s.mu.Unlock()
	if ok {
		return sig, nil
	}
	payload, err := ocisign.Payload(id, d.String(), "nix2aci serve", time.Now())
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if err := ocisign.Sign(&b, s.o.Key, payload); err != nil {
		return nil, err
	}
	s.mu.Lock()
	if len(s.sigs) >= maxSignatures {
		clear(s.sigs)
	}
	s.sigs[key] = b.Bytes()
	s.mu.Unlock()
	return b.Bytes(), nil
}
