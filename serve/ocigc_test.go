package serve_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nix2aci/nix2aci/objstore"
	"github.com/nix2aci/nix2aci/objstore/objstoretest"
	"github.com/nix2aci/nix2aci/serve"
)

// pullOCI pulls the repository repo's latest tag as a client does,
// through the registry API: the manifest, then each blob it names,
// checking every digest. It returns the manifest's digest and the size
// of every blob the image needs, its manifest included.
func pullOCI(t *testing.T, e *env, repo string) (string, map[string]int64) {
	t.Helper()
	v2 := fmt.Sprintf("http://127.0.0.1:%d/v2/%s/", e.port, repo)
	resp, body := get(t, v2+"manifests/latest")
	sum := sha256.Sum256(body)
	d := "sha256:" + hex.EncodeToString(sum[:])
	if resp.StatusCode != 200 || resp.Header.Get("Docker-Content-Digest") != d {
		t.Fatalf("GET %s manifest: %s, digest %q for the bytes of %s\n%s", repo, resp.Status, resp.Header.Get("Docker-Content-Digest"), d, body)
	}
	var m struct {
		Config struct{ Digest string }
		Layers []struct{ Digest string }
	}
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("%s's manifest: %v", repo, err)
	}
	blobs := map[string]int64{d: int64(len(body))}
	for _, b := range append([]string{m.Config.Digest}, layerDigests(m.Layers)...) {
		got := mustGet(t, v2+"blobs/"+b)
		sum := sha256.Sum256(got)
		if "sha256:"+hex.EncodeToString(sum[:]) != b {
			t.Fatalf("the blob %s of %s has other bytes", b, repo)
		}
		blobs[b] = int64(len(got))
	}
	return d, blobs
}

func layerDigests(ls []struct{ Digest string }) []string {
	var out []string
	for _, l := range ls {
		out = append(out, l.Digest)
	}
	return out
}

// blobFiles are the blob files of a data directory, by digest, with
// their sizes, and their total.
func blobFiles(t *testing.T, data string) (map[string]int64, int64) {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(data, "oci", "blobs", "sha256"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	var total int64
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil || !fi.Mode().IsRegular() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		out["sha256:"+e.Name()] = fi.Size()
		total += fi.Size()
	}
	return out, total
}

