package serve

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

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

// imageRel is the file of an image in the tree, under the base path, as
// the discovery template names it: NAME-VERSION-OS-ARCH.aci.
func imageRel(name, version, os, arch string) string {
	return path.Clean(name + "-" + version + "-" + os + "-" + arch + ".aci")
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

type etag struct {
	size  int64
	mtime time.Time
	tag   string
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

// sendBlobFile serves a blob from the data directory.
func (s *Server) sendBlobFile(w http.ResponseWriter, r *http.Request, d digest.Digest) bool {
	rel := blobRel(d)
	s.acquire(rel)
	defer s.release(rel)
	f, fi, ok := s.openData(rel)
	if !ok {
		return false
	}
	defer f.Close()
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Docker-Content-Digest", d.String())
	h.Set("ETag", `"`+d.String()+`"`)
	h.Set("Cache-Control", "public, max-age=31536000, immutable")
	http.ServeContent(largeWrites{w}, r, "", fi.ModTime(), f)
	return true
}

// largeWrites sends a blob in writes of blobWrite bytes rather than by
// sendfile. sendfile hands a loopback or local client the data a page at
// a time, each waking it: skopeo pulling the big corpus's 644 MB image
// from serve spent 0.5 s more CPU (3.8 s, 2.5 times the epoll waits) and
// took 1.05-1.10x the time it took from docker-registry, which writes
// 32 KiB at a time; with 256 KiB writes, about the same as from the
// registry (scripts/bench-oci-pull big).
type largeWrites struct{ http.ResponseWriter }

const blobWrite = 256 << 10

var blobBuffers = sync.Pool{New: func() any { return new([blobWrite]byte) }}

func (w largeWrites) ReadFrom(src io.Reader) (int64, error) {
	buf := blobBuffers.Get().(*[blobWrite]byte)
	defer blobBuffers.Put(buf)
	return io.CopyBuffer(struct{ io.Writer }{w.ResponseWriter}, src, buf[:])
}
