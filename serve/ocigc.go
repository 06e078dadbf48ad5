package serve

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
)

// The OCI side of the collector (see collect). An OCI image is its
// reference file, the unit of use and of removal; its bytes are the
// blobs its manifest names (the manifest, the config and the layers),
// which images share: a layer of busybox is one file however many images
// hold it. So a blob is removed only once no reference left names it,
// and always after the last reference naming it: a reader never finds a
// reference whose manifest or blobs are gone.
//
// What the collector must not remove is held as read (acquire, under
// s.mu, which the collector holds from its check to its unlink): a
// reference whose manifest a request is answering (the reference itself,
// asked by tag, or its manifest blob, asked by digest), a blob a request
// is sending, the blobs a build links into its image (from when it looks
// at them), and those a build or a copy from the store is moving in,
// until its reference is written. References are written under
// publishMu (writeRef), which the collector runs under, so that it never
// sees a blob whose reference is about to appear.

// maxGone bounds the collected references remembered (s.gone), to tell
// a rebuild that differs.
const maxGone = 4096

// ociImage is a reference file of the data directory.
type ociImage struct {
	rel      string        // the reference file, "oci/refs/NAME/_VERSION-OS-ARCH"
	manifest digest.Digest // "": the file names no manifest
	blobs    []string      // the blob files it needs, its manifest's first
	mtime    time.Time
}

// ociStore is the OCI images of the data directory, as the collector
// found them.
type ociStore struct {
	images []ociImage
	size   map[string]int64 // blob file -> bytes
	refs   map[string]int   // blob file -> references naming it
	total  int64            // the bytes of every blob
	// unsure says a reference, a directory of them or a manifest could
	// not be read: what it needs is not known, so no blob is removed.
	unsure bool
}

// scanOCI reads the blob store and the references. Blob names are taken
// only as 64 hex digits and reference files only as regular files (no
// link is followed); a manifest is read bounded and checked against its
// digest, as it is when served.
func (s *Server) scanOCI() *ociStore {
	st := &ociStore{size: map[string]int64{}, refs: map[string]int{}}
	ents, _ := os.ReadDir(filepath.Join(s.o.Data, ociRoot, "blobs", "sha256"))
	for _, e := range ents {
		name := e.Name()
		if len(name) != 64 || strings.ToLower(name) != name || !e.Type().IsRegular() {
			continue
		}
		if _, err := hex.DecodeString(name); err != nil {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue
		}
		rel := blobRel(digest.NewDigestFromEncoded(digest.SHA256, name))
		st.size[rel] = fi.Size()
		st.total += fi.Size()
	}
	refs := filepath.Join(s.o.Data, ociRoot, "refs")
	manifests := map[digest.Digest][]string{}
	filepath.WalkDir(refs, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			// A directory not read may hold references.
			if p != refs || !errors.Is(err, fs.ErrNotExist) {
				st.unsure = true
			}
			return nil
		}
		if !d.Type().IsRegular() || !strings.HasPrefix(d.Name(), "_") {
			return nil
		}
		r, err := filepath.Rel(s.o.Data, p)
		if err != nil {
			return nil
		}
		im := ociImage{rel: filepath.ToSlash(r)}
		if fi, err := d.Info(); err == nil {
			im.mtime = fi.ModTime()
		}
		m, ok, sure := s.refOf(im.rel)
		if ok {
			im.manifest = m
			blobs, ok := manifests[m]
			if !ok {
				blobs, sure = s.blobsOf(m)
				if sure {
					manifests[m] = blobs
				}
			}
			im.blobs = blobs
		}
		if !sure {
			st.unsure = true
		}
		for _, b := range im.blobs {
			st.refs[b]++
		}
		st.images = append(st.images, im)
		return nil
	})
	return st
}

// refOf reads the reference file rel: the manifest it names, if any.
// Not sure: the file could not be read, so what it names is not known.
func (s *Server) refOf(rel string) (m digest.Digest, ok, sure bool) {
	f, _, ok := s.openData(rel)
	if !ok {
		return "", false, false
	}
	f.Close()
	m, ok = s.readRef(rel)
	return m, ok, true
}

