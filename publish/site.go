package publish

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/appc/spec/schema/types"

	"github.com/nix2aci/nix2aci/aci"
	"github.com/nix2aci/nix2aci/internal/safeio"
	"github.com/nix2aci/nix2aci/sign"
)

// What the tree holds is read from the tree's files: the images and
// signatures under the image directory, and the keys in its pubkeys
// directory. The record, .nix2aci-site.json, is a hint: it is checked
// whole (every URL under the base URL, every name, label and image ID
// well formed, every path the one the template gives) or refused, and
// then says only which keys each prefix publishes and the image IDs of
// the images it lists. An image it lists counts only while its file and
// signature are in the tree and its manifest says the name and labels the
// record does; one it does not list counts once its signature verifies
// with a key in the tree, which the prefix then publishes.

const (
	stateFile    = ".nix2aci-site.json"
	maxStateSize = 16 << 20
	fileTemplate = "{name}-{version}-{os}-{arch}.{ext}"
	// A scan of the image directory looks at no more entries, nor
	// deeper, and reads no more than this of each image looking for its
	// manifest (the first entry of every image nix2aci or actool writes).
	maxScanEntries  = 100000
	maxScanDepth    = 128
	maxScanManifest = 8 << 20
	// The pubkeys directory holds no more keys.
	maxKeys = 256
	// An armored public key file is a few KiB.
	maxKeyFile = 1 << 20
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
	f, err := root.OpenFile(stateFile, os.O_RDONLY|nonBlock, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the site's %s: %w", stateFile, err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("the site's %s is not a regular file: remove it (the next publish rebuilds it from the tree)", stateFile)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxStateSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading the site's %s: %w", stateFile, err)
	}
	if data == nil {
		data = []byte{}
	}
	return data, nil
}

// site is what the tree serves under one base URL.
type site struct {
	base string // the base URL
	dir  string // its path in the tree ("" for the root)
	// keys are the keys in the pubkeys directory, by fingerprint.
	keys map[string]*openpgp.Entity
	// prefixes are the hosts the index serves and the keys each lists.
	prefixes map[string]map[string]bool
	// images are the images the tree serves, by path.
	images map[string]Published
	// found is every .aci file under the image directory, and files
	// every regular file there.
	found map[string]*found
	files map[string]bool
	// infos caches what reading a file whole found (see fileInfo).
	infos map[string]*aci.Info
}

// found is an .aci file in the tree and what its manifest says.
type found struct {
	name, version, os, arch string
	pins                    []string
	deps                    types.Dependencies
	err                     error // its manifest could not be read
}

func (f *found) published(path string) Published {
	return Published{Name: f.name, Version: f.version, OS: f.os, Arch: f.arch, Path: path}
}

func newSite(base *url.URL) *site {
	return &site{
		base: base.String(), dir: strings.TrimPrefix(base.Path, "/"),
		keys: map[string]*openpgp.Entity{}, prefixes: map[string]map[string]bool{}, images: map[string]Published{},
		found: map[string]*found{}, files: map[string]bool{}, infos: map[string]*aci.Info{},
	}
}

func (s *site) addKey(host, fp string) {
	if s.prefixes[host] == nil {
		s.prefixes[host] = map[string]bool{}
	}
	if fp != "" {
		s.prefixes[host][fp] = true
	}
}

// loadSite reads what the tree at root serves for base: its keys and
// images, with its record as a hint (see above).
func loadSite(ctx context.Context, root *os.Root, base *url.URL) (*site, error) {
	s := newSite(base)
	rec := &record{keys: map[string][]string{}, images: map[string]Published{}}
	data, err := readRecord(root)
	if err != nil {
		return nil, err
	}
	if data != nil {
		if rec, err = parseRecord(data); err != nil {
			return nil, err
		}
	}
	if rec.base != "" && rec.base != s.base {
		host := "its prefixes"
		if hosts := sortedKeys(rec.keys); len(hosts) > 0 {
			host = hosts[0]
		}
		return nil, &UsageError{fmt.Sprintf("the site publishes %s at %s/%s already; publish with --base-url %s, or into another site", host, rec.base, fileTemplate, rec.base)}
	}
	if err := s.loadKeys(root); err != nil {
		return nil, err
	}
	if err := s.scan(ctx, root); err != nil {
		return nil, err
	}
	for host, fps := range rec.keys {
		for _, fp := range fps {
			if s.keys[fp] != nil {
				s.addKey(host, fp)
			}
		}
	}
	all := sign.NewTrust()
	for _, k := range s.keys {
		all.AddRoot(k)
	}
	for _, p := range sortedKeys(s.found) {
		f := s.found[p]
		if f.err != nil || !s.files[p+".asc"] {
			continue
		}
		rel, u, ok := imageFile(s.base, s.dir, f.name, f.version, f.os, f.arch)
		if !ok || rel != p {
			continue // not where discovery looks for it
		}
		host := hostOf(f.name)
		if r, ok := rec.images[p]; ok && r.Name == f.name && r.Version == f.version && r.OS == f.os && r.Arch == f.arch {
			r.Depends = slices.Clip(f.pins) // shared with later scans: an append copies
			s.images[p] = r
			s.addKey(host, "")
			continue
		}
		// Not in the record: listed once its signature verifies with a
		// key in the tree, which its prefix then publishes.
		v, err := verifyIn(ctx, root, p, all)
		if err != nil {
			if ctx.Err() != nil {
				return nil, interruptedReading(ctx)
			}
			continue
		}
		s.infos[p] = &aci.Info{Manifest: v.Manifest, ImageID: v.ImageID}
		pub := f.published(p)
		pub.URL, pub.ImageID, pub.Depends = u, v.ImageID, slices.Clip(f.pins)
		s.images[p] = pub
		s.addKey(host, strings.ToLower(v.Fingerprint))
	}
	return s, nil
}

