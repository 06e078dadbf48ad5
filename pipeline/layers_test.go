package pipeline

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/nix2aci/nix2aci/aci"
	"github.com/nix2aci/nix2aci/fragcache"
	"github.com/nix2aci/nix2aci/manifest"
	"github.com/nix2aci/nix2aci/nixstore"
)

func sp(name string) string { return "/nix/store/" + strings.Repeat(name[:1], 32) + "-" + name }

// graph builds a closure from "path: references" pairs.
func graph(edges map[string][]string, sizes map[string]int64) *nixstore.Graph {
	g := &nixstore.Graph{}
	for p, refs := range edges {
		info := nixstore.PathInfo{Path: sp(p), NarSize: sizes[p]}
		for _, r := range refs {
			info.References = append(info.References, sp(r))
		}
		g.Paths = append(g.Paths, info)
	}
	sortPaths(g)
	return g
}

func sortPaths(g *nixstore.Graph) {
	for i := range g.Paths {
		for j := i + 1; j < len(g.Paths); j++ {
			if g.Paths[j].Path < g.Paths[i].Path {
				g.Paths[i], g.Paths[j] = g.Paths[j], g.Paths[i]
			}
		}
	}
}

func names(ps []nixstore.PathInfo) string {
	var out []string
	for _, p := range ps {
		out = append(out, nixstore.NamePart(p.Path))
	}
	return strings.Join(out, " ")
}

func TestPlanLayersPrefersDeepPaths(t *testing.T) {
	// app -> web -> ssl -> libc, app -> libc, app -> zlib -> libc
	edges := map[string][]string{"app": {"web", "libc", "zlib"}, "web": {"ssl"}, "ssl": {"libc"}, "zlib": {"libc"}, "libc": {"libc"}}
	sizes := map[string]int64{"web": 10, "ssl": 30, "zlib": 20, "libc": 5}
	g := graph(edges, sizes)
	pop := popularity(g)
	want := map[string]int{"app": 1, "web": 2, "ssl": 3, "zlib": 2, "libc": 5}
	for i, p := range g.Paths {
		if n := nixstore.NamePart(p.Path); pop[i] != want[n] {
			t.Errorf("popularity of %s: %d, want %d", n, pop[i], want[n])
		}
	}
	for _, tc := range []struct {
		budget int
		layers string
	}{
		{1, "[libc ssl web zlib]"},
		{2, "libc [ssl web zlib]"},
		{3, "libc ssl [web zlib]"}, // zlib and web tie; zlib is larger, but two are left
		{4, "libc ssl web zlib"},
		{10, "libc ssl web zlib"},
	} {
		layers, rest := PlanLayers(g, []string{sp("app")}, tc.budget)
		if got := layerNames(layers); got != tc.layers {
			t.Errorf("budget %d: layers %q, want %q", tc.budget, got, tc.layers)
		}
		if got := names(rest); got != "app" {
			t.Errorf("budget %d: app image %q, want app", tc.budget, got)
		}
	}
	// Another app on the same libraries: libc comes first whatever sits
	// above it.
	other := graph(map[string][]string{"cli": {"libc", "zlib"}, "zlib": {"libc"}, "libc": nil}, nil)
	if layers, _ := PlanLayers(other, []string{sp("cli")}, 2); layerNames(layers) != "libc zlib" {
		t.Errorf("other app's layers: %s", layerNames(layers))
	}
	if layers, _ := PlanLayers(g, []string{sp("app")}, 3); layers[0][0].Path != sp("libc") || layers[1][0].Path != sp("ssl") {
		t.Errorf("the most popular paths get layers of their own: %s", layerNames(layers))
	}
}

func layerNames(ls [][]nixstore.PathInfo) string {
	var out []string
	for _, l := range ls {
		if len(l) == 1 {
			out = append(out, names(l))
		} else {
			out = append(out, "["+names(l)+"]")
		}
	}
	return strings.Join(out, " ")
}