// blobsOf are the blob files the manifest m needs: itself, its config
// and its layers. A manifest not in the data directory needs nothing
// more (its image cannot be served); one there that cannot be read
// leaves the collector unsure (not sure).
func (s *Server) blobsOf(m digest.Digest) (blobs []string, sure bool) {
	blobs = []string{blobRel(m)}
	body, _, err := s.readManifest(m)
	if err != nil {
		_, serr := os.Lstat(filepath.Join(s.o.Data, filepath.FromSlash(blobRel(m))))
		return blobs, errors.Is(serr, fs.ErrNotExist)
	}
	var man struct {
		Config struct{ Digest digest.Digest }
		Layers []struct{ Digest digest.Digest }
	}
	if json.Unmarshal(body, &man) != nil {
		return blobs, false
	}
	seen := map[string]bool{blobs[0]: true}
	ds := []digest.Digest{man.Config.Digest}
	for _, l := range man.Layers {
		ds = append(ds, l.Digest)
	}
	for _, d := range ds {
		if d.Validate() != nil || d.Algorithm() != digest.SHA256 {
			return blobs, false
		}
		if b := blobRel(d); !seen[b] {
			seen[b] = true
			blobs = append(blobs, b)
		}
	}
	return blobs, true
}

// lastUseOCI is when im was last asked for (its manifest or one of its
// blobs), else its reference's time. Called with s.mu held.
func (s *Server) lastUseOCI(im *ociImage) time.Time {
	if t, ok := s.used[im.rel]; ok {
		return t
	}
	return im.mtime
}

// removeRef removes the reference of im, unless a request is answering
// its manifest, and then each blob no reference left names (but those
// in use, which a later collection removes). It returns the bytes freed.
func (s *Server) removeRef(st *ociStore, im *ociImage) int64 {
	s.mu.Lock()
	busy := s.reading[im.rel] > 0 || (im.manifest != "" && s.reading[blobRel(im.manifest)] > 0)
	if busy || s.root.Remove(im.rel) != nil {
		s.mu.Unlock()
		return 0
	}
	delete(s.used, im.rel)
	if im.manifest != "" {
		if s.gone == nil || len(s.gone) >= maxGone {
			s.gone = map[string]string{}
		}
		s.gone[im.rel] = im.manifest.String()
	}
	s.mu.Unlock()
	// Its directory, and the names' above it, once empty (no reference
	// is written meanwhile: both run under publishMu).
	for dir := path.Dir(im.rel); strings.HasPrefix(dir, ociRoot+"/refs/"); dir = path.Dir(dir) {
		if s.root.Remove(dir) != nil {
			break
		}
	}
	var freed int64
	for _, b := range im.blobs {
		if st.refs[b]--; st.refs[b] <= 0 {
			freed += s.removeBlob(st, b)
		}
	}
	s.metrics.collected.WithLabelValues("oci").Inc()
	s.o.Logger.Info("collect", "image", im.rel, "manifest", im.manifest.String(), "bytes", freed)
	return freed
}

// removeBlob removes the blob file b unless a request or a build holds
// it, and returns the bytes freed.
func (s *Server) removeBlob(st *ociStore, b string) int64 {
	n, ok := st.size[b]
	if !ok || st.unsure {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.reading[b] > 0 || s.root.Remove(b) != nil {
		return 0
	}
	delete(st.size, b)
	return n
}

// sweepBlobs removes the blobs no reference names (an interrupted
// build's, or those in use when their last image was removed) but those
// in use, and returns the bytes freed.
func (s *Server) sweepBlobs(st *ociStore) int64 {
	var freed int64
	for b := range st.size {
		if st.refs[b] <= 0 {
			freed += s.removeBlob(st, b)
		}
	}
	return freed
}

// writeRef writes the reference file rel naming the manifest m, whose
// blobs are in the data directory, held as read by the caller. Under
// publishMu: a collection sees the blobs and the reference together.
// A reference is never replaced (see writeLocal). A manifest other than
// the one a collected reference named is told: builds of that name are
// not reproducible, and a client holding the old digest cannot pull it
// again.
func (s *Server) writeRef(rel string, m digest.Digest) error {
	s.publishMu.Lock()
	defer s.publishMu.Unlock()
	if _, ok := s.readRef(rel); !ok {
		s.mu.Lock()
		old, ok := s.gone[rel]
		delete(s.gone, rel)
		s.mu.Unlock()
		if ok && old != m.String() {
			s.o.Logger.Warn("collect", "image", rel, "rebuilt", m.String(), "collected", old, "error", "the image was built again with another manifest: its build is not reproducible, and clients pinning the old digest cannot pull it")
		}
	}
	return s.writeLocal(rel, []byte(m.String()+"\n"))
}

// touchRef records that the OCI image of the reference file rel was
// asked for, if the data directory holds it.
func (s *Server) touchRef(rel string) {
	if f, _, ok := s.openData(rel); ok {
		f.Close()
		s.touch(rel)
	}
}