func interruptedReading(ctx context.Context) error {
	return fmt.Errorf("publishing interrupted while reading the site; nothing was written: %w", context.Cause(ctx))
}

// loadKeys reads the public keys in the pubkeys directory: regular files
// named FINGERPRINT.asc holding that one public key. Other files there
// are not keys publish wrote, and are left alone; a private key is an
// error.
func (s *site) loadKeys(root *os.Root) error {
	dir := path.Join(s.dir, "pubkeys")
	d, err := root.Open(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading the site's %s: %w", dir, err)
	}
	defer d.Close()
	ents, err := d.ReadDir(4 * maxKeys)
	if err != nil && err != io.EOF {
		return fmt.Errorf("reading the site's %s: %w", dir, err)
	}
	if len(ents) == 4*maxKeys {
		return fmt.Errorf("the site's %s holds more than %d files: remove those that are not keys, or publish into another site", dir, 4*maxKeys)
	}
	for _, e := range ents {
		fp, ok := strings.CutSuffix(e.Name(), ".asc")
		if !ok || !fingerprintRE.MatchString(fp) || !e.Type().IsRegular() {
			continue
		}
		p := path.Join(dir, e.Name())
		f, err := openIn(root, p)
		if err != nil {
			continue
		}
		key, err := sign.ReadKey(io.LimitReader(f, maxKeyFile+1))
		f.Close()
		if err != nil || strings.ToLower(sign.Fingerprint(key)) != fp {
			continue
		}
		if key.PrivateKey != nil {
			return fmt.Errorf("the site's %s is a private key, served to anyone: remove it now, and revoke the key if the site was served", p)
		}
		if len(s.keys) == maxKeys {
			return fmt.Errorf("the site's %s holds more than %d keys: remove those it no longer publishes, or publish into another site", dir, maxKeys)
		}
		s.keys[fp] = key
	}
	return nil
}

// scan lists the regular files under the image directory and reads the
// manifest of each .aci file, boundedly; names starting with a dot
// (staging directories, the record) are not looked at, nor is anything
// behind a symlink.
func (s *site) scan(ctx context.Context, root *os.Root) error {
	start := s.dir
	if start == "" {
		start = "."
	}
	if _, err := root.Lstat(start); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	n := 0
	depth0 := strings.Count(start, "/")
	return fs.WalkDir(root.FS(), start, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("reading the site: %w", err)
		}
		if ctx.Err() != nil {
			return interruptedReading(ctx)
		}
		if p != start && strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if n++; n > maxScanEntries {
			return fmt.Errorf("the site holds more than %d entries under %s: publish into another site", maxScanEntries, start)
		}
		if d.IsDir() && strings.Count(p, "/")-depth0 > maxScanDepth {
			return fmt.Errorf("the site has directories more than %d deep under %s: publish into another site", maxScanDepth, start)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		s.files[p] = true
		if strings.HasSuffix(p, ".aci") {
			s.found[p] = readFound(root, p)
		}
		return nil
	})
}

func readFound(root *os.Root, p string) *found {
	f, err := openIn(root, p)
	if err != nil {
		return &found{err: err}
	}
	defer f.Close()
	id, known := statOf(f)
	if known {
		if fd, ok := manifests.get(id); ok {
			return fd
		}
	}
	im, err := aci.ReadManifest(f, maxScanManifest)
	if err != nil {
		return &found{err: err}
	}
	fd := &found{name: im.Name.String()}
	fd.version, _ = im.Labels.Get("version")
	fd.os, _ = im.Labels.Get("os")
	fd.arch, _ = im.Labels.Get("arch")
	for _, d := range im.Dependencies {
		if d.ImageID != nil {
			fd.pins = append(fd.pins, d.ImageID.String())
		}
	}
	fd.deps = im.Dependencies
	// Kept only if the file did not change while it was read.
	if again, ok := statOf(f); known && ok && again == id {
		manifests.put(id, fd)
	}
	return fd
}

// manifests remembers, in this process's memory only, what the
// manifests of tree files said, keyed by the file's identity as verified
// is (see there): a long-running publisher (nix2aci serve) scans a tree
// of thousands of images without reading each manifest again. What it
// holds is never changed: a *found is shared by every scan that finds it.
var manifests = newFileMemory[statID, *found]()

// fileMemory is what this process remembers of tree files by their
// identity (verified, manifests), at most maxScanEntries entries: files
// gone from trees leave theirs behind, and all are dropped at the bound.
type fileMemory[K comparable, V any] struct {
	mu sync.Mutex
	m  map[K]V
}

func newFileMemory[K comparable, V any]() *fileMemory[K, V] {
	return &fileMemory[K, V]{m: map[K]V{}}
}

func (c *fileMemory[K, V]) get(id K) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.m[id]
	return v, ok
}

func (c *fileMemory[K, V]) put(id K, v V) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= maxScanEntries {
		clear(c.m)
	}
	c.m[id] = v
}

func (c *fileMemory[K, V]) forget(id K) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, id)
}

// fileInfo reads the image at p in the tree whole: its manifest and image
// ID as the file says.
func (s *site) fileInfo(ctx context.Context, root *os.Root, p string) (*aci.Info, error) {
	if info, ok := s.infos[p]; ok {
		return info, nil
	}
	f, err := openIn(root, p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	info, err := aci.Inspect(safeio.WithContext(ctx, f))
	if err != nil {
		return nil, err
	}
	s.infos[p] = info
	return info, nil
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

func hostOf(name string) string {
	host, _, _ := strings.Cut(name, "/")
	return host
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
