// Package publish writes a static tree that appc discovery (rkt fetch
// NAME, rkt trust --prefix) reads, from built images: any web server or
// object store serving the tree at the names' host is an image server.
//
// For a base URL https://example.com/acis the tree holds
//
//	index.html                          ac-discovery and ac-discovery-pubkeys meta tags
//	acis/<name>-<version>-<os>-<arch>.aci and .aci.asc
//	acis/pubkeys/<fingerprint>.asc      the public key
//
// and index.html says, for each host the names start with,
//
//	<meta name="ac-discovery" content="example.com https://example.com/acis/{name}-{version}-{os}-{arch}.{ext}">
//	<meta name="ac-discovery-pubkeys" content="example.com https://example.com/acis/pubkeys/<fingerprint>.asc">
//
// rkt asks https://HOST/NAME?ac-discovery=1, then each shorter prefix: a
// static server answers the first ones 404 and the host's root with
// index.html. {name} is the whole name, so an image's file is under
// directories named by its name's components.
//
// Publishing again into the same tree adds images and keys: what the tree
// publishes is recorded in .nix2aci-site.json, and index.html is made
// again from it. Every file is written to a temporary name and renamed,
// images before their signatures and both before index.html.
package publish

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/appc/spec/schema"
	"github.com/appc/spec/schema/types"

	"github.com/nix2aci/nix2aci/aci"
	"github.com/nix2aci/nix2aci/internal/safeio"
	"github.com/nix2aci/nix2aci/manifest"
	"github.com/nix2aci/nix2aci/pipeline"
	"github.com/nix2aci/nix2aci/sign"
)

// Options say where and how to publish.
type Options struct {
	// Site is the tree's root directory (created if needed).
	Site string
	// BaseURL is where the tree's image directory is served: http(s),
	// with a host, no query; its path is the directory's path in the tree.
	BaseURL string
	// Key, if set, signs every image published (its own .asc is then not
	// used) and is the published key.
	Key *openpgp.Entity
	// PublicKey is the published key when Key is not set: every image must
	// then have a signature beside it (IMAGE.aci.asc) that it verifies.
	PublicKey *openpgp.Entity
	// Replace lets an image take the place of a published one with the
	// same name, version, os and arch but another image ID. Without it
	// that is refused: rkt fetch NAME:VERSION would get other bytes than
	// before. Even with it, an image that another published image pins
	// by ID is not replaced unless that one is published again too.
	Replace bool
}

// Published is one image in the tree.
type Published struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	OS      string `json:"os"`
	Arch    string `json:"arch"`
	ImageID string `json:"imageID"`
	// Path is the image's path in the tree, URL its address.
	Path string `json:"path"`
	URL  string `json:"url"`
	// Depends are the image IDs its dependencies are pinned to.
	Depends []string `json:"depends,omitempty"`
}

// Report is what Publish did.
type Report struct {
	Images    []Published `json:"images"`
	Index     string      `json:"index"`
	PublicKey string      `json:"publicKey"`
	Prefixes  []string    `json:"prefixes"`
}

// UsageError is a request that cannot be done as asked.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

const (
	stateFile    = ".nix2aci-site.json"
	maxStateSize = 16 << 20
	fileTemplate = "{name}-{version}-{os}-{arch}.{ext}"
)

// site is the state of a tree: per prefix (host), its template and keys,
// and the images it holds.
type site struct {
	Prefixes map[string]*prefixState `json:"prefixes"`
	Images   map[string]Published    `json:"images"` // by path
}

type prefixState struct {
	Template string   `json:"template"`
	PubKeys  []string `json:"pubkeys"`
}

// Expand returns the images args name: .aci files, and the .aci files
// directly in directories (not those starting with a dot), sorted.
func Expand(args []string) ([]string, error) {
	var out []string
	for _, a := range args {
		fi, err := os.Stat(a)
		if err != nil {
			return nil, err
		}
		if !fi.IsDir() {
			if !strings.HasSuffix(a, ".aci") {
				return nil, &UsageError{fmt.Sprintf("%s is not an .aci file", safeio.Quote(a))}
			}
			out = append(out, a)
			continue
		}
		ents, err := os.ReadDir(a)
		if err != nil {
			return nil, err
		}
		n := 0
		for _, e := range ents {
			if strings.HasSuffix(e.Name(), ".aci") && !strings.HasPrefix(e.Name(), ".") && e.Type().IsRegular() {
				out = append(out, filepath.Join(a, e.Name()))
				n++
			}
		}
		if n == 0 {
			return nil, &UsageError{fmt.Sprintf("%s holds no .aci file", safeio.Quote(a))}
		}
	}
	if len(out) == 0 {
		return nil, &UsageError{"nothing to publish: name .aci files or directories of them"}
	}
	sort.Strings(out)
	return out, nil
}

