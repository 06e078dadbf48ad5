package pipeline

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/nix2aci/nix2aci/aci"
	"github.com/nix2aci/nix2aci/fragcache"
	"github.com/nix2aci/nix2aci/internal/safeio"
	"github.com/nix2aci/nix2aci/manifest"
	"github.com/nix2aci/nix2aci/nixstore"
)

// DefaultMaxLayers is the layer budget when a request sets none. rkt pays
// per image: measured with rkt v1.30.0 (stage1-fly) on the debian corpus,
// every image below an app costs each run about 14 ms (a first run took
// 1.18x the fat image's time at 10 images, 1.54x at 20, 5.8x at 100), and
// fetching grows past about 20 (1.96x at 100). Ten keeps rkt close to one
// image while the most shared paths (libc and the like) still get layers
// of their own; layer groups are the way to more deliberate sharing.
const DefaultMaxLayers = 10

// PlanLayers groups the store paths of g, but keep (the target's own
// packages), into at most maxLayers layers: when they fit, one layer per
// path; otherwise the maxLayers-1 most popular paths (see the package doc)
// get a layer each and the rest share the last one. It returns the layers
// (single paths first, each sorted by path) and the paths that stay in the
// app image (those of keep). The paths of first, when in g, come before
// the most popular ones: each gets a layer of its own while they fit.
func PlanLayers(g *nixstore.Graph, keep []string, maxLayers int, first ...string) (layers [][]nixstore.PathInfo, rest []nixstore.PathInfo) {
	pop := popularity(g)
	kept := map[string]bool{}
	for _, k := range keep {
		kept[k] = true
	}
	isFirst := map[string]bool{}
	for _, f := range first {
		isFirst[f] = true
	}
	var cands []int
	for i, p := range g.Paths {
		if kept[p.Path] {
			rest = append(rest, p)
		} else {
			cands = append(cands, i)
		}
	}
	if maxLayers < 1 || len(cands) == 0 {
		return nil, g.Paths
	}
	sort.SliceStable(cands, func(a, b int) bool {
		pa, pb := g.Paths[cands[a]], g.Paths[cands[b]]
		if isFirst[pa.Path] != isFirst[pb.Path] {
			return isFirst[pa.Path]
		}
		if pop[cands[a]] != pop[cands[b]] {
			return pop[cands[a]] > pop[cands[b]]
		}
		if pa.NarSize != pb.NarSize {
			return pa.NarSize > pb.NarSize
		}
		return pa.Path < pb.Path
	})
	singles := cands
	var grouped []int
	if len(cands) > maxLayers {
		singles, grouped = cands[:maxLayers-1], cands[maxLayers-1:]
	}
	sort.Ints(singles)
	for _, i := range singles {
		layers = append(layers, []nixstore.PathInfo{g.Paths[i]})
	}
	if len(grouped) > 0 {
		sort.Ints(grouped)
		var group []nixstore.PathInfo
		for _, i := range grouped {
			group = append(group, g.Paths[i])
		}
		layers = append(layers, group)
	}
	return layers, rest
}

// popularity returns, for each path of g, how many paths of g reach it by
// references (itself included). Reachability sets are bitsets, filled in
// one pass over the paths in reverse topological order; a graph too large
// for them (more than 20,000 paths: 50 MB of bits) falls back to counting
// direct referrers.
func popularity(g *nixstore.Graph) []int {
	n := len(g.Paths)
	index := make(map[string]int, n)
	for i, p := range g.Paths {
		index[p.Path] = i
	}
	refs := make([][]int, n)
	for i, p := range g.Paths {
		for _, r := range p.References {
			if j, ok := index[r]; ok && j != i {
				refs[i] = append(refs[i], j)
			}
		}
	}
	pop := make([]int, n)
	if n > 20000 {
		for i := range refs {
			pop[i]++
			for _, j := range refs[i] {
				pop[j]++
			}
		}
		return pop
	}
	// reach[i] is the set of paths that reach i. A path's reachers are
	// its referrers and theirs: visit referrers before what they refer to.
	words := (n + 63) / 64
	reach := make([]uint64, n*words)
	referrers := make([][]int, n)
	indeg := make([]int, n)
	for i := range refs {
		for _, j := range refs[i] {
			referrers[j] = append(referrers[j], i)
			indeg[j]++
		}
	}
	queue := []int{}
	for i := range indeg {
		if indeg[i] == 0 {
			queue = append(queue, i)
		}
	}
	for len(queue) > 0 {
		i := queue[0]
		queue = queue[1:]
		set := reach[i*words : (i+1)*words]
		set[i/64] |= 1 << (i % 64)
		for _, j := range refs[i] {
			dst := reach[j*words : (j+1)*words]
			for w := range dst {
				dst[w] |= set[w]
			}
			if indeg[j]--; indeg[j] == 0 {
				queue = append(queue, j)
			}
		}
	}
	for i := range pop {
		set := reach[i*words : (i+1)*words]
		set[i/64] |= 1 << (i % 64) // a path in a cycle was never queued
		for _, w := range set {
			pop[i] += bits.OnesCount64(w)
		}
	}
	return pop
}

