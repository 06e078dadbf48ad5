package publish

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

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

// openIn opens the regular file p of the site, without blocking and
// without leaving it.
func openIn(root *os.Root, p string) (*os.File, error) {
	f, _, err := safeio.OpenRegularIn(root, filepath.FromSlash(p))
	var nr *safeio.NotRegularError
	if errors.As(err, &nr) {
		return nil, fmt.Errorf("the site's %s is not a regular file: remove it, or publish into another site", safeio.Quote(p))
	}
	return f, err
}

// verifyIn checks the image at p in the tree and its signature p.asc with
// trust, reading the image whole.
func verifyIn(ctx context.Context, root *os.Root, p string, trust *sign.Trust) (*sign.Verified, error) {
	f, err := openIn(root, p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sig, err := openIn(root, p+".asc")
	if err != nil {
		return nil, err
	}
	defer sig.Close()
	id, known := identify(f, sig)
	if known {
		if e, ok := verified.get(id); ok {
			if time.Since(e.at) < verifiedFor {
				if _, ok := trust.TrustedFor(e.v.Fingerprint, e.v.Name); ok {
					return e.v, nil
				}
			}
			verified.forget(id)
		}
	}
	v, err := sign.VerifyWith(safeio.WithContext(ctx, f), sig, trust, sign.VerifyOptions{Full: true})
	if err == nil && known {
		// Kept only if neither file changed while it was read.
		if again, ok := identify(f, sig); ok && again == id {
			verified.put(id, verifiedEntry{v: v, at: time.Now()})
		}
	}
	return v, err
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

// manifests remembers, in this process's memory only, what the
// manifests of tree files said, keyed by the file's identity as verified
// is (see there): a long-running publisher (nix2aci serve) scans a tree
// of thousands of images without reading each manifest again. What it
// holds is never changed: a *found is shared by every scan that finds it.
var manifests = newFileMemory[statID, *found]()

// verified remembers, in this process's memory only, the tree files
// verifyIn proved: a long-running publisher (nix2aci serve) checks the
// layers its apps depend on without reading them whole again. An entry is
// keyed by both files' identity (device, inode, size, modification and
// change times: any write or rename over them changes it, and the change
// time cannot be set back without the clock), holds for verifiedFor, and
// is used only for a key the caller's trust still names for the image.
var verified = newFileMemory[fileIdentity, verifiedEntry]()

// verifiedFor bounds how long a verification is remembered (a key may
// expire or be revoked meanwhile).
const verifiedFor = 10 * time.Minute

type verifiedEntry struct {
	v  *sign.Verified
	at time.Time
}

type statID struct {
	dev, ino           uint64
	size, mtime, ctime int64
}

type fileIdentity struct{ image, sig statID }

// identify is the identity of an image file and its signature file.
func identify(img, sig *os.File) (fileIdentity, bool) {
	a, ok1 := statOf(img)
	b, ok2 := statOf(sig)
	return fileIdentity{a, b}, ok1 && ok2
}

func statOf(f *os.File) (statID, bool) {
	fi, err := f.Stat()
	if err != nil {
		return statID{}, false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return statID{}, false
	}
	return statID{dev: uint64(st.Dev), ino: st.Ino, size: st.Size, mtime: st.Mtim.Nano(), ctime: st.Ctim.Nano()}, true
}

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