// ParseBaseURL checks a base URL and returns it without a trailing slash.
func ParseBaseURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Opaque != "" {
		return nil, &UsageError{fmt.Sprintf("base URL %s is not an http(s) URL with a host, like https://example.com/acis", safeio.Quote(s))}
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, &UsageError{fmt.Sprintf("base URL %s has a query, fragment or user: give a plain https://HOST/PATH", safeio.Quote(s))}
	}
	p := u.Path
	if p == "" {
		p = "/"
	}
	clean := path.Clean(p)
	if !strings.HasPrefix(p, "/") || clean != strings.TrimSuffix(p, "/") && !(clean == "/" && p == "/") {
		return nil, &UsageError{fmt.Sprintf("base URL %s has a path that is not canonical (no //, . or ..)", safeio.Quote(s))}
	}
	for _, c := range strings.Split(strings.Trim(clean, "/"), "/") {
		if c != "" && (strings.HasPrefix(c, ".") || strings.ContainsAny(c, "{}\\")) {
			return nil, &UsageError{fmt.Sprintf("base URL %s: the path component %s cannot be a directory of the tree", safeio.Quote(s), safeio.Quote(c))}
		}
	}
	u.Path = strings.TrimSuffix(clean, "/")
	u.RawPath = ""
	return u, nil
}