// LayerName returns the image name and version of the layer holding
// paths under prefix. A one-path layer is PREFIX/<the path's name as an AC
// Identifier>, version its store hash; a group is PREFIX/group, version
// the first 32 hex digits of the SHA-256 of its sorted store paths, one
// per line. Either way they depend on nothing but the paths.
func LayerName(prefix string, paths []nixstore.PathInfo) (name, version string, err error) {
	if len(paths) == 1 {
		id, err := manifest.Identifier(nixstore.NamePart(paths[0].Path))
		if err != nil {
			id = "path"
		}
		name = prefix + "/" + string(id)
		version = nixstore.HashPart(paths[0].Path)
	} else {
		h := sha256.New()
		for _, p := range paths {
			io.WriteString(h, p.Path+"\n")
		}
		name = prefix + "/group"
		version = hex.EncodeToString(h.Sum(nil))[:32]
	}
	return name, version, manifest.CheckIdentifier(name)
}

// DefaultLayerPrefix is where an app's layers are named when the request
// names no prefix: the app name's first component (its host, for
// discovery) followed by /nix.
func DefaultLayerPrefix(appName string) string {
	host, _, _ := strings.Cut(appName, "/")
	return host + "/nix"
}

// indexFile records, in an output directory, the layer files a build
// wrote there, so that a later build can reuse them unread.
//
// The index is input like any file in the output directory: whoever can
// write the directory can edit it. Each entry therefore carries a tag
// under the cache key (fragcache.Cache.TagRecord) over everything it claims:
// the file's name and stat data, the layer's name and labels, a digest of
// what determines its bytes (its store paths with their NAR hashes, the
// compression and level), its image ID and size, and its signature's
// signer and stat data. A file is reused only when its entry's tag
// verifies, the entry names exactly the layer this build would write, and
// the file (and signature) still has the stat data recorded; a file
// changed in any way gets a new inode or ctime, which no user can set.
// Without a key nothing is recorded and every layer is written again.
const indexFile = ".nix2aci-layers.json"

// maxIndexSize bounds what is read of the index.
const maxIndexSize = 16 << 20

type layerIndex struct {
	Layers map[string]indexEntry `json:"layers"`
}

// indexEntry is what was true of a layer file (and its signature) right
// after a build moved it into place.
type indexEntry struct {
	Name     string   `json:"name"`
	Version  string   `json:"version"`
	OS       string   `json:"os"`
	Arch     string   `json:"arch"`
	Inputs   string   `json:"inputs"` // layerInputs of what it was written from
	ImageID  string   `json:"imageID"`
	Size     int64    `json:"size"`
	File     fileStat `json:"file"`
	SignedBy string   `json:"signedBy,omitempty"` // the signing key's fingerprint
	Sig      fileStat `json:"sig,omitempty"`
	Tag      string   `json:"tag"` // hex HMAC under the cache key of file and the rest
}

// recordTagKind names the layer index's tags (fragcache.Cache.TagRecord),
// bound to the format of the images it records.
const recordTagKind = aci.FormatVersion + "\x00" + "layer index"

// message is what an entry's tag covers: the file's name and every field
// but the tag.
func (e indexEntry) message(file string) []byte {
	e.Tag = ""
	data, _ := json.Marshal(struct {
		File  string     `json:"f"`
		Entry indexEntry `json:"e"`
	}{file, e})
	return data
}

// layerInputs is a digest of what a layer's bytes depend on beyond its
// name and labels: its store paths and their NAR hashes, in order, the
// compression and level, and the image IDs it depends on.
func layerInputs(compression string, level int, paths []nixstore.PathInfo, deps []string) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%d\x00", compression, level)
	for _, p := range paths {
		fmt.Fprintf(h, "%s\x00%s\x00", p.Path, p.NarHash)
	}
	for _, d := range deps {
		fmt.Fprintf(h, "dep\x00%s\x00", d)
	}
	return hex.EncodeToString(h.Sum(nil))
}

