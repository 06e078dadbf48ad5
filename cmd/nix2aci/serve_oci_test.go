package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/nix2aci/nix2aci/internal/testsupport"
)

// Two replicas on one bucket answer the registry API: 20 concurrent
// manifest requests for one new image, spread over both, build it once,
// and every answer is the same manifest bytes, with their digest; every
// blob it names is redirected to the bucket and has that digest; each
// replica signs it for the name asked through it.
func TestServeReplicasBuildOCIOnce(t *testing.T) {
	t.Parallel()
	r := newReplicas(t)
	r.bucket(t, "images")
	reps := []*serveProc{r.start(t, "images", "--lease", "10s"), r.start(t, "images", "--lease", "10s")}
	const n = 20
	urls := make([]string, n)
	for i := range n {
		urls[i] = "http://" + reps[i%2].addr + "/v2/tiny/manifests/latest"
	}
	bodies := make([]string, n)
	digests := make([]string, n)
	for i, resp := range testsupport.GetAll(t, nil, urls, 0) {
		if resp.StatusCode == 0 {
			continue // the GET failed, and GetAll said so
		}
		if resp.StatusCode != 200 {
			t.Errorf("request %d: %s\n%s", i, resp.Status, resp.Body)
		}
		bodies[i], digests[i] = string(resp.Body), resp.Header.Get("Docker-Content-Digest")
	}
	if t.Failed() {
		t.Fatalf("%s\n%s", reps[0].stderr, reps[1].stderr)
	}
	for i := range n {
		if bodies[i] != bodies[0] || digests[i] != digest.FromString(bodies[0]).String() {
			t.Fatalf("response %d: another manifest, or its digest %s is not its bytes'", i, digests[i])
		}
	}
	if n0, n1 := reps[0].buildsStarted(t), reps[1].buildsStarted(t); n0+n1 != 1 {
		t.Fatalf("%d + %d builds for %d requests over two replicas, want 1\n%s\n%s", n0, n1, n, reps[0].stderr, reps[1].stderr)
	}
	var m struct {
		Config struct{ Digest string }
		Layers []struct{ Digest string }
	}
	json.Unmarshal([]byte(bodies[0]), &m)
	blobs := []string{m.Config.Digest}
	for _, l := range m.Layers {
		blobs = append(blobs, l.Digest)
	}
	for _, p := range reps {
		for _, d := range blobs {
			resp, err := http.Get("http://" + p.addr + "/v2/tiny/blobs/" + d)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || resp.Request.URL.Host != r.g.Addr || digest.FromBytes(b).String() != d {
				t.Errorf("the blob %s through %s: %s from %s, digest %s", d, p.addr, resp.Status, resp.Request.URL.Host, digest.FromBytes(b))
			}
		}
		resp, err := http.Get(fmt.Sprintf("http://%s/extensions/v2/tiny/signatures/%s", p.addr, digests[0]))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || strings.Count(string(b), `"type":"atomic"`) != 2 {
			t.Errorf("signatures through %s: %s\n%s", p.addr, resp.Status, b)
		}
	}
}