// Publish copies images (and signatures) into the tree o.Site, with the
// public key and index.html. Each image is validated (aci.InspectFile)
// first, and with no Key its signature must verify with PublicKey for
// its name: a tree never serves what rkt would refuse.
func Publish(ctx context.Context, images []string, o Options) (*Report, error) {
	base, err := ParseBaseURL(o.BaseURL)
	if err != nil {
		return nil, err
	}
	pub := o.PublicKey
	if o.Key != nil {
		pub = o.Key
	}
	if pub == nil {
		return nil, &UsageError{"publishing needs the key rkt will trust: --key KEY to sign the images, or --public-key PUB.asc for images signed already"}
	}
	// An existing site's record is read now; a new site is created only
	// once everything has been checked.
	st := &site{Prefixes: map[string]*prefixState{}, Images: map[string]Published{}}
	var root *os.Root
	if fi, err := os.Stat(o.Site); err == nil && fi.IsDir() {
		if root, err = os.OpenRoot(o.Site); err != nil {
			return nil, fmt.Errorf("opening the site: %w", err)
		}
		defer root.Close()
		if st, err = readState(root); err != nil {
			return nil, err
		}
	}
	dir := strings.TrimPrefix(base.Path, "/") // the image directory in the tree
	fp := sign.Fingerprint(pub)
	keyPath := path.Join(dir, "pubkeys", strings.ToLower(fp)+".asc")
	keyURL := base.String() + "/pubkeys/" + strings.ToLower(fp) + ".asc"
	tmpl := base.String() + "/" + fileTemplate
	trust := sign.NewTrust()
	trust.AddRoot(pub)

	// Check everything before writing anything.
	type job struct {
		src, asc string
		p        Published
		deps     types.Dependencies
	}
	var jobs []job
	for _, img := range images {
		// Validated, and with no key to sign with, its signature checked:
		// one reading either way.
		var im *schema.ImageManifest
		var id, asc string
		if o.Key != nil {
			info, err := aci.InspectFile(img)
			if err != nil {
				return nil, err
			}
			im, id = info.Manifest, info.ImageID
		} else {
			asc = img + ".asc"
			if _, err := os.Lstat(asc); err != nil {
				return nil, fmt.Errorf("%s is not signed (%v): sign it (nix2aci sign, build --sign), or publish with --key", img, err)
			}
			v, err := verifyFiles(ctx, img, asc, trust)
			if err != nil {
				if aci.IsInvalid(err) {
					return nil, err
				}
				return nil, fmt.Errorf("%s: its signature does not verify with the published key %s: %w", img, fp, err)
			}
			im, id = v.Manifest, v.ImageID
		}
		name := im.Name.String()
		labels := map[string]string{}
		for _, k := range []string{"version", "os", "arch"} {
			v, _ := im.Labels.Get(k)
			if v == "" {
				return nil, &UsageError{fmt.Sprintf("%s has no %s label, which discovery needs to name its file; rebuild it with one", img, k)}
			}
			labels[k] = v
		}
		file, err := manifest.FileName(im) // checks the labels are file-name safe
		if err != nil {
			return nil, fmt.Errorf("%s: %w", img, err)
		}
		rel := path.Join(dir, path.Dir(name), file)
		if !filepath.IsLocal(rel) {
			return nil, fmt.Errorf("%s: %s is not a path inside the site", img, safeio.Quote(rel))
		}
		p := Published{Name: name, Version: labels["version"], OS: labels["os"], Arch: labels["arch"], ImageID: id, Path: rel,
			URL: strings.NewReplacer("{name}", name, "{version}", labels["version"], "{os}", labels["os"], "{arch}", labels["arch"], "{ext}", "aci").Replace(tmpl)}
		for _, d := range im.Dependencies {
			if d.ImageID != nil {
				p.Depends = append(p.Depends, d.ImageID.String())
			}
		}
		host, _, _ := strings.Cut(name, "/")
		if ps, ok := st.Prefixes[host]; ok && ps.Template != tmpl {
			return nil, &UsageError{fmt.Sprintf("the site publishes %s at %s already; publish with that base URL, or into another site", host, ps.Template)}
		}
		jobs = append(jobs, job{src: img, asc: asc, p: p, deps: im.Dependencies})
	}
	var ps []Published
	var deps []types.Dependencies
	for _, j := range jobs {
		ps, deps = append(ps, j.p), append(deps, j.deps)
	}
	if err := checkDependencies(ps, deps, st); err != nil {
		return nil, err
	}
	if err := checkReplacements(root, ps, st, o.Replace); err != nil {
		return nil, err
	}

	// Write: images and signatures, the key, then the index.
	if root == nil {
		if err := os.MkdirAll(o.Site, 0o755); err != nil {
			return nil, fmt.Errorf("creating the site: %w", err)
		}
		if root, err = os.OpenRoot(o.Site); err != nil {
			return nil, fmt.Errorf("opening the site: %w", err)
		}
		defer root.Close()
	}
	var rep Report
	stage, err := os.MkdirTemp(o.Site, ".nix2aci-publish-*")
	if err != nil {
		return nil, fmt.Errorf("writing into the site: %w", err)
	}
	defer os.RemoveAll(stage)
	for _, j := range jobs {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("publishing interrupted: %w", context.Cause(ctx))
		}
		tmp := filepath.Join(stage, "image.aci")
		if err := copyFile(j.src, tmp); err != nil {
			return nil, err
		}
		// What is published is the copy, read once more: signed (and
		// validated) now, or validated with its signature checked, and
		// still the image checked above.
		var id string
		if o.Key != nil {
			info, err := pipeline.SignImage(ctx, o.Key, tmp, tmp+".asc")
			if err != nil {
				return nil, err
			}
			id = info.ImageID
		} else {
			if err := copyFile(j.asc, tmp+".asc"); err != nil {
				return nil, err
			}
			v, err := verifyFiles(ctx, tmp, tmp+".asc", trust)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", j.src, err)
			}
			id = v.ImageID
		}
		if id != j.p.ImageID {
			return nil, fmt.Errorf("%s changed while it was being published; publish it again", j.src)
		}
		if err := root.MkdirAll(path.Dir(j.p.Path), 0o755); err != nil {
			return nil, fmt.Errorf("writing into the site: %w", err)
		}
		if err := moveInto(root, o.Site, tmp, j.p.Path); err != nil {
			return nil, err
		}
		if err := moveInto(root, o.Site, tmp+".asc", j.p.Path+".asc"); err != nil {
			return nil, err
		}
		st.Images[j.p.Path] = j.p
		rep.Images = append(rep.Images, j.p)
		host, _, _ := strings.Cut(j.p.Name, "/")
		ps := st.Prefixes[host]
		if ps == nil {
			ps = &prefixState{Template: tmpl}
			st.Prefixes[host] = ps
		}
		if !contains(ps.PubKeys, keyURL) {
			ps.PubKeys = append(ps.PubKeys, keyURL)
		}
	}
	var armored bytes.Buffer
	if err := sign.WritePublicKey(&armored, pub); err != nil {
		return nil, err
	}
	if err := writeInto(root, o.Site, stage, keyPath, armored.Bytes()); err != nil {
		return nil, err
	}
	state, err := json.MarshalIndent(st, "", " ")
	if err != nil {
		return nil, err
	}
	if err := writeInto(root, o.Site, stage, stateFile, state); err != nil {
		return nil, err
	}
	if err := writeInto(root, o.Site, stage, "index.html", renderIndex(st)); err != nil {
		return nil, err
	}
	rep.Index = filepath.Join(o.Site, "index.html")
	rep.PublicKey = filepath.Join(o.Site, filepath.FromSlash(keyPath))
	for p := range st.Prefixes {
		rep.Prefixes = append(rep.Prefixes, p)
	}
	sort.Strings(rep.Prefixes)
	return &rep, nil
}

