package publish_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/appc/spec/schema"
	"github.com/appc/spec/schema/types"

	"github.com/nix2aci/nix2aci/aci"
	"github.com/nix2aci/nix2aci/internal/testsupport"
	"github.com/nix2aci/nix2aci/internal/testsupport/rktfetch"
	"github.com/nix2aci/nix2aci/publish"
	"github.com/nix2aci/nix2aci/sign"
)

// A chain (layer groups, each on the one below, the app on the top) is
// published, discovered and fetched as rkt does: each image by name and
// labels to exactly the image ID pinned, and the app runs on it.
func TestChainIsPublishedAndFetched(t *testing.T) {
	work := t.TempDir()
	site := filepath.Join(work, "site")
	os.MkdirAll(site, 0o755)
	baseURL, port := server(t, site)
	key := keyOf(t)
	out := filepath.Join(work, "out")
	res := build(t, "chain", out, nil)
	if len(res.Layers) != 2 {
		t.Fatalf("the chain has %d images below the app, want 2", len(res.Layers))
	}
	if _, err := publish.Publish(context.Background(), mustExpand(t, out), publish.Options{Site: site, BaseURL: baseURL + "/acis", Key: key}); err != nil {
		t.Fatal(err)
	}
	trust := trustFor(key)
	got := filepath.Join(work, "fetched")
	os.MkdirAll(got, 0o755)
	rktfetch.Fetch(t, port, "127.0.0.1/chain", map[types.ACIdentifier]string{"version": "1.0", "os": "linux", "arch": "amd64"}, trust, got, "")
	ents, _ := os.ReadDir(got)
	if len(ents) != 3 {
		t.Errorf("fetched %d images, want the app and its 2 groups", len(ents))
	}
	runApp(t, got, filepath.Join(got, "chain-1.0-linux-amd64.aci"), "chain 1.0 reads: foo data")
}

// A dependency graph that is not a tree is refused: a diamond (rkt would
// render the image reached twice twice, the later copy covering the
// images above it), a dependency pinned by name alone (rkt would take
// whatever discovery finds), or one without a version (discovery cannot
// name one file for it).
func TestOnlyTreesArePublished(t *testing.T) {
	work := t.TempDir()
	out := filepath.Join(work, "out")
	res := build(t, "app1", out, nil)
	var baseLayer, fooLayer string
	for _, l := range res.Layers {
		if strings.Contains(l.ACI, "libfoo") {
			fooLayer = l.ACI
		} else {
			baseLayer = l.ACI
		}
	}
	baseInfo, err := aci.InspectFile(baseLayer)
	if err != nil {
		t.Fatal(err)
	}
	baseDep := func() types.Dependency {
		id, _ := types.NewHash(baseInfo.ImageID)
		return types.Dependency{ImageName: baseInfo.Manifest.Name, ImageID: id, Labels: depLabelsOf(baseInfo.Manifest)}
	}
	// The library layer now also depends on the base layer, and the app
	// on both: the base is reached twice.
	diamond := filepath.Join(work, "diamond")
	foo2 := filepath.Join(diamond, filepath.Base(fooLayer))
	rewrite(t, fooLayer, foo2, func(im *schema.ImageManifest) { im.Dependencies = types.Dependencies{baseDep()} })
	fooInfo, err := aci.InspectFile(foo2)
	if err != nil {
		t.Fatal(err)
	}
	rewrite(t, res.ACI, filepath.Join(diamond, filepath.Base(res.ACI)), func(im *schema.ImageManifest) {
		for i, d := range im.Dependencies {
			if d.ImageName == fooInfo.Manifest.Name {
				id, _ := types.NewHash(fooInfo.ImageID)
				im.Dependencies[i].ImageID = id
			}
		}
	})
	testsupport.CopyFile(t, baseLayer, filepath.Join(diamond, filepath.Base(baseLayer)))

	unpinned := filepath.Join(work, "unpinned")
	testsupport.CopyFile(t, baseLayer, filepath.Join(unpinned, filepath.Base(baseLayer)))
	testsupport.CopyFile(t, fooLayer, filepath.Join(unpinned, filepath.Base(fooLayer)))
	rewrite(t, res.ACI, filepath.Join(unpinned, filepath.Base(res.ACI)), func(im *schema.ImageManifest) { im.Dependencies[0].ImageID = nil })

	unversioned := filepath.Join(work, "unversioned")
	testsupport.CopyFile(t, baseLayer, filepath.Join(unversioned, filepath.Base(baseLayer)))
	testsupport.CopyFile(t, fooLayer, filepath.Join(unversioned, filepath.Base(fooLayer)))
	rewrite(t, res.ACI, filepath.Join(unversioned, filepath.Base(res.ACI)), func(im *schema.ImageManifest) {
		var kept types.Labels
		for _, l := range im.Dependencies[0].Labels {
			if l.Name != "version" {
				kept = append(kept, l)
			}
		}
		im.Dependencies[0].Labels = kept
	})

	for _, tc := range []struct{ dir, want string }{
		{diamond, "twice"},
		{unpinned, "by name alone"},
		{unversioned, "without a version label"},
	} {
		site := filepath.Join(work, "site-"+filepath.Base(tc.dir))
		_, err := publish.Publish(context.Background(), mustExpand(t, tc.dir), publish.Options{Site: site, BaseURL: "http://127.0.0.1/acis", Key: keyOf(t)})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", filepath.Base(tc.dir), err, tc.want)
		}
		if ents, _ := os.ReadDir(site); len(ents) != 0 {
			t.Errorf("%s: the refused publish left %d entries in the site", filepath.Base(tc.dir), len(ents))
		}
	}
}

func depLabelsOf(im *schema.ImageManifest) types.Labels {
	var out types.Labels
	for _, k := range []string{"version", "os", "arch"} {
		v, _ := im.Labels.Get(k)
		out = append(out, types.Label{Name: types.ACIdentifier(k), Value: v})
	}
	return out
}

func trustFor(key *openpgp.Entity) *sign.Trust {
	trust := sign.NewTrust()
	trust.AddPrefix("127.0.0.1", key)
	return trust
}
