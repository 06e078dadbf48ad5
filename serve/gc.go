package serve

import (
	"encoding/json"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/nix2aci/nix2aci/internal/safeio"
	"github.com/nix2aci/nix2aci/publish"
)

// siteRecord is the part of publish's record the collector reads: which
// images the tree holds and the image IDs each depends on.
const siteRecord = ".nix2aci-site.json"

const maxRecord = 16 << 20

// touch records that an image file of the tree was asked for.
func (s *Server) touch(rel string) {
	s.mu.Lock()
	s.used[strings.TrimSuffix(rel, ".asc")] = time.Now()
	s.mu.Unlock()
}

// acquire and release count the requests reading a file of the tree.
func (s *Server) acquire(rel string) {
	s.mu.Lock()
	s.reading[strings.TrimSuffix(rel, ".asc")]++
	s.mu.Unlock()
}

func (s *Server) release(rel string) {
	s.mu.Lock()
	k := strings.TrimSuffix(rel, ".asc")
	if s.reading[k]--; s.reading[k] <= 0 {
		delete(s.reading, k)
	}
	s.mu.Unlock()
}

// collect removes the least recently used images until the tree's ACI
// images and the OCI images' blobs take at most MaxDisk bytes: an ACI app
// of the prefix whole (image and signature), and then the layers no app
// left depends on; an OCI image by its reference, and then the blobs no
// reference left names (see ocigc.go). An image being read, and keep
// (the ACI file or OCI reference just built), are never removed. Called
// with publishMu held: no publish and no reference write runs meanwhile.
func (s *Server) collect(keep string) {
	if s.o.MaxDisk <= 0 {
		return
	}
	var rec struct {
		Images map[string]publish.Published `json:"images"`
	}
	if b, err := safeio.ReadFile(filepath.Join(s.o.Data, siteRecord), maxRecord); err == nil {
		if json.Unmarshal(b, &rec) != nil {
			rec.Images = nil
		}
	}
	dir := strings.TrimPrefix(s.basePath, "/")
	size := map[string]int64{}
	byID := map[string]string{}
	var total int64
	var apps []string
	for p, im := range rec.Images {
		rel, ok := strings.CutPrefix(p, dir+"/")
		if !ok || rel != path.Clean(rel) {
			continue
		}
		var n int64
		for _, f := range []string{rel, rel + ".asc"} {
			if fi, ok := s.stat(f); ok {
				n += fi.Size()
			}
		}
		if n == 0 {
			continue // not in the tree any more
		}
		size[rel] = n
		total += n
		byID[im.ImageID] = rel
		if strings.HasPrefix(im.Name, s.o.Prefix+"/") && !strings.HasPrefix(im.Name, s.o.Prefix+"/nix/") && rel != keep {
			apps = append(apps, rel)
		}
	}
	oci := s.scanOCI()
	total += oci.total
	if total <= s.o.MaxDisk {
		return
	}
	// Blobs no image needs go first.
	total -= s.sweepBlobs(oci)
	images := map[string]*ociImage{}
	if oci.unsure {
		s.o.Logger.Warn("collect", "error", "a reference or a manifest under "+ociRoot+" could not be read: no OCI image is collected until it can be (a manifest that does not match its digest is removed with its reference files by hand)")
	} else {
		for i := range oci.images {
			if im := &oci.images[i]; im.rel != keep {
				images[im.rel] = im
				apps = append(apps, im.rel)
			}
		}
	}
	relOf := map[string]publish.Published{}
	for p, im := range rec.Images {
		relOf[strings.TrimPrefix(p, dir+"/")] = im
	}
	s.mu.Lock()
	lastUse := func(rel string) time.Time {
		if im, ok := images[rel]; ok {
			return s.lastUseOCI(im)
		}
		if t, ok := s.used[rel]; ok {
			return t
		}
		if fi, ok := s.stat(rel); ok {
			return fi.ModTime()
		}
		return time.Time{}
	}
	sort.Slice(apps, func(i, j int) bool { return lastUse(apps[i]).Before(lastUse(apps[j])) })
	inUse := func(rel string) bool { return s.reading[rel] > 0 }
	s.mu.Unlock()

	removed := map[string]bool{}
	remove := func(rel string) {
		root := s.root
		p := path.Join(dir, rel)
		// The image before its signature: a client never finds an image
		// without one.
		if root.Remove(p) == nil {
			root.Remove(p + ".asc")
			if f, ok := s.outLayers[rel]; ok {
				os.Remove(f)
				delete(s.outLayers, rel)
			}
			removed[rel] = true
			total -= size[rel]
			s.metrics.collected.WithLabelValues("aci").Inc()
			s.o.Logger.Info("collect", "file", rel, "bytes", size[rel])
		}
	}
	for _, a := range apps {
		if total <= s.o.MaxDisk {
			break
		}
		if im, ok := images[a]; ok {
			total -= s.removeRef(oci, im)
			continue
		}
		s.mu.Lock()
		busy := inUse(a)
		s.mu.Unlock()
		if !busy {
			remove(a)
		}
	}
	// The layers still needed: every image an app left depends on,
	// through the layers' own dependencies.
	needed := map[string]bool{}
	var mark func(rel string)
	mark = func(rel string) {
		if needed[rel] {
			return
		}
		needed[rel] = true
		for _, id := range relOf[rel].Depends {
			if d, ok := byID[id]; ok {
				mark(d)
			}
		}
	}
	for rel, im := range relOf {
		if _, ok := size[rel]; ok && !removed[rel] && !strings.HasPrefix(im.Name, s.o.Prefix+"/nix/") {
			mark(rel)
		}
	}
	for rel, im := range relOf {
		if _, ok := size[rel]; !ok || removed[rel] || needed[rel] || !strings.HasPrefix(im.Name, s.o.Prefix+"/nix/") {
			continue
		}
		s.mu.Lock()
		busy := inUse(rel)
		s.mu.Unlock()
		if !busy {
			remove(rel)
		}
	}
}