// TestMaxDiskCollectsOCIImages: past MaxDisk, an OCI build removes the
// least recently pulled image, reference first, and the blobs no image
// left needs, so that the blob store stays under the bound; the layers
// it shared with an image kept stay, and that image still pulls whole.
// The image removed is built again on its next pull, with the same
// manifest digest, and the collection is counted in /metrics.
func TestMaxDiskCollectsOCIImages(t *testing.T) {
	pkgsDir, _ := filepath.Abs("testdata")
	names := []string{"tiny", "busybox", "tiny/busybox"}
	// What each image needs, from a server without a bound.
	free := start(t, func(o *serve.Options) { o.Recipes = pkgsDir })
	digests, needs := map[string]string{}, map[string]map[string]int64{}
	for _, n := range names {
		digests[n], needs[n] = pullOCI(t, free, n)
	}
	union := func(ns ...string) int64 {
		all := map[string]int64{}
		for _, n := range ns {
			for b, size := range needs[n] {
				all[b] = size
			}
		}
		var total int64
		for _, size := range all {
			total += size
		}
		return total
	}
	var shared []string
	for b := range needs["tiny"] {
		if _, ok := needs["busybox"][b]; ok {
			shared = append(shared, b)
		}
	}
	if len(shared) == 0 {
		t.Fatal("tiny and busybox share no layer: the test needs one")
	}
	// Room for tiny with either of the others, not for all three.
	bound := max(union("tiny", "busybox"), union("tiny", "tiny/busybox"))
	if union(names...) <= bound {
		t.Fatalf("the three images take %d bytes, within the bound %d", union(names...), bound)
	}

	e := start(t, func(o *serve.Options) { o.Recipes = pkgsDir; o.MaxDisk = bound })
	underBound := func(when string) map[string]int64 {
		t.Helper()
		files, total := blobFiles(t, e.data)
		if total > bound {
			t.Fatalf("%s: the blobs take %d bytes, over MaxDisk %d", when, total, bound)
		}
		return files
	}
	ref := func(n string) string {
		return filepath.Join(e.data, "oci", "refs", "127.0.0.1", n, "_"+version+"-linux-amd64")
	}
	for _, n := range []string{"tiny", "busybox"} {
		if d, _ := pullOCI(t, e, n); d != digests[n] {
			t.Fatalf("%s built with the manifest %s, and %s before: builds are not reproducible", n, d, digests[n])
		}
	}
	underBound("tiny and busybox pulled")
	// tiny pulled again: busybox is now the least recently used.
	mustGet(t, fmt.Sprintf("http://127.0.0.1:%d/v2/tiny/manifests/latest", e.port))
	if d, _ := pullOCI(t, e, "tiny/busybox"); d != digests["tiny/busybox"] {
		t.Fatalf("tiny/busybox built with another manifest than before")
	}
	files := underBound("tiny/busybox pulled")
	if _, err := os.Stat(ref("busybox")); err == nil {
		t.Fatal("busybox's reference is still there past MaxDisk")
	}
	for b := range needs["busybox"] {
		_, inTiny := needs["tiny"][b]
		_, inTB := needs["tiny/busybox"][b]
		if _, ok := files[b]; ok != (inTiny || inTB) {
			t.Errorf("the blob %s of busybox (shared with tiny %v, with tiny/busybox %v): on disk %v", b, inTiny, inTB, ok)
		}
	}
	if status, code, _ := regError(t, "GET", fmt.Sprintf("http://127.0.0.1:%d/v2/busybox/manifests/%s", e.port, digests["busybox"])); status != 404 || code != "MANIFEST_UNKNOWN" {
		t.Errorf("busybox's manifest by digest once collected: %d %s, want 404 MANIFEST_UNKNOWN", status, code)
	}
	// The images kept pull whole, tiny with the layers it shared.
	for _, n := range []string{"tiny", "tiny/busybox"} {
		if _, err := os.Stat(ref(n)); err != nil {
			t.Fatalf("%s was collected: %v", n, err)
		}
		if d, blobs := pullOCI(t, e, n); d != digests[n] || len(blobs) != len(needs[n]) {
			t.Fatalf("%s pulls as %s with %d blobs, want %s with %d", n, d, len(blobs), digests[n], len(needs[n]))
		}
	}
	if n := e.built.Load(); n != 3 {
		t.Fatalf("%d builds, want 3", n)
	}

	// busybox pulled again: built again, the same manifest.
	if d, _ := pullOCI(t, e, "busybox"); d != digests["busybox"] {
		t.Fatalf("busybox built again with the manifest %s, not %s", d, digests["busybox"])
	}
	if n := e.built.Load(); n != 4 {
		t.Fatalf("%d builds, want 4: busybox built again", n)
	}
	underBound("busybox pulled again")

	metrics := string(mustGet(t, fmt.Sprintf("http://127.0.0.1:%d/metrics", e.port)))
	m := regexp.MustCompile(`(?m)^nix2aci_serve_collected_total\{format="oci"\} (\d+)$`).FindStringSubmatch(metrics)
	if m == nil {
		t.Fatalf("/metrics has no collected OCI images:\n%s", metrics)
	}
	if n, _ := strconv.Atoi(m[1]); n < 2 {
		t.Errorf("/metrics counts %d OCI images collected, want at least 2", n)
	}
}

