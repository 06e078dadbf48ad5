package publish

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strings"

	"github.com/appc/spec/schema/types"

	"github.com/nix2aci/nix2aci/internal/safeio"
)

// The site record, .nix2aci-site.json: what the tree serves, as the last
// publish wrote it. The next one reads it back as a hint (see site.go).

const (
	stateFile    = ".nix2aci-site.json"
	maxStateSize = 16 << 20
	fileTemplate = "{name}-{version}-{os}-{arch}.{ext}"
)

var (
	fingerprintRE = regexp.MustCompile(`^(?:[0-9a-f]{40}|[0-9a-f]{64})$`)
	imageIDRE     = regexp.MustCompile(`^sha512-[0-9a-f]{128}$`)
	pinRE         = regexp.MustCompile(`^sha512-[0-9a-f]{1,128}$`)
)

// siteRecord is .nix2aci-site.json as it is written: per prefix (host),
// the template and the keys' URLs; the images, by path.
type siteRecord struct {
	Prefixes map[string]*prefixState `json:"prefixes"`
	Images   map[string]Published    `json:"images"`
}

type prefixState struct {
	Template string   `json:"template"`
	PubKeys  []string `json:"pubkeys"`
}

// record is a checked site record.
type record struct {
	base   string              // the base URL every URL in it is under; "" if it names none
	keys   map[string][]string // prefix -> fingerprints of the keys it publishes
	images map[string]Published
}

// recordError is a record that is not what publish writes.
func recordError(format string, args ...any) error {
	return fmt.Errorf("the site's %s is damaged or not written by nix2aci: it %s; remove it (the next publish rebuilds it from the images and keys in the tree), or publish into another site", stateFile, fmt.Sprintf(format, args...))
}

// parseRecord checks a record's bytes: whatever they hold, the result is
// either an error or a record whose every URL is under one canonical base
// URL, every prefix a host-like AC Identifier, every key a fingerprint,
// every image name an AC Identifier with literal labels at the path and
// URL the template gives them, and every image ID well formed.
func parseRecord(data []byte) (*record, error) {
	if len(data) > maxStateSize {
		return nil, recordError("is over %d bytes", maxStateSize)
	}
	var raw siteRecord
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, recordError("is not JSON (%v)", err)
	}
	r := &record{keys: map[string][]string{}, images: map[string]Published{}}
	hosts := make([]string, 0, len(raw.Prefixes))
	for h := range raw.Prefixes {
		hosts = append(hosts, h)
	}
	sort.Strings(hosts)
	for _, h := range hosts {
		ps := raw.Prefixes[h]
		if !types.ValidACIdentifier.MatchString(h) || strings.Contains(h, "/") {
			return nil, recordError("names the prefix %s, which is not an AC Identifier's first component", safeio.QuoteAlways(h))
		}
		if ps == nil {
			return nil, recordError("names the prefix %s without its template", h)
		}
		base, ok := strings.CutSuffix(ps.Template, "/"+fileTemplate)
		if !ok {
			return nil, recordError("gives %s the template %s, not BASE/%s", h, safeio.QuoteAlways(ps.Template), fileTemplate)
		}
		if u, err := ParseBaseURL(base); err != nil || u.String() != base {
			return nil, recordError("gives %s the template %s, whose base URL is not a canonical http(s) URL", h, safeio.QuoteAlways(ps.Template))
		}
		if r.base != "" && base != r.base {
			return nil, recordError("names two base URLs, %s and %s", r.base, safeio.QuoteAlways(base))
		}
		r.base = base
		if len(ps.PubKeys) > maxKeys {
			return nil, recordError("lists %d keys for %s", len(ps.PubKeys), h)
		}
		r.keys[h] = []string{}
		seen := map[string]bool{}
		for _, k := range ps.PubKeys {
			rest, ok := strings.CutPrefix(k, base+"/pubkeys/")
			fp, ok2 := strings.CutSuffix(rest, ".asc")
			if !ok || !ok2 || !fingerprintRE.MatchString(fp) || seen[fp] {
				return nil, recordError("lists the key %s for %s, which is not %s/pubkeys/FINGERPRINT.asc (once)", safeio.QuoteAlways(k), h, base)
			}
			seen[fp] = true
			r.keys[h] = append(r.keys[h], fp)
		}
	}
	dir := ""
	if b, err := url.Parse(r.base); err == nil {
		dir = strings.TrimPrefix(b.Path, "/")
	}
	for p, img := range raw.Images {
		if !types.ValidACIdentifier.MatchString(img.Name) {
			return nil, recordError("lists the image %s with the name %s, which is not an AC Identifier", safeio.QuoteAlways(p), safeio.QuoteAlways(img.Name))
		}
		if _, ok := raw.Prefixes[hostOf(img.Name)]; !ok {
			return nil, recordError("lists %s, whose prefix %s it does not name", img.Name, hostOf(img.Name))
		}
		rel, u, ok := imageFile(r.base, dir, img.Name, img.Version, img.OS, img.Arch)
		if !ok || p != rel || img.Path != rel || img.URL != u {
			return nil, recordError("lists the image %s at %s and %s, not at the path and URL the template gives its name and labels", img.Name, safeio.QuoteAlways(p), safeio.QuoteAlways(img.URL))
		}
		if !imageIDRE.MatchString(img.ImageID) {
			return nil, recordError("gives %s the image ID %s, which is not one", rel, safeio.QuoteAlways(img.ImageID))
		}
		for _, d := range img.Depends {
			if !pinRE.MatchString(d) {
				return nil, recordError("gives %s the dependency %s, which is not an image ID", rel, safeio.QuoteAlways(d))
			}
		}
		r.images[p] = img
	}
	return r, nil
}

// readRecord reads the tree's record without blocking, bounded; nil if
// there is none.
func readRecord(root *os.Root) ([]byte, error) {
	f, _, err := safeio.OpenRegularIn(root, stateFile)
	var nr *safeio.NotRegularError
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, nil
	case errors.As(err, &nr):
		return nil, fmt.Errorf("the site's %s is not a regular file: remove it (the next publish rebuilds it from the tree)", stateFile)
	case err != nil:
		return nil, fmt.Errorf("reading the site's %s: %w", stateFile, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxStateSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading the site's %s: %w", stateFile, err)
	}
	if data == nil {
		data = []byte{}
	}
	return data, nil
}

// record returns the record of what s serves.
func (s *site) record() siteRecord {
	r := siteRecord{Prefixes: map[string]*prefixState{}, Images: s.images}
	for _, img := range s.images {
		host := hostOf(img.Name)
		if r.Prefixes[host] != nil {
			continue
		}
		ps := &prefixState{Template: s.base + "/" + fileTemplate, PubKeys: []string{}}
		for _, fp := range sortedKeys(s.prefixes[host]) {
			if s.keys[fp] != nil {
				ps.PubKeys = append(ps.PubKeys, s.base+"/pubkeys/"+fp+".asc")
			}
		}
		r.Prefixes[host] = ps
	}
	return r
}