// checkDependencies makes sure that every dependency of an image being
// published is in the tree afterwards, as rkt will look for it: by name
// and labels through the template, and then by image ID. A dependency
// missing, or published with other bytes, would make rkt fetch fail.
func checkDependencies(ps []Published, deps []types.Dependencies, st *site) error {
	key := func(name, version, os, arch string) string {
		return name + "\x00" + version + "\x00" + os + "\x00" + arch
	}
	have := map[string]string{}
	for _, p := range st.Images {
		have[key(p.Name, p.Version, p.OS, p.Arch)] = p.ImageID
	}
	for _, p := range ps {
		have[key(p.Name, p.Version, p.OS, p.Arch)] = p.ImageID
	}
	for i, p := range ps {
		for _, d := range deps[i] {
			labels := map[string]string{"os": p.OS, "arch": p.Arch}
			for _, l := range d.Labels {
				labels[l.Name.String()] = l.Value
			}
			id, ok := have[key(d.ImageName.String(), labels["version"], labels["os"], labels["arch"])]
			if !ok {
				return fmt.Errorf("%s depends on %s (version %s), which is neither being published nor in the site; publish its layers too (the build's .deps file lists them, or give the build's output directory)", p.Name, safeio.Quote(d.ImageName.String()), safeio.Quote(labels["version"]))
			}
			if d.ImageID != nil && d.ImageID.String() != id {
				return fmt.Errorf("%s depends on %s with image ID %s, but the one published has %s; publish the layers of the same build", p.Name, d.ImageName, d.ImageID, id)
			}
		}
	}
	return nil
}

// checkReplacements refuses to put an image where the site serves one of
// the same name, version, os and arch (the same path) but another image
// ID, unless replace; and even then when an image that stays published
// pins the old one by ID: rkt fetch of that one would then fail. Two
// names whose files the template puts at one path are refused outright.
func checkReplacements(root *os.Root, ps []Published, st *site, replace bool) error {
	republished := map[string]Published{}
	for _, p := range ps {
		if q, ok := republished[p.Path]; ok && describe(q) != describe(p) {
			return &UsageError{fmt.Sprintf("two of the images, %s and %s, would both be published as %s (the template %s): give one of them another version", describe(q), describe(p), p.Path, fileTemplate)}
		} else if ok && q.ImageID != p.ImageID {
			return &UsageError{fmt.Sprintf("two of the images are %s, with image IDs %s and %s: publish one of them, or give the other a new version", describe(p), q.ImageID, p.ImageID)}
		}
		republished[p.Path] = p
	}
	for _, p := range ps {
		old, ok, err := publishedAt(root, st, p.Path)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		if old.Name != p.Name || old.Version != p.Version || old.OS != p.OS || old.Arch != p.Arch {
			return &UsageError{fmt.Sprintf("%s would be published as %s, where the site serves %s: the template %s gives both that file; give one of them another version", describe(p), p.Path, describe(old), fileTemplate)}
		}
		if old.ImageID == p.ImageID {
			continue
		}
		if !replace {
			return &UsageError{fmt.Sprintf("%s is published already with image ID %s, and this one's is %s: rkt fetch %s:%s would get other bytes than before. Publish it as a new version, or pass --replace", describe(p), old.ImageID, p.ImageID, p.Name, safeio.Quote(p.Version))}
		}
		for _, q := range st.Images {
			if _, ok := republished[q.Path]; ok || !contains(pins(root, q), old.ImageID) {
				continue
			}
			return &UsageError{fmt.Sprintf("%s pins %s by its image ID %s: replacing that would break rkt fetch of %s. Publish %s again too, built on the new one, or publish the new one as a new version", describe(q), describe(p), old.ImageID, q.Name, q.Name)}
		}
	}
	return nil
}

