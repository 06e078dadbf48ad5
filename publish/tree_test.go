package publish_test

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/appc/spec/discovery"
	"github.com/appc/spec/schema"
	"github.com/appc/spec/schema/types"

	"github.com/nix2aci/nix2aci/aci"
	"github.com/nix2aci/nix2aci/publish"
	"github.com/nix2aci/nix2aci/sign"
)

// treeProblems is what a reader of the tree under site/acis would trip
// on: an image without its signature, or whose pinned dependencies are
// not at their discovery paths with the pinned image IDs. It returns too
// the images it saw.
func treeProblems(t *testing.T, site string) (problems, images []string) {
	t.Helper()
	dir := filepath.Join(site, "acis")
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".aci") {
			return nil
		}
		rel, _ := filepath.Rel(site, p)
		images = append(images, filepath.ToSlash(rel))
		if _, err := os.Stat(p + ".asc"); err != nil {
			problems = append(problems, rel+" has no signature")
		}
		f, err := os.Open(p)
		if err != nil {
			problems = append(problems, err.Error())
			return nil
		}
		defer f.Close()
		im, err := aci.ReadManifest(f, 0)
		if err != nil {
			problems = append(problems, rel+": "+err.Error())
			return nil
		}
		for _, dep := range im.Dependencies {
			v, _ := dep.Labels.Get("version")
			os_, _ := im.Labels.Get("os")
			arch, _ := im.Labels.Get("arch")
			dp := filepath.Join(dir, dep.ImageName.String()+"-"+v+"-"+os_+"-"+arch+".aci")
			info, err := aci.InspectFile(dp)
			if err != nil {
				problems = append(problems, rel+": its dependency "+dep.ImageName.String()+" is missing")
			} else if dep.ImageID != nil && info.ImageID != dep.ImageID.String() {
				problems = append(problems, rel+": its dependency "+dep.ImageName.String()+" has another image ID")
			}
		}
		return nil
	})
	sort.Strings(images)
	return problems, images
}

// stages lists the staging directories left in site.
func stages(site string) []string {
	m, _ := filepath.Glob(filepath.Join(site, ".nix2aci-publish-*"))
	return m
}

// ordered puts the app first: publish must still move its layers first.
func ordered(imgs []string) []string {
	var apps, layers []string
	for _, f := range imgs {
		if strings.Contains(filepath.Base(f), "_nix_") {
			layers = append(layers, f)
		} else {
			apps = append(apps, f)
		}
	}
	return append(apps, layers...)
}

