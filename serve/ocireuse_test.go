package serve_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/nix2aci/nix2aci/pipeline"
	"github.com/nix2aci/nix2aci/serve"
)

// TestOCIBuildReusesBlobStore: an OCI image built after another links
// the layers the blob store holds of it instead of writing them again
// (the build says they were reused), and its manifest is the one a
// server that built nothing before writes; it pulls whole, every digest
// checked. The blob store's files of the shared layers are the ones the
// first build put there.
func TestOCIBuildReusesBlobStore(t *testing.T) {
	pkgsDir, _ := filepath.Abs("testdata")
	warm := start(t, func(o *serve.Options) { o.Recipes = pkgsDir })
	_, tiny := pullOCI(t, warm, "tiny")
	if n := warm.reused.Load(); n != 0 {
		t.Fatalf("the first image reused %d layers of an empty blob store", n)
	}
	if _, err := os.Stat(filepath.Join(warm.data, "oci", "blobs", "sha256", ".nix2aci-oci-layers.json")); err != nil {
		t.Fatalf("the blob store has no index of the layers built: %v", err)
	}
	files := map[string]os.FileInfo{}
	for d := range tiny {
		fi, err := os.Stat(filepath.Join(warm.data, "oci", "blobs", "sha256", d[len("sha256:"):]))
		if err != nil {
			t.Fatal(err)
		}
		files[d] = fi
	}
	d, blobs := pullOCI(t, warm, "tiny/busybox")
	shared := 0
	for b := range blobs {
		if old, ok := files[b]; ok {
			shared++
			fi, err := os.Stat(filepath.Join(warm.data, "oci", "blobs", "sha256", b[len("sha256:"):]))
			if err != nil || !os.SameFile(fi, old) {
				t.Errorf("the shared blob %s was replaced", b)
			}
		}
	}
	if shared == 0 {
		t.Fatal("tiny and tiny/busybox share no blob: the test needs one")
	}
	if n := warm.reused.Load(); n < 1 {
		t.Errorf("tiny/busybox reused %d layers of tiny's, want at least 1", n)
	}

	cold := start(t, func(o *serve.Options) { o.Recipes = pkgsDir })
	if dc, _ := pullOCI(t, cold, "tiny/busybox"); dc != d {
		t.Errorf("tiny/busybox built after tiny has the manifest %s, built first %s", d, dc)
	}
	if n := cold.reused.Load(); n != 0 {
		t.Errorf("a server that built nothing before reused %d layers", n)
	}
}

// TestOCIBuildHoldsBlobsItReuses: a blob an OCI build reuses is held
// from when the build looks at it, so that a collection running then
// (MaxDisk 1: everything not in use goes) leaves it, and the build links
// it; the blobs of the image collected that it does not need go.
func TestOCIBuildHoldsBlobsItReuses(t *testing.T) {
	pkgsDir, _ := filepath.Abs("testdata")
	var srv *serve.Server
	e := start(t, func(o *serve.Options) {
		o.Recipes = pkgsDir
		o.MaxDisk = 1
		build := o.Build
		o.Build = func(ctx context.Context, r pipeline.Request) (*pipeline.Result, error) {
			if r.ReuseBlobs != nil && r.ReuseBlobs.Hold != nil {
				hold := r.ReuseBlobs.Hold
				r.ReuseBlobs = &pipeline.BlobReuse{Dir: r.ReuseBlobs.Dir, Hold: func(d string) {
					hold(d)
					serve.Collect(srv, "")
				}}
			}
			return build(ctx, r)
		}
	})
	srv = e.s
	_, tiny := pullOCI(t, e, "tiny")
	_, tb := pullOCI(t, e, "tiny/busybox")
	if n := e.reused.Load(); n < 1 {
		t.Fatalf("tiny/busybox reused %d layers of tiny's while collections ran, want at least 1", n)
	}
	files, _ := blobFiles(t, e.data)
	for b := range tiny {
		if _, need := tb[b]; !need {
			if _, ok := files[b]; ok {
				t.Errorf("tiny's blob %s, which tiny/busybox does not need, was not collected", b)
			}
		}
	}
	if _, err := os.Stat(filepath.Join(e.data, "oci", "refs", "127.0.0.1", "tiny", "_"+version+"-linux-amd64")); err == nil {
		t.Error("tiny was not collected")
	}
}