// describe names a published image as an error message does.
func describe(p Published) string {
	return fmt.Sprintf("%s version %s (%s/%s)", p.Name, safeio.Quote(p.Version), p.OS, p.Arch)
}

// publishedAt returns what the site serves at path: as its record lists
// it, or, for a file there that the record does not list (a record lost
// or from elsewhere), as the file says.
func publishedAt(root *os.Root, st *site, p string) (Published, bool, error) {
	if rec, ok := st.Images[p]; ok {
		return rec, true, nil
	}
	if root == nil {
		return Published{}, false, nil
	}
	f, err := openIn(root, p)
	if errors.Is(err, fs.ErrNotExist) {
		return Published{}, false, nil
	}
	if err != nil {
		return Published{}, false, err
	}
	defer f.Close()
	info, err := aci.Inspect(f)
	if err != nil {
		return Published{}, false, fmt.Errorf("the site holds %s, which its record does not list and which is not a valid image (%v): remove it, or publish into another site", safeio.Quote(p), err)
	}
	rec := Published{Name: info.Manifest.Name.String(), ImageID: info.ImageID, Path: p}
	rec.Version, _ = info.Manifest.Labels.Get("version")
	rec.OS, _ = info.Manifest.Labels.Get("os")
	rec.Arch, _ = info.Manifest.Labels.Get("arch")
	return rec, true, nil
}

// pins returns the image IDs a published image pins its dependencies to,
// as the image in the site says (records from before they listed them
// say nothing), or as the record says when the file cannot be read.
func pins(root *os.Root, q Published) []string {
	if root == nil {
		return q.Depends
	}
	f, err := openIn(root, q.Path)
	if err != nil {
		return q.Depends
	}
	defer f.Close()
	im, err := aci.ReadManifest(f, maxManifestRead)
	if err != nil {
		return q.Depends
	}
	var ids []string
	for _, d := range im.Dependencies {
		if d.ImageID != nil {
			ids = append(ids, d.ImageID.String())
		}
	}
	return ids
}

// maxManifestRead bounds what reading a published image's manifest may
// inflate (it is the first entry of every image nix2aci writes).
const maxManifestRead = 64 << 20

// openIn opens the regular file p of the site, without blocking and
// without leaving it.
func openIn(root *os.Root, p string) (*os.File, error) {
	f, err := root.OpenFile(filepath.FromSlash(p), os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("the site's %s is not a regular file: remove it, or publish into another site", safeio.Quote(p))
	}
	return f, nil
}