// Point 6: the record is input. What it says reaches index.html only once
// checked: URLs under the base URL, keys the tree holds, images the tree
// holds; anything else in it makes publish refuse to go on.
func TestSiteRecordCannotInject(t *testing.T) {
	work, key, imgs := unsignedApp1(t)
	site := filepath.Join(work, "site")
	os.MkdirAll(site, 0o755)
	baseURL, port := server(t, site)
	o := publish.Options{Site: site, BaseURL: baseURL + "/acis", Key: key}
	if _, err := publish.Publish(context.Background(), imgs, o); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(site, ".nix2aci-site.json")
	good, _ := os.ReadFile(state)
	index, _ := os.ReadFile(filepath.Join(site, "index.html"))
	keyURL := baseURL + "/acis/pubkeys/" + strings.ToLower(sign.Fingerprint(key)) + ".asc"
	other := strings.ToLower(sign.Fingerprint(otherKey(t)))
	for _, tc := range []struct{ name, old, new string }{
		{"a javascript: image URL", `"url": "` + baseURL + `/acis/127.0.0.1/app1-1.0-linux-amd64.aci"`, `"url": "javascript:alert(1)"`},
		{"an image URL elsewhere", `"url": "` + baseURL + `/acis/127.0.0.1/app1-1.0-linux-amd64.aci"`, `"url": "https://evil.example/app1-1.0-linux-amd64.aci"`},
		{"an extra key URL", `"` + keyURL + `"`, `"` + keyURL + `", "https://evil.example/key.asc"`},
		{"a key URL elsewhere", `"` + keyURL + `"`, `"https://evil.example/acis/pubkeys/` + other + `.asc"`},
		{"markup in a name", `"name": "127.0.0.1/app1"`, `"name": "127.0.0.1/app1\"><script>x()</script>"`},
		{"another template", `/acis/{name}-{version}-{os}-{arch}.{ext}"`, `/acis/{name}-{version}.{ext}?x=<b>"`},
		{"a bad image ID", `"imageID": "sha512-`, `"imageID": "sha512-<b>`},
	} {
		os.WriteFile(state, bytes.Replace(good, []byte(tc.old), []byte(tc.new), 1), 0o644)
		if bytes.Equal(good, mustRead(t, state)) {
			t.Fatalf("%s: the record was not changed", tc.name)
		}
		_, err := publish.Publish(context.Background(), imgs, o)
		if err == nil || !strings.Contains(err.Error(), "is damaged or not written by nix2aci") || !strings.Contains(err.Error(), "remove it") {
			t.Errorf("%s: %v", tc.name, err)
		}
		if !bytes.Equal(index, mustRead(t, filepath.Join(site, "index.html"))) {
			t.Errorf("%s: index.html changed", tc.name)
		}
	}

	// Well formed, but naming a key the tree does not hold and an image
	// it does not hold: neither reaches index.html.
	forged := bytes.Replace(good, []byte(`"`+keyURL+`"`), []byte(`"`+keyURL+`", "`+baseURL+`/acis/pubkeys/`+other+`.asc"`), 1)
	forged = bytes.Replace(forged, []byte(`"images": {`), []byte(`"images": {
  "acis/127.0.0.1/ghost-6.6-linux-amd64.aci": {"name": "127.0.0.1/ghost", "version": "6.6", "os": "linux", "arch": "amd64", "imageID": "sha512-`+strings.Repeat("ab", 64)+`", "path": "acis/127.0.0.1/ghost-6.6-linux-amd64.aci", "url": "`+baseURL+`/acis/127.0.0.1/ghost-6.6-linux-amd64.aci"},`), 1)
	os.WriteFile(state, forged, 0o644)
	if _, err := publish.Publish(context.Background(), imgs, o); err != nil {
		t.Fatalf("a well-formed record: %v", err)
	}
	page := string(mustRead(t, filepath.Join(site, "index.html")))
	if strings.Contains(page, other) || strings.Contains(page, "ghost") || !strings.Contains(page, "127.0.0.1/app1:1.0") {
		t.Errorf("index.html lists what the tree does not hold:\n%s", page)
	}
	// rkt trust --prefix finds the one key publish wrote.
	app, _ := discovery.NewAppFromString("127.0.0.1/app1")
	keys, _, err := discovery.DiscoverPublicKeys(*app, nil, discovery.InsecureHTTP, port)
	if err != nil || len(keys) != 1 || keys[0] != keyURL {
		t.Errorf("discovered keys %v (%v), want only %s", keys, err, keyURL)
	}
	// Every URL in index.html is under the base URL.
	for _, m := range regexp.MustCompile(`(?:content|href)="([^"]*)"`).FindAllStringSubmatch(page, -1) {
		v := m[1]
		if i := strings.Index(v, " "); i >= 0 {
			v = v[i+1:]
		}
		if v != "utf-8" && !strings.HasPrefix(v, baseURL+"/acis/") {
			t.Errorf("index.html links to %q", m[1])
		}
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Point 7: a name or label whose URL a parser or server would decode or
// normalise is refused; nothing is written.
func TestLabelsMustBeLiteralInTheURL(t *testing.T) {
	work, key, imgs := unsignedApp1(t)
	var app string
	for _, f := range imgs {
		if strings.HasPrefix(filepath.Base(f), "app1-") {
			app = f
		}
	}
	var layers []string
	for _, f := range imgs {
		if f != app {
			layers = append(layers, f)
		}
	}
	site := filepath.Join(work, "site")
	o := publish.Options{Site: site, BaseURL: "https://example.com/acis", Key: key}
	for i, v := range []string{"1%2e0", "1%2E0", "1.0?x", "1.0#x", "1 0", "1.0+x", "1\u00e9", "1;x", "1:0", "1&x=y", "1\"0", "1'0", "1<0>", "1*"} {
		bad := filepath.Join(work, "bad", strings.Repeat("x", i+1), filepath.Base(app))
		rewrite(t, app, bad, func(im *schema.ImageManifest) { im.Labels = setLabel(im.Labels, "version", v) })
		_, err := publish.Publish(context.Background(), append([]string{bad}, layers...), o)
		var u *publish.UsageError
		if !errors.As(err, &u) || !strings.Contains(err.Error(), "version label") || !strings.Contains(err.Error(), "letters, digits and - . _ ~") {
			t.Errorf("version %q: %v", v, err)
		}
		if _, err := os.Stat(site); !os.IsNotExist(err) {
			t.Fatalf("version %q: the refused publish left %s", v, site)
		}
	}
	// Upper case, ~ and _ are literal.
	okay := filepath.Join(work, "ok", filepath.Base(app))
	rewrite(t, app, okay, func(im *schema.ImageManifest) { im.Labels = setLabel(im.Labels, "version", "1.0-RC1_b~2") })
	rep, err := publish.Publish(context.Background(), append([]string{okay}, layers...), o)
	if err != nil || rep.Images[len(rep.Images)-1].URL != "https://example.com/acis/127.0.0.1/app1-1.0-RC1_b~2-linux-amd64.aci" {
		t.Fatalf("a literal version: %v %+v", err, rep)
	}
}

func setLabel(ls types.Labels, name, value string) types.Labels {
	for i := range ls {
		if ls[i].Name.String() == name {
			ls[i].Value = value
		}
	}
	return ls
}

// Point 8, files not the record: a layer whose file is gone is not in the
// site, whatever the record says.
func TestDeletedLayersAreNotPublished(t *testing.T) {
	work, key, imgs := unsignedApp1(t)
	site := filepath.Join(work, "site")
	o := publish.Options{Site: site, BaseURL: "https://example.com/acis", Key: key}
	rep, err := publish.Publish(context.Background(), imgs, o)
	if err != nil {
		t.Fatal(err)
	}
	var app string
	for _, f := range imgs {
		if strings.HasPrefix(filepath.Base(f), "app1-") {
			app = f
		}
	}
	for _, p := range rep.Images {
		if p.Name != "127.0.0.1/app1" {
			os.Remove(filepath.Join(site, p.Path))
			os.Remove(filepath.Join(site, p.Path+".asc"))
		}
	}
	next := filepath.Join(work, "next", "app1-2.0-linux-amd64.aci")
	rewrite(t, app, next, func(im *schema.ImageManifest) { im.Labels = setLabel(im.Labels, "version", "2.0") })
	_, err = publish.Publish(context.Background(), []string{next}, o)
	if err == nil || !strings.Contains(err.Error(), "which is neither being published nor in the site") {
		t.Fatalf("the next version, its layers deleted: %v", err)
	}
	if _, err := os.Stat(filepath.Join(site, "acis", "127.0.0.1", "app1-2.0-linux-amd64.aci")); err == nil {
		t.Error("the app was published without its layers")
	}
	if page := string(mustRead(t, filepath.Join(site, "index.html"))); !strings.Contains(page, "app1:1.0") {
		t.Errorf("index.html:\n%s", page)
	}
}

// Point 8, pins from the tree: with the record gone, --replace still
// refuses to replace a layer an app in the tree pins, and the record is
// rebuilt from the tree's signed images.
func TestPinsAreReadFromTheTree(t *testing.T) {
	work, key, imgs := unsignedApp1(t)
	site := filepath.Join(work, "site")
	o := publish.Options{Site: site, BaseURL: "https://example.com/acis", Key: key, Replace: true}
	if _, err := publish.Publish(context.Background(), imgs, o); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(site, ".nix2aci-site.json"))
	var layer string
	for _, f := range imgs {
		if strings.Contains(filepath.Base(f), "_libfoo-") {
			layer = filepath.Join(work, "changed", filepath.Base(f))
			annotate(t, f, layer)
		}
	}
	before := mustRead(t, filepath.Join(site, "index.html"))
	_, err := publish.Publish(context.Background(), []string{layer}, o)
	if err == nil || !strings.Contains(err.Error(), "127.0.0.1/app1 version 1.0 (linux/amd64) pins 127.0.0.1/nix/libfoo-2.0") {
		t.Fatalf("replacing a pinned layer, the record gone: %v", err)
	}
	if problems, _ := treeProblems(t, site); len(problems) > 0 {
		t.Fatalf("the tree: %v", problems)
	}
	if !bytes.Equal(before, mustRead(t, filepath.Join(site, "index.html"))) {
		t.Error("the refused publish changed index.html")
	}
	// Publishing anything rebuilds the record and index.html from the
	// tree: the app and its layers are listed again.
	other := filepath.Join(work, "out2")
	build(t, "app2", other, nil)
	if _, err := publish.Publish(context.Background(), mustExpand(t, other), o); err != nil {
		t.Fatal(err)
	}
	page := string(mustRead(t, filepath.Join(site, "index.html")))
	for _, want := range []string{"127.0.0.1/app1:1.0", "127.0.0.1/app2:1.0", "127.0.0.1/nix/libfoo-2.0:"} {
		if !strings.Contains(page, want) {
			t.Errorf("index.html lacks %s:\n%s", want, page)
		}
	}
}

// Point 9: publishes into one site run one at a time; none loses another's
// work.
func TestConcurrentPublishesSerialise(t *testing.T) {
	work, key, imgs := unsignedApp1(t)
	out2 := filepath.Join(work, "out2")
	buildNamed(t, "app2", "localhost/app2", out2, nil)
	imgs2 := mustExpand(t, out2)
	var app string
	for _, f := range imgs {
		if strings.HasPrefix(filepath.Base(f), "app1-") {
			app = f
		}
	}
	changed := filepath.Join(work, "changed", filepath.Base(app))
	annotate(t, app, changed)
	var changedSet []string
	for _, f := range imgs {
		if f != app {
			changedSet = append(changedSet, f)
		}
	}
	changedSet = append(changedSet, changed)

	for round := 0; round < 2; round++ {
		site := filepath.Join(work, "site", strings.Repeat("x", round+1))
		errs := parallel(func() error {
			_, err := publish.Publish(context.Background(), imgs, publish.Options{Site: site, BaseURL: "https://example.com/acis", Key: key})
			return err
		}, func() error {
			_, err := publish.Publish(context.Background(), imgs2, publish.Options{Site: site, BaseURL: "https://example.com/acis", Key: key})
			return err
		})
		if errs[0] != nil || errs[1] != nil {
			t.Fatalf("two hosts into one site: %v", errs)
		}
		page := string(mustRead(t, filepath.Join(site, "index.html")))
		state := string(mustRead(t, filepath.Join(site, ".nix2aci-site.json")))
		for _, want := range []string{"127.0.0.1/app1", "localhost/app2", `content="127.0.0.1 `, `content="localhost `} {
			if !strings.Contains(page, want) {
				t.Errorf("round %d: index.html lacks %s", round, want)
			}
		}
		for _, want := range []string{`"127.0.0.1/app1"`, `"localhost/app2"`} {
			if !strings.Contains(state, want) {
				t.Errorf("round %d: the record lacks %s", round, want)
			}
		}

		// One name and version, two image IDs: one of them is refused.
		site = filepath.Join(work, "same", strings.Repeat("x", round+1))
		errs = parallel(func() error {
			_, err := publish.Publish(context.Background(), imgs, publish.Options{Site: site, BaseURL: "https://example.com/acis", Key: key})
			return err
		}, func() error {
			_, err := publish.Publish(context.Background(), changedSet, publish.Options{Site: site, BaseURL: "https://example.com/acis", Key: key})
			return err
		})
		if (errs[0] == nil) == (errs[1] == nil) {
			t.Fatalf("round %d: one version, two contents, at once: %v", round, errs)
		}
		for _, err := range errs {
			if err != nil && !strings.Contains(err.Error(), "is published already with image ID") {
				t.Errorf("round %d: %v", round, err)
			}
		}
	}
}

func parallel(fs ...func() error) []error {
	errs := make([]error, len(fs))
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i, f := range fs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs[i] = f()
		}()
	}
	close(start)
	wg.Wait()
	return errs
}

