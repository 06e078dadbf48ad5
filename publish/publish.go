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
// directories named by its name's components. A site has one base URL.
//
// Publishing again into the same tree adds images and keys. What the tree
// serves is read from its files (see site.go); .nix2aci-site.json records
// it as a hint, and index.html is made again from what was checked.
//
// A reader of the tree sees, at every moment, only complete images with
// their signatures and dependencies: one publish at a time writes into a
// site (a flock on its directory); everything is staged inside the site
// and checked first, then renamed into place, each image's signature
// before the image and layers before the apps on them, index.html last.
// An interrupted publish stops between two images and says which it
// published.
package publish

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/appc/spec/schema/types"

	"github.com/nix2aci/nix2aci/internal/safeio"
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

// describe names a published image as an error message does.
func describe(p Published) string {
	return fmt.Sprintf("%s version %s (%s/%s)", p.Name, safeio.Quote(p.Version), p.OS, p.Arch)
}

// Report is what Publish did.
type Report struct {
	Images    []Published `json:"images"`
	Index     string      `json:"index"`
	PublicKey string      `json:"publicKey"`
	// Prefixes are the hosts of the images published.
	Prefixes []string `json:"prefixes"`
}

// UsageError is a request that cannot be done as asked.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

// InterruptedError is a publish stopped between two images: the images
// of Report.Images are in the site, each with its signature and its
// dependencies, and index.html lists them; the others were not written.
type InterruptedError struct {
	Published, Total int
	Cause            error
}

func (e *InterruptedError) Error() string {
	return fmt.Sprintf("publishing interrupted after %d of %d images: those %d are in the site, each with its signature and its dependencies, and index.html lists them; the other %d were not written: publish again to add them",
		e.Published, e.Total, e.Published, e.Total-e.Published)
}

func (e *InterruptedError) Unwrap() error { return e.Cause }

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

// job is one image to publish.
type job struct {
	src, asc string // the image and, without a Key, its signature
	p        Published
	deps     types.Dependencies
	staged   string // the staged copy's name in the staging directory
	// sum and ascSum are the SHA-512 of the image's and the signature's
	// bytes as they were checked.
	sum, ascSum []byte
}

// testMoved, if set, is called after each file is renamed into the tree;
// testChecked after the images and the tree are checked, before staging.
var (
	testMoved   func(rel string)
	testChecked func()
)