func TestLayerNames(t *testing.T) {
	for in, want := range map[string]string{
		"/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-glibc-2.36":          "example.com/nix/glibc-2.36",
		"/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-Foo_Bar+baz-1.0":     "example.com/nix/foo_bar-baz-1.0",
		"/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-python3.11-requests": "example.com/nix/python3.11-requests",
	} {
		got, version, err := LayerName("example.com/nix", []nixstore.PathInfo{{Path: in}})
		if err != nil || got != want || version != strings.Repeat("a", 32) {
			t.Errorf("LayerName(%s) = %q, %q, %v; want %q", in, got, version, err, want)
		}
	}
	group := []nixstore.PathInfo{{Path: sp("libc")}, {Path: sp("zlib")}}
	name, v1, err := LayerName("example.com/nix", group)
	if err != nil || name != "example.com/nix/group" || len(v1) != 32 {
		t.Errorf("group layer: %q %q %v", name, v1, err)
	}
	if _, v2, _ := LayerName("example.com/nix", group[:1]); v2 == v1 {
		t.Error("a group's version does not depend on its paths")
	}
	if DefaultLayerPrefix("example.com/app") != "example.com/nix" || DefaultLayerPrefix("busybox") != "busybox/nix" {
		t.Error("default layer prefix")
	}
}