// Point 10: a reader of the tree sees, after every single rename, only
// images with their signatures and their dependencies.
func TestReadersSeeOnlyCompleteImages(t *testing.T) {
	work, key, imgs := unsignedApp1(t)
	site := filepath.Join(work, "site")
	var seen []string
	defer publish.SetMovedHook(func(rel string) {
		seen = append(seen, rel)
		if problems, _ := treeProblems(t, site); len(problems) > 0 {
			t.Errorf("after %s: %v", rel, problems)
		}
	})()
	if _, err := publish.Publish(context.Background(), ordered(imgs), publish.Options{Site: site, BaseURL: "https://example.com/acis", Key: key}); err != nil {
		t.Fatal(err)
	}
	if len(seen) != 2*len(imgs)+3 || seen[len(seen)-1] != "index.html" {
		t.Errorf("renames: %v", seen)
	}
}

// Point 10: interrupted between two images, publish says exactly which it
// published; they are complete and listed; the next publish adds the rest.
func TestInterruptedPublishSaysWhatItPublished(t *testing.T) {
	work, key, imgs := unsignedApp1(t)
	site := filepath.Join(work, "site")
	o := publish.Options{Site: site, BaseURL: "https://example.com/acis", Key: key}
	ctx, cancel := context.WithCancelCause(context.Background())
	restore := publish.SetMovedHook(func(rel string) {
		if strings.HasSuffix(rel, ".aci") {
			cancel(errors.New("SIGTERM"))
		}
	})
	rep, err := publish.Publish(ctx, ordered(imgs), o)
	restore()
	var ie *publish.InterruptedError
	if !errors.As(err, &ie) || rep == nil || len(rep.Images) != 1 || ie.Published != 1 || ie.Total != len(imgs) {
		t.Fatalf("interrupted: %v, %+v", err, rep)
	}
	if !strings.Contains(err.Error(), "after 1 of 3 images") {
		t.Errorf("message: %v", err)
	}
	problems, images := treeProblems(t, site)
	if len(problems) > 0 || len(images) != 1 || images[0] != rep.Images[0].Path {
		t.Errorf("the tree holds %v (%v); the report says %s", images, problems, rep.Images[0].Path)
	}
	if page := string(mustRead(t, filepath.Join(site, "index.html"))); !strings.Contains(page, rep.Images[0].Name) {
		t.Errorf("index.html does not list what was published:\n%s", page)
	}
	if s := stages(site); len(s) != 0 {
		t.Errorf("staging left: %v", s)
	}
	// Interrupted before any image moved: nothing at all.
	empty := filepath.Join(work, "empty")
	ctx, cancel = context.WithCancelCause(context.Background())
	cancel(errors.New("SIGINT"))
	if _, err := publish.Publish(ctx, imgs, publish.Options{Site: empty, BaseURL: o.BaseURL, Key: key}); err == nil || !strings.Contains(err.Error(), "nothing was written") {
		t.Errorf("interrupted at once: %v", err)
	}
	if _, err := os.Stat(empty); !os.IsNotExist(err) {
		t.Errorf("interrupted at once, the site was left: %v", err)
	}
	// Then the rest.
	rep, err = publish.Publish(context.Background(), imgs, o)
	if err != nil {
		t.Fatal(err)
	}
	if problems, images := treeProblems(t, site); len(problems) > 0 || len(images) != len(imgs) {
		t.Errorf("after publishing again: %v %v", images, problems)
	}
}

