package serve

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// ServeHTTP answers a request and logs it.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rw := &recorder{ResponseWriter: w, status: http.StatusOK}
	if r.URL.Path == "/metrics" {
		s.metricsHandler.ServeHTTP(rw, r)
	} else {
		s.serve(rw, r)
	}
	s.metrics.requests.WithLabelValues(strconv.Itoa(rw.status)).Inc()
	// An answer of known length is complete once written: it goes out
	// now, not after the line below (net/http holds the last of it in
	// its buffer until ServeHTTP returns), so that a slow log is not a
	// slow answer. (Counted first: whoever has the answer can see it
	// counted.)
	if rw.wrote && w.Header().Get("Content-Length") != "" {
		http.NewResponseController(w).Flush()
	}
	s.o.Logger.Info("request", "method", r.Method, "path", bounded(r.URL.Path, 200), "name", rw.name,
		"status", rw.status, "bytes", rw.bytes, "duration", time.Since(start))
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	// Discovery of a name whose first package is v2 stays discovery.
	if isRegistryPath(p) && (r.URL.RawQuery == "" || r.URL.Query().Get("ac-discovery") != "1") {
		if len(p) > MaxPath || len(r.URL.RawQuery) > MaxPath {
			regFail(w, http.StatusRequestURITooLong, "NAME_INVALID", "the path is over %d bytes", MaxPath)
		} else if r.URL.EscapedPath() != p || strings.Contains(r.URL.RawPath, "%") {
			regFail(w, http.StatusBadRequest, "NAME_INVALID", "the path has %%-escapes: names are plain lower-case letters, digits and - . _")
		} else {
			s.registry(w, r)
		}
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		fail(w, http.StatusMethodNotAllowed, "only GET and HEAD are served")
		return
	}
	if len(p) > MaxPath || len(r.URL.RawQuery) > MaxPath {
		fail(w, http.StatusRequestURITooLong, "the path is over %d bytes", MaxPath)
		return
	}
	if r.URL.EscapedPath() != p || strings.Contains(r.URL.RawPath, "%") {
		fail(w, http.StatusBadRequest, "the path has %%-escapes: names are plain lower-case letters, digits and - . _ ~")
		return
	}
	if r.URL.RawQuery != "" && r.URL.Query().Get("ac-discovery") == "1" {
		s.discovery(w, p)
		return
	}
	if rel, ok := strings.CutPrefix(p, s.basePath+"/"); ok {
		s.file(w, r, rel)
		return
	}
	if p == "/" {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "nix2aci serve: images of %s/PACKAGE[/PACKAGE…], version %s, signed by %s.\nWith rkt: rkt trust --prefix %s, then rkt fetch %s/busybox:%s\nWith podman: podman pull %s/busybox (a policy.json with signedBy the key %s/pubkeys/%s.asc checks it)\n", s.o.Prefix, s.o.Version, s.fp, s.o.Prefix, s.o.Prefix, s.o.Version, bounded(r.Host, 100), s.base, s.fp)
		return
	}
	fail(w, http.StatusNotFound, "nothing is served at %s: images are under %s/", bounded(p, 200), s.base)
}

type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
	name   string
	wrote  bool
}

func (r *recorder) WriteHeader(code int) {
	if !r.wrote {
		r.status, r.wrote = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

// ReadFrom keeps the connection's own ReadFrom (sendfile for a file)
// reachable through the recorder.
func (r *recorder) ReadFrom(src io.Reader) (int64, error) {
	r.wrote = true
	var n int64
	var err error
	if rf, ok := r.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(src)
	} else {
		n, err = io.Copy(struct{ io.Writer }{r.ResponseWriter}, src)
	}
	r.bytes += n
	return n, err
}

func (r *recorder) Write(b []byte) (int, error) {
	r.wrote = true
	n, err := r.ResponseWriter.Write(b)
	r.bytes += int64(n)
	return n, err
}

func bounded(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// fail answers a plain-text reason.
func fail(w http.ResponseWriter, status int, format string, args ...any) {
	msg := bounded(fmt.Sprintf(format, args...), maxReason)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	msg = strings.TrimRight(msg, "\n") + "\n"
	w.Header().Set("Content-Length", strconv.Itoa(len(msg)))
	w.WriteHeader(status)
	io.WriteString(w, msg)
}