type fileStat struct {
	Size  int64  `json:"size"`
	Ino   uint64 `json:"ino"`
	Dev   uint64 `json:"dev"`
	Mtime int64  `json:"mtime"`
	Ctime int64  `json:"ctime"`
}

func statOf(path string) (fileStat, bool) {
	fi, err := os.Lstat(path)
	if err != nil {
		return fileStat{}, false
	}
	return statFrom(fi)
}

// statFrom is the stat data of a regular file's FileInfo.
func statFrom(fi os.FileInfo) (fileStat, bool) {
	if !fi.Mode().IsRegular() {
		return fileStat{}, false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileStat{}, false
	}
	return fileStat{Size: fi.Size(), Ino: st.Ino, Dev: uint64(st.Dev), Mtime: st.Mtim.Nano(), Ctime: st.Ctim.Nano()}, true
}

// readIndex reads dir's layer index; a missing, damaged or hostile one
// reads as empty (every layer is then written again). Entries are kept
// only with a plain file name and a well-formed image ID and tag; whether
// a tag verifies is for reusable to say.
func readIndex(dir string) *layerIndex {
	idx := &layerIndex{Layers: map[string]indexEntry{}}
	data, err := safeio.ReadFile(filepath.Join(dir, indexFile), maxIndexSize)
	if err != nil {
		return idx
	}
	var got layerIndex
	if json.Unmarshal(data, &got) != nil {
		return idx
	}
	for name, e := range got.Layers {
		if isPlainACIName(name) && isImageID(e.ImageID) && len(e.Tag) == 2*sha256.Size {
			idx.Layers[name] = e
		}
	}
	return idx
}

func isImageID(s string) bool {
	hexPart, ok := strings.CutPrefix(s, "sha512-")
	if !ok || len(hexPart) != 128 {
		return false
	}
	_, err := hex.DecodeString(hexPart)
	return err == nil
}

func isPlainACIName(name string) bool {
	return name != "" && filepath.Base(name) == name && filepath.IsLocal(name) && !strings.HasPrefix(name, ".") && strings.HasSuffix(name, ".aci")
}

// reusable returns the entry of dir/name if the index vouches for the
// file as it is now, as the layer want describes (its name, labels and
// inputs), and, when signer is not empty, for a signature of it by that
// key. The entry's tag must verify under cache's key: without a key,
// nothing is reusable.
func (idx *layerIndex) reusable(dir, name string, want indexEntry, signer string, cache *fragcache.Cache) (indexEntry, bool) {
	e, ok := idx.proven(dir, name, cache)
	if !ok {
		return e, false
	}
	if e.Name != want.Name || e.Version != want.Version || e.OS != want.OS || e.Arch != want.Arch || e.Inputs != want.Inputs {
		return e, false
	}
	if signer != "" {
		if e.SignedBy != signer {
			return e, false
		}
		if st, ok := statOf(filepath.Join(dir, name+".asc")); !ok || st != e.Sig {
			return e, false
		}
	}
	return e, true
}

// recordLayers notes the files just moved into dir, each entry tagged
// under cache's key, re-reading the index on disk first (another build
// may have added to it) and replacing it atomically. Without a key it
// records nothing. The caller holds dir's lock.
func recordLayers(dir string, written map[string]indexEntry, cache *fragcache.Cache) error {
	if _, ok := cache.TagRecord(recordTagKind, nil); !ok {
		return nil
	}
	idx := readIndex(dir)
	for name, e := range written {
		st, ok := statOf(filepath.Join(dir, name))
		if !ok {
			delete(idx.Layers, name)
			continue
		}
		e.File = st
		if e.SignedBy != "" {
			if e.Sig, ok = statOf(filepath.Join(dir, name+".asc")); !ok {
				e.SignedBy = ""
			}
		}
		tag, _ := cache.TagRecord(recordTagKind, e.message(name))
		e.Tag = hex.EncodeToString(tag)
		idx.Layers[name] = e
	}
	// Forget files that are gone.
	for name := range idx.Layers {
		if _, err := os.Lstat(filepath.Join(dir, name)); errors.Is(err, os.ErrNotExist) {
			delete(idx.Layers, name)
		}
	}
	data, err := json.MarshalIndent(idx, "", " ")
	if err != nil {
		return err
	}
	return safeio.WriteFileAtomic(filepath.Join(dir, indexFile), data, 0o644)
}