// Point 10: every destination is checked before anything moves: a
// directory where a signature must go leaves the tree as it was.
func TestADirectoryInTheWayChangesNothing(t *testing.T) {
	work, key, imgs := unsignedApp1(t)
	site := filepath.Join(work, "site")
	blocker := filepath.Join(site, "acis", "127.0.0.1", "app1-1.0-linux-amd64.aci.asc")
	os.MkdirAll(blocker, 0o755)
	_, err := publish.Publish(context.Background(), ordered(imgs), publish.Options{Site: site, BaseURL: "https://example.com/acis", Key: key})
	if err == nil || !strings.Contains(err.Error(), "a directory at") || !strings.Contains(err.Error(), "remove it") {
		t.Fatalf("a directory in the way: %v", err)
	}
	if _, images := treeProblems(t, site); len(images) != 0 {
		t.Errorf("the tree holds %v", images)
	}
	if ents, _ := os.ReadDir(site); len(ents) != 1 {
		t.Errorf("the site holds %d entries", len(ents))
	}
}

// Point 10: a publish killed outright (SIGKILL) between two renames leaves
// a tree a reader can use, and a staging directory that the next publish
// removes.
func TestKilledPublishIsCleanedUp(t *testing.T) {
	if os.Getenv("PUBLISH_HELPER_SITE") != "" {
		helperPublishAndDie(t)
		return
	}
	work, key, imgs := unsignedApp1(t)
	site := filepath.Join(work, "site")
	keyFile := filepath.Join(work, "key.asc")
	var armored bytes.Buffer
	sign.WritePrivateKey(&armored, key)
	os.WriteFile(keyFile, armored.Bytes(), 0o600)
	cmd := exec.Command(os.Args[0], "-test.run=^TestKilledPublishIsCleanedUp$")
	cmd.Env = append(os.Environ(), "PUBLISH_HELPER_SITE="+site, "PUBLISH_HELPER_KEY="+keyFile, "PUBLISH_HELPER_IMAGES="+strings.Join(ordered(imgs), "\n"))
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("the helper was not killed: %v\n%s", err, out)
	}
	problems, images := treeProblems(t, site)
	if len(problems) > 0 || len(images) != 1 {
		t.Errorf("after SIGKILL the tree holds %v: %v", images, problems)
	}
	if len(stages(site)) != 1 {
		t.Fatalf("want the killed publish's staging directory, got %v", stages(site))
	}
	if _, err := publish.Publish(context.Background(), imgs, publish.Options{Site: site, BaseURL: "https://example.com/acis", Key: key}); err != nil {
		t.Fatal(err)
	}
	if s := stages(site); len(s) != 0 {
		t.Errorf("staging directories left: %v", s)
	}
	if problems, images := treeProblems(t, site); len(problems) > 0 || len(images) != len(imgs) {
		t.Errorf("after publishing again: %v %v", images, problems)
	}
}