// Publish copies images (and signatures) into the tree o.Site, with the
// public key and index.html. Each image is validated (aci.Inspect)
// first, and with no Key its signature must verify with PublicKey for
// its name: a tree never serves what rkt would refuse.
//
// Interrupted (ctx) while it moves images into place, it returns the
// Report of those it published and an *InterruptedError.
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
	fp := strings.ToLower(sign.Fingerprint(pub))
	trust := sign.NewTrust()
	trust.AddRoot(pub)

	// The images, checked before the site is touched.
	var jobs []*job
	for _, img := range images {
		j, err := checkImage(ctx, img, o.Key != nil, base.String(), strings.TrimPrefix(base.Path, "/"), trust, fp)
		if err != nil && ctx.Err() != nil {
			return nil, fmt.Errorf("publishing interrupted; nothing was written to the site: %w", context.Cause(ctx))
		}
		if err != nil {
			return nil, err
		}
		jobs = append(jobs, j)
	}
	if err := checkDuplicates(jobs); err != nil {
		return nil, err
	}
	order, err := dependencyOrder(jobs)
	if err != nil {
		return nil, err
	}

	// Then, holding the site's lock, what the tree holds.
	l, err := lockSite(ctx, o.Site)
	if err != nil {
		return nil, err
	}
	defer l.unlock()
	l.sweep()
	root := l.root
	s, err := loadSite(ctx, root, base)
	if err != nil {
		return nil, err
	}
	if err := checkDependencies(ctx, root, jobs, s, pub); err != nil {
		return nil, err
	}
	if err := checkTrees(jobs, s); err != nil {
		return nil, err
	}
	if err := checkReplacements(ctx, root, jobs, s, o.Replace); err != nil {
		return nil, err
	}

	if testChecked != nil {
		testChecked()
	}
	// Stage everything inside the site, each image read once more as it
	// is copied (and signed, with a key): the copy holds the bytes checked
	// above, by their SHA-512, so it need not be checked again.
	stage := stagePrefix + randomName()
	if err := root.Mkdir(stage, 0o700); err != nil {
		return nil, fmt.Errorf("writing into the site: %w", err)
	}
	defer root.RemoveAll(stage)
	stageDir := filepath.Join(o.Site, stage)
	if err := stageImages(ctx, jobs, o.Key, stageDir); err != nil {
		return nil, err
	}
	keyPath := path.Join(s.dir, "pubkeys", fp+".asc")
	var armored bytes.Buffer
	if err := sign.WritePublicKey(&armored, pub); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(stageDir, "key.asc"), armored.Bytes(), 0o644); err != nil {
		return nil, fmt.Errorf("writing into the site: %w", err)
	}

	// Every destination is checked before anything moves.
	dests := []string{keyPath, stateFile, "index.html"}
	for _, j := range jobs {
		dests = append(dests, j.p.Path+".asc", j.p.Path)
	}
	if err := checkDestinations(root, dests); err != nil {
		return nil, err
	}
	for _, d := range dests {
		if dir := path.Dir(d); dir != "." {
			if err := root.MkdirAll(dir, 0o755); err != nil {
				return nil, fmt.Errorf("writing into the site: %w", err)
			}
		}
	}
	move := func(from, to string) error {
		if err := root.Rename(path.Join(stage, from), to); err != nil {
			return fmt.Errorf("writing %s into the site: %w", to, err)
		}
		if testMoved != nil {
			testMoved(to)
		}
		return nil
	}

	// Move: the key, then each image, its signature first and layers
	// before the apps on them; stopping only between two images.
	rep := &Report{Index: filepath.Join(o.Site, "index.html"), PublicKey: filepath.Join(o.Site, filepath.FromSlash(keyPath))}
	var stopped error
	for n, i := range order {
		j := jobs[i]
		if ctx.Err() != nil {
			stopped = context.Cause(ctx)
			break
		}
		var err error
		if n == 0 {
			err = move("key.asc", keyPath)
			s.keys[fp] = pub
		}
		if err == nil {
			err = move(j.staged+".asc", j.p.Path+".asc")
		}
		if err == nil {
			err = move(j.staged, j.p.Path)
		}
		if err != nil {
			stopped = err
			break
		}
		s.images[j.p.Path] = j.p
		s.addKey(hostOf(j.p.Name), fp)
		rep.Images = append(rep.Images, j.p)
	}
	if len(rep.Images) == 0 {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("publishing interrupted; nothing was written to the site: %w", stopped)
		}
		return nil, fmt.Errorf("no image was published: %w", stopped)
	}
	hosts := map[string]bool{}
	for _, p := range rep.Images {
		hosts[hostOf(p.Name)] = true
	}
	rep.Prefixes = sortedKeys(hosts)

	// The record and index.html, last, from what was checked.
	state, err := json.MarshalIndent(s.record(), "", " ")
	if err == nil {
		err = os.WriteFile(filepath.Join(stageDir, "record"), state, 0o644)
	}
	if err == nil {
		err = os.WriteFile(filepath.Join(stageDir, "index"), renderIndex(s), 0o644)
	}
	if err == nil {
		err = move("record", stateFile)
	}
	if err == nil {
		err = move("index", "index.html")
	}
	if err != nil {
		return rep, fmt.Errorf("%d of %d images are published, but %s and index.html could not be written (%v): publish again", len(rep.Images), len(jobs), stateFile, err)
	}
	switch {
	case stopped == nil:
		return rep, nil
	case ctx.Err() != nil:
		return rep, &InterruptedError{Published: len(rep.Images), Total: len(jobs), Cause: stopped}
	default:
		return rep, fmt.Errorf("publishing stopped after %d of %d images: those are in the site, each with its signature and its dependencies, and index.html lists them; the others were not written: %w", len(rep.Images), len(jobs), stopped)
	}
}