// verifyFiles checks the signature asc of the image at path with trust,
// reading the whole image (sign.VerifyWith with Full).
func verifyFiles(ctx context.Context, path, asc string, trust *sign.Trust) (*sign.Verified, error) {
	f, err := pipeline.OpenImage(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sig, err := safeio.OpenRegular(asc)
	if err != nil {
		return nil, err
	}
	defer sig.Close()
	return sign.VerifyWith(safeio.WithContext(ctx, f), sig, trust, sign.VerifyOptions{Full: true})
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// readState reads the tree's record; a tree without one is new. A record
// that is damaged or names paths outside the tree is an error: the tree
// is not what nix2aci wrote.
func readState(root *os.Root) (*site, error) {
	st := &site{Prefixes: map[string]*prefixState{}, Images: map[string]Published{}}
	// Without blocking: a FIFO in its place must not hang the publish.
	f, err := root.OpenFile(stateFile, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the site's %s: %w", stateFile, err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("the site's %s is not a regular file", stateFile)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxStateSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxStateSize || json.Unmarshal(data, st) != nil {
		return nil, fmt.Errorf("the site's %s is damaged (or over %d bytes); publish everything into a new site, or restore the file", stateFile, maxStateSize)
	}
	if st.Prefixes == nil {
		st.Prefixes = map[string]*prefixState{}
	}
	if st.Images == nil {
		st.Images = map[string]Published{}
	}
	for p, ps := range st.Prefixes {
		if ps == nil || manifest.CheckIdentifier(p) != nil {
			return nil, fmt.Errorf("the site's %s names the prefix %s, which is not an AC Identifier", stateFile, safeio.Quote(p))
		}
	}
	for p, img := range st.Images {
		if !filepath.IsLocal(p) {
			return nil, fmt.Errorf("the site's %s names %s, outside the site", stateFile, safeio.Quote(p))
		}
		for _, id := range append([]string{img.ImageID}, img.Depends...) {
			if _, err := types.NewHash(id); err != nil {
				return nil, fmt.Errorf("the site's %s gives %s the image ID %s, which is not one; publish everything into a new site, or restore the file", stateFile, safeio.Quote(p), safeio.Quote(id))
			}
		}
	}
	return st, nil
}

// renderIndex makes index.html: the discovery meta tags of every prefix
// the site serves, and a list of its images for people.
func renderIndex(st *site) []byte {
	esc := html.EscapeString
	var prefixes []string
	for p := range st.Prefixes {
		prefixes = append(prefixes, p)
	}
	sort.Strings(prefixes)
	var images []Published
	for _, im := range st.Images {
		images = append(images, im)
	}
	sort.Slice(images, func(i, j int) bool { return images[i].Path < images[j].Path })
	var buf bytes.Buffer
	buf.WriteString("<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n<title>App Container Images</title>\n")
	for _, p := range prefixes {
		fmt.Fprintf(&buf, "<meta name=\"ac-discovery\" content=\"%s %s\">\n", esc(p), esc(st.Prefixes[p].Template))
		for _, k := range st.Prefixes[p].PubKeys {
			fmt.Fprintf(&buf, "<meta name=\"ac-discovery-pubkeys\" content=\"%s %s\">\n", esc(p), esc(k))
		}
	}
	buf.WriteString("</head>\n<body>\n<h1>App Container Images</h1>\n<p>With rkt: <code>rkt trust --prefix PREFIX</code>, then <code>rkt fetch NAME:VERSION</code>.</p>\n<ul>\n")
	for _, im := range images {
		fmt.Fprintf(&buf, "<li><a href=\"%s\">%s:%s</a> (%s/%s, %s)</li>\n", esc(im.URL), esc(im.Name), esc(im.Version), esc(im.OS), esc(im.Arch), esc(im.ImageID))
	}
	buf.WriteString("</ul>\n</body>\n</html>\n")
	return buf.Bytes()
}

func copyFile(src, dst string) error {
	in, err := safeio.OpenRegular(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("copying %s into the site: %w", src, err)
	}
	return nil
}

// moveInto renames the staged file tmp (inside the site) to rel in the
// site, through root so that no link in the site leads the write outside.
func moveInto(root *os.Root, siteDir, tmp, rel string) error {
	from, err := filepath.Rel(siteDir, tmp)
	if err != nil {
		return err
	}
	if err := root.Rename(from, filepath.FromSlash(rel)); err != nil {
		return fmt.Errorf("writing %s into the site: %w", rel, err)
	}
	return nil
}

// writeInto writes data to rel in the site atomically (staged, renamed).
func writeInto(root *os.Root, siteDir, stage, rel string, data []byte) error {
	tmp, err := os.CreateTemp(stage, "file-*")
	if err != nil {
		return err
	}
	_, err = tmp.Write(data)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o644)
	}
	if err != nil {
		return fmt.Errorf("writing %s into the site: %w", rel, err)
	}
	if d := path.Dir(rel); d != "." {
		if err := root.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("writing %s into the site: %w", rel, err)
		}
	}
	return moveInto(root, siteDir, tmp.Name(), rel)
}