// TestCollectOCIHeldAndShared: the collector, on a blob store written by
// hand, removes blobs no reference names first, never a reference or a
// blob held as read (a manifest being answered, by tag or by digest, a
// blob being sent or imported) nor the image kept, and a blob only once
// no reference left names it: two references may name one manifest, and
// images share layers. A reference or a manifest it cannot read stops it
// from removing any blob.
func TestCollectOCIHeldAndShared(t *testing.T) {
	e := start(t, func(o *serve.Options) { o.MaxDisk = 1 })
	blobs := filepath.Join(e.data, "oci", "blobs", "sha256")
	os.MkdirAll(blobs, 0o755)
	put := func(b []byte) string {
		sum := sha256.Sum256(b)
		h := hex.EncodeToString(sum[:])
		if err := os.WriteFile(filepath.Join(blobs, h), b, 0o644); err != nil {
			t.Fatal(err)
		}
		return "sha256:" + h
	}
	blob := func(s string) string { return put([]byte(strings.Repeat(s, 1000))) }
	image := func(config string, layers ...string) string {
		var ls []string
		for _, l := range layers {
			ls = append(ls, fmt.Sprintf(`{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":%q,"size":1000}`, l))
		}
		return put([]byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":%q,"size":1000},"layers":[%s]}`, config, strings.Join(ls, ","))))
	}
	refRel := func(name string) string { return "oci/refs/127.0.0.1/" + name + "/_" + version + "-linux-amd64" }
	ref := func(name, m string) string {
		p := filepath.Join(e.data, filepath.FromSlash(refRel(name)))
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(m+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		serve.Touch(e.s, refRel(name))
		return refRel(name)
	}
	blobRel := func(d string) string { return "oci/blobs/sha256/" + strings.TrimPrefix(d, "sha256:") }
	there := func(rel string) bool {
		_, err := os.Stat(filepath.Join(e.data, filepath.FromSlash(rel)))
		return err == nil
	}
	shared, la, lb, lc := blob("s"), blob("a"), blob("b"), blob("c")
	ca, cb, cc := blob("1"), blob("2"), blob("3")
	ma, mb, mc := image(ca, shared, la), image(cb, shared, lb), image(cc, lc)
	orphan, imported := blob("o"), blob("i")
	// Least recently used first: a, then b and b2 naming one manifest,
	// then c.
	a, b, b2, c := ref("a", ma), ref("b", mb), ref("b/b2", mb), ref("c", mc)

	// b answered by tag, c by digest, a blob being imported.
	releases := []func(){serve.Hold(e.s, b), serve.Hold(e.s, blobRel(mc)), serve.Hold(e.s, blobRel(imported))}
	serve.Collect(e.s, "")
	for rel, want := range map[string]bool{
		blobRel(orphan): false, blobRel(imported): true,
		a: false, blobRel(ma): false, blobRel(ca): false, blobRel(la): false,
		b2: false, b: true, blobRel(mb): true, blobRel(cb): true, blobRel(lb): true, blobRel(shared): true,
		c: true, blobRel(mc): true, blobRel(cc): true, blobRel(lc): true,
	} {
		if there(rel) != want {
			t.Errorf("held: %s is there: %v, want %v", rel, there(rel), want)
		}
	}
	if there("oci/refs/127.0.0.1/a") {
		t.Error("the directory of a's references is left empty")
	}

	// Nothing held, c kept: b goes, with the layer it shared, and the
	// blob no build imports any more.
	for _, r := range releases {
		r()
	}
	serve.Collect(e.s, c)
	for rel, want := range map[string]bool{
		blobRel(imported): false, b: false, blobRel(mb): false, blobRel(cb): false, blobRel(lb): false, blobRel(shared): false,
		c: true, blobRel(mc): true, blobRel(cc): true, blobRel(lc): true,
	} {
		if there(rel) != want {
			t.Errorf("kept: %s is there: %v, want %v", rel, there(rel), want)
		}
	}
	if there("oci/refs/127.0.0.1/b") || !there("oci/refs/127.0.0.1") {
		t.Error("the empty directories of b's references are left, or the one holding c's went")
	}

	// A manifest not matching its digest: nothing is known of what its
	// reference needs, so no blob goes.
	bad := put([]byte("not a manifest"))
	os.WriteFile(filepath.Join(e.data, filepath.FromSlash(blobRel(bad))), []byte("other bytes"), 0o644)
	d := ref("d", bad)
	orphan = blob("p")
	serve.Collect(e.s, "")
	for _, rel := range []string{d, blobRel(bad), blobRel(orphan), blobRel(mc), blobRel(lc)} {
		if !there(rel) {
			t.Errorf("unsure: %s was removed", rel)
		}
	}
}

// TestMaxDiskOCIWithStore: with a bucket, MaxDisk collects the data
// directory only: an image collected there is not built again on its
// next pull but copied back from the bucket, the same manifest, its
// blobs still redirected there.
func TestMaxDiskOCIWithStore(t *testing.T) {
	g := objstoretest.Start(t)
	st := g.Bucket(t, "images", objstore.S3Options{Expiry: 5 * time.Minute})
	pkgsDir, _ := filepath.Abs("testdata")
	e := start(t, func(o *serve.Options) { o.Store = st; o.Recipes = pkgsDir; o.MaxDisk = 1 })
	v2 := fmt.Sprintf("http://127.0.0.1:%d/v2/", e.port)
	tiny := mustGet(t, v2+"tiny/manifests/latest")
	mustGet(t, v2+"busybox/manifests/latest")
	ref := filepath.Join(e.data, "oci", "refs", "127.0.0.1", "tiny", "_"+version+"-linux-amd64")
	if _, err := os.Stat(ref); err == nil {
		t.Fatal("tiny's reference is still in the data directory past MaxDisk")
	}
	if again := mustGet(t, v2+"tiny/manifests/latest"); !bytes.Equal(again, tiny) {
		t.Fatal("tiny's manifest differs once copied back from the bucket")
	}
	if n := e.built.Load(); n != 2 {
		t.Fatalf("%d builds, want 2: tiny copied back, not built", n)
	}
	var m struct{ Layers []struct{ Digest string } }
	json.Unmarshal(tiny, &m)
	for _, l := range m.Layers {
		if code, _ := redirectOf(t, v2+"tiny/blobs/"+l.Digest); code != http.StatusTemporaryRedirect {
			t.Errorf("GET of tiny's layer %s: %d, want a redirect to the bucket", l.Digest, code)
		}
	}
}