// keyedCache returns a cache whose key tags layer index entries.
func keyedCache(t testing.TB) *fragcache.Cache {
	t.Helper()
	c, err := fragcache.OpenCache(filepath.Join(t.TempDir(), "cache"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.LoadKey(filepath.Join(t.TempDir(), "key")); err != nil {
		t.Fatal(err)
	}
	return c
}

// The layer index is read as hostile input: names that are not plain
// .aci file names, damaged JSON, a huge file or a FIFO make it empty (so
// layers are written again), never a path outside the directory.
func TestLayerIndexIsUntrusted(t *testing.T) {
	dir := t.TempDir()
	id := "sha512-" + strings.Repeat("0", 128)
	tag := strings.Repeat("ab", 32)
	write := func(s string) {
		os.Remove(filepath.Join(dir, indexFile))
		if err := os.WriteFile(filepath.Join(dir, indexFile), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	entry := `{"imageID":"` + id + `","tag":"` + tag + `"}`
	write(`{"layers":{"../evil.aci":` + entry + `,"/etc/x.aci":` + entry + `,"ok.aci":` + entry + `,"bad.aci":{"imageID":"md5-1","tag":"` + tag + `"},"untagged.aci":{"imageID":"` + id + `"}}}`)
	idx := readIndex(dir)
	if len(idx.Layers) != 1 || idx.Layers["ok.aci"].ImageID != id {
		t.Errorf("index kept %v", idx.Layers)
	}
	for _, s := range []string{"{", strings.Repeat(" ", maxIndexSize+1)} {
		write(s)
		if len(readIndex(dir).Layers) != 0 {
			t.Errorf("a damaged or huge index was read")
		}
	}
	os.Remove(filepath.Join(dir, indexFile))
	if err := syscall.Mkfifo(filepath.Join(dir, indexFile), 0o644); err != nil {
		t.Fatal(err)
	}
	if len(readIndex(dir).Layers) != 0 { // and it returned: no blocking
		t.Error("a FIFO index was read")
	}
}

// An entry is believed only as its key's holder wrote it, for the very
// layer asked for, while the file is as it was.
func TestLayerIndexEntriesAreProven(t *testing.T) {
	dir := t.TempDir()
	id := "sha512-" + strings.Repeat("0", 128)
	cache := keyedCache(t)
	want := indexEntry{Name: "example.com/nix/l", Version: "v", OS: "linux", Arch: "amd64", Inputs: layerInputs("gzip", 6, []nixstore.PathInfo{{Path: sp("l"), NarHash: "00"}}, nil)}
	record := func(c *fragcache.Cache) {
		os.Remove(filepath.Join(dir, indexFile))
		e := want
		e.ImageID, e.Size = id, 5
		if err := recordLayers(dir, map[string]indexEntry{"l.aci": e}, c); err != nil {
			t.Fatal(err)
		}
	}
	reusable := func(w indexEntry, signer string, c *fragcache.Cache) bool {
		_, ok := readIndex(dir).reusable(dir, "l.aci", w, signer, c)
		return ok
	}
	os.WriteFile(filepath.Join(dir, "l.aci"), []byte("layer"), 0o644)
	record(cache)
	if !reusable(want, "", cache) {
		t.Fatal("an untouched layer is not reused")
	}
	if reusable(want, "FINGERPRINT", cache) {
		t.Error("an unsigned layer was reused for a signed build")
	}
	if reusable(want, "", keyedCache(t)) || reusable(want, "", nil) {
		t.Error("an entry was believed without its key")
	}
	for what, w := range map[string]func(*indexEntry){
		"another name":    func(e *indexEntry) { e.Name = "other.example/nix/l" },
		"another version": func(e *indexEntry) { e.Version = "w" },
		"another arch":    func(e *indexEntry) { e.Arch = "aarch64" },
		"other inputs":    func(e *indexEntry) { e.Inputs = layerInputs("gzip", 9, nil, nil) },
	} {
		other := want
		w(&other)
		if reusable(other, "", cache) {
			t.Errorf("a layer recorded for %s was reused", what)
		}
	}
	// An edited entry: the tag no longer covers it.
	edit := func(f func(map[string]any)) {
		data, _ := os.ReadFile(filepath.Join(dir, indexFile))
		var doc map[string]any
		json.Unmarshal(data, &doc)
		f(doc["layers"].(map[string]any)["l.aci"].(map[string]any))
		data, _ = json.Marshal(doc)
		os.WriteFile(filepath.Join(dir, indexFile), data, 0o644)
	}
	edit(func(e map[string]any) { e["imageID"] = "sha512-" + strings.Repeat("1", 128) })
	if reusable(want, "", cache) {
		t.Error("an entry whose image ID was edited was reused")
	}
	// Without a key nothing is recorded.
	record(nil)
	if _, err := os.Stat(filepath.Join(dir, indexFile)); err == nil {
		t.Error("an index was written without a key to tag it")
	}
	record(cache)
	os.WriteFile(filepath.Join(dir, "l.aci"), []byte("LAYER"), 0o644)
	if reusable(want, "", cache) {
		t.Error("a rewritten layer was reused")
	}
}

// FuzzLayerIndex: whatever the index holds, it yields only plain .aci
// names with well-formed image IDs, and nothing in it is reusable unless
// this key tagged it.
func FuzzLayerIndex(f *testing.F) {
	dir := f.TempDir()
	cache := keyedCache(f)
	os.WriteFile(filepath.Join(dir, "l.aci"), []byte("layer"), 0o644)
	id := "sha512-" + strings.Repeat("0", 128)
	want := indexEntry{Name: "example.com/nix/l", Version: "v", OS: "linux", Arch: "amd64", Inputs: "x"}
	e := want
	e.ImageID, e.Size = id, 5
	recordLayers(dir, map[string]indexEntry{"l.aci": e}, keyedCache(f)) // another key's
	seed, _ := os.ReadFile(filepath.Join(dir, indexFile))
	f.Add(seed)
	f.Add([]byte(`{"layers":{"../x.aci":{"imageID":"` + id + `","tag":"` + strings.Repeat("0", 64) + `"}}}`))
	f.Add([]byte(`{"layers":null}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(filepath.Join(dir, indexFile), data, 0o644); err != nil {
			t.Fatal(err)
		}
		idx := readIndex(dir)
		for name, e := range idx.Layers {
			if !isPlainACIName(name) || filepath.Base(name) != name || !isImageID(e.ImageID) {
				t.Fatalf("index kept %q: %+v", name, e)
			}
		}
		if _, ok := idx.reusable(dir, "l.aci", want, "", cache); ok {
			t.Fatal("an entry this key did not tag was believed")
		}
	})
}

// PlanGroups makes a chain: each group holds its closure less what lies
// below it, the lowest stands on the base, the app on the top group and
// on its popularity layers; no path is in two images.
func TestPlanGroups(t *testing.T) {
	// app -> web -> ssl -> libc, app -> zlib -> libc
	g := graph(map[string][]string{"app": {"web", "zlib"}, "web": {"ssl"}, "ssl": {"libc"}, "zlib": {"libc"}, "libc": nil}, nil)
	app, _ := manifest.NewLayer("example.com/app", "1", "x86_64-linux")
	base := &Base{Name: "example.com/base", ImageID: "sha512-" + strings.Repeat("0", 128), Paths: map[string]bool{sp("libc"): true}}
	plan, err := PlanGroups(Layering{Closure: g, App: []string{sp("app")}, AppRoots: []string{sp("app")},
		Groups: []Group{{Name: "tls", Roots: []string{sp("ssl")}}, {Name: "web", Roots: []string{sp("web")}}},
		Base:   base, Prefix: "example.com/nix", System: "x86_64-linux", Budget: 5}, app, aci.Image{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, im := range plan.Images {
		var paths []string
		for _, p := range im.Content.Closure.Paths {
			paths = append(paths, nixstore.NamePart(p.Path))
		}
		var deps []string
		if im.OnBase {
			deps = append(deps, "base")
		}
		for _, d := range im.DependsOn {
			deps = append(deps, d.Manifest.Name.String())
		}
		got = append(got, fmt.Sprintf("%s%v<-%v", im.Manifest.Name, paths, deps))
	}
	want := []string{
		"example.com/nix/tls[ssl]<-[base]",
		"example.com/nix/web[web]<-[example.com/nix/tls]",
		"example.com/nix/zlib[zlib]<-[]",
		"example.com/app[app]<-[example.com/nix/web example.com/nix/zlib]",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("plan:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// A plan with a path in two images is refused.
	plan.Images[2].Content.Closure.Paths = append(plan.Images[2].Content.Closure.Paths, nixstore.PathInfo{Path: sp("ssl")})
	if err := plan.check(); err == nil || !strings.Contains(err.Error(), "is in both") {
		t.Errorf("a path in two images: %v", err)
	}
	// A base the app shares nothing with is refused.
	base.Paths = map[string]bool{sp("other"): true}
	if _, err := PlanGroups(Layering{Closure: g, App: []string{sp("app")}, AppRoots: []string{sp("app")}, Base: base, Prefix: "example.com/nix", System: "x86_64-linux"}, app, aci.Image{}); err == nil || !strings.Contains(err.Error(), "shares no store path") {
		t.Errorf("a base sharing nothing: %v", err)
	}
}

// An environment joining the packages asked for (nix2aci serve's target)
// refers to each of them once: by popularity alone a package used by
// nothing else falls into the last, shared layer, and a new version of it
// changes that layer. Given first, each such package gets a layer of its
// own ahead of the most popular paths.
func TestPlanLayersPutsFirstPathsInLayersOfTheirOwn(t *testing.T) {
	// env -> app -> {ssl, zlib} -> libc, env -> tool -> libc
	edges := map[string][]string{"env": {"app", "tool"}, "app": {"ssl", "zlib"}, "tool": {"libc"}, "ssl": {"libc"}, "zlib": {"libc"}, "libc": {"libc"}}
	g := graph(edges, map[string]int64{"app": 1, "tool": 1, "ssl": 30, "zlib": 20, "libc": 5})
	keep := []string{sp("env")}
	layers, _ := PlanLayers(g, keep, 3)
	if got := layerNames(layers); got != "libc ssl [app tool zlib]" {
		t.Fatalf("by popularity: %q", got)
	}
	first := directReferences(g, keep)
	if got := fmt.Sprint(first); got != fmt.Sprint([]string{sp("app"), sp("tool")}) {
		t.Fatalf("direct references of env: %v", first)
	}
	layers, rest := PlanLayers(g, keep, 3, first...)
	if got := layerNames(layers); got != "app tool [libc ssl zlib]" {
		t.Errorf("with first: layers %q, want each package asked for in a layer of its own", got)
	}
	if got := names(rest); got != "env" {
		t.Errorf("with first: app image %q, want env", got)
	}
	layers, _ = PlanLayers(g, keep, 10, first...)
	if got := layerNames(layers); got != "app libc ssl tool zlib" {
		t.Errorf("budget 10: %q", got)
	}
}