// helperPublishAndDie publishes, and kills itself once the first image is
// in place.
func helperPublishAndDie(t *testing.T) {
	data, err := os.ReadFile(os.Getenv("PUBLISH_HELPER_KEY"))
	if err != nil {
		t.Fatal(err)
	}
	key, err := sign.ReadSigningKey(bytes.NewReader(data), nil)
	if err != nil {
		t.Fatal(err)
	}
	publish.SetMovedHook(func(rel string) {
		if path.Ext(rel) == ".aci" {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
		}
	})
	publish.Publish(context.Background(), strings.Split(os.Getenv("PUBLISH_HELPER_IMAGES"), "\n"), publish.Options{Site: os.Getenv("PUBLISH_HELPER_SITE"), BaseURL: "https://example.com/acis", Key: key})
	t.Fatal("not killed")
}

// A layer in the tree proven once (publishing an app on it) is not
// believed again once its bytes change, even with its size and
// modification time as they were: the next app on it is refused.
func TestChangedTreeLayerIsReadAgain(t *testing.T) {
	work, key, imgs := unsignedApp1(t)
	site := filepath.Join(work, "site")
	o := publish.Options{Site: site, BaseURL: "https://example.com/acis", Key: key}
	if _, err := publish.Publish(context.Background(), imgs, o); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(work, "out2")
	res := build(t, "app2", other, nil)
	// The app alone: its layer is the tree's, verified (and remembered).
	if _, err := publish.Publish(context.Background(), []string{res.ACI}, o); err != nil {
		t.Fatal(err)
	}
	layers, _ := filepath.Glob(filepath.Join(site, "acis", "127.0.0.1", "nix", "libfoo-*.aci"))
	if len(layers) != 1 {
		t.Fatalf("the layer in the tree: %v", layers)
	}
	fi, err := os.Stat(layers[0])
	if err != nil {
		t.Fatal(err)
	}
	b := mustRead(t, layers[0])
	b[len(b)/2] ^= 0xff
	if err := os.WriteFile(layers[0], b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(layers[0], fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	_, err = publish.Publish(context.Background(), []string{res.ACI}, o)
	if err == nil || !strings.Contains(err.Error(), "not a complete image signed by a key the site publishes") {
		t.Fatalf("an app on a layer changed in the tree: %v", err)
	}
}

// TestChangedTreeManifestIsReadAgain: what a tree file's manifest says is
// remembered between publishes in one process (a server publishing into
// a tree of thousands of images), but a file rewritten in place, even to
// the same size and modification time, is read again: index.html then
// lists only what the files say.
func TestChangedTreeManifestIsReadAgain(t *testing.T) {
	work, key, imgs := unsignedApp1(t)
	site := filepath.Join(work, "site")
	o := publish.Options{Site: site, BaseURL: "https://example.com/acis", Key: key}
	if _, err := publish.Publish(context.Background(), imgs, o); err != nil {
		t.Fatal(err)
	}
	res := build(t, "app2", filepath.Join(work, "out2"), nil)
	if _, err := publish.Publish(context.Background(), []string{res.ACI}, o); err != nil {
		t.Fatal(err)
	}
	if page := string(mustRead(t, filepath.Join(site, "index.html"))); !strings.Contains(page, "127.0.0.1/app1:1.0") {
		t.Fatalf("index.html lacks app1:\n%s", page)
	}
	// app1's file now holds app2's image, cut or padded to app1's size,
	// with app1's modification time: only its change time tells.
	dir := filepath.Join(site, "acis", "127.0.0.1")
	app1 := filepath.Join(dir, "app1-1.0-linux-amd64.aci")
	fi, err := os.Stat(app1)
	if err != nil {
		t.Fatal(err)
	}
	b := mustRead(t, filepath.Join(dir, "app2-1.0-linux-amd64.aci"))
	b = append(b, make([]byte, max(0, int(fi.Size())-len(b)))...)[:fi.Size()]
	if err := os.WriteFile(app1, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(app1, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	if _, err := publish.Publish(context.Background(), []string{res.ACI}, o); err != nil {
		t.Fatal(err)
	}
	if page := string(mustRead(t, filepath.Join(site, "index.html"))); strings.Contains(page, "127.0.0.1/app1:1.0") {
		t.Fatalf("index.html lists app1, whose file now says app2:\n%s", page)
	}
}
