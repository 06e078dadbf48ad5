package serve

import (
	"fmt"
	"html"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/nix2aci/nix2aci/publish"
)

// discovery answers ?ac-discovery=1 for any name under the prefix but
// those of unknown packages (see unknownDiscovered).
func (s *Server) discovery(w http.ResponseWriter, p string) {
	if t := strings.Trim(p, "/"); t != "" {
		comps := strings.Split(t, "/")
		if err := checkComponents(comps); err != nil {
			fail(w, http.StatusBadRequest, "%v", err)
			return
		}
		if unknown := s.unknownDiscovered(comps); len(unknown) > 0 {
			fail(w, http.StatusNotFound, "%s/%s: no recipe and no package attribute is named %s", s.o.Prefix, t, strings.Join(unknown, " "))
			return
		}
	}
	var b strings.Builder
	b.WriteString("<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n<title>App Container Images</title>\n")
	b.WriteString(publish.DiscoveryTags(s.o.Prefix, s.base, []string{s.fp}))
	fmt.Fprintf(&b, "</head>\n<body>\n<p>Images of %s/PACKAGE[/PACKAGE…], version %s: <code>rkt trust --prefix %s</code>, then <code>rkt fetch %s/busybox:%s</code>.</p>\n</body>\n</html>\n",
		html.EscapeString(s.o.Prefix), html.EscapeString(s.o.Version), html.EscapeString(s.o.Prefix), html.EscapeString(s.o.Prefix), html.EscapeString(s.o.Version))
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "public, max-age=300")
	w.Header().Set("Content-Length", strconv.Itoa(b.Len()))
	io.WriteString(w, b.String())
}
