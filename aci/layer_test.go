package aci_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/nix2aci/nix2aci/aci"
	"github.com/nix2aci/nix2aci/fragcache"
	"github.com/nix2aci/nix2aci/nixstore/nixtest"
)

// An OCI layer holds what the ACI holds under rootfs/, named from the
// container's root, and no manifest; its digests are SHA-256 of what was
// written and of the tar stream. The cache serves each format only its
// own segments: an ACI's never reach a layer, and a warm layer equals a
// cold one.
func TestLayerIsTheACIsRootfs(t *testing.T) {
	root := nixtest.Hello(t)
	img := image(t, root, false)
	acib, _ := write(t, img)
	var want []string
	for _, h := range entries(t, acib) {
		if n, ok := strings.CutPrefix(h.Name, "rootfs/"); ok && n != "" {
			want = append(want, n+" "+strings.TrimPrefix(h.Linkname, "rootfs/")) // hard links name entries
		}
	}

	layer := func(opts ...aci.Option) ([]byte, *aci.Result) {
		var buf bytes.Buffer
		res, err := aci.Write(context.Background(), &buf, aci.Image{Closure: img.Closure, Packages: img.Packages}, append(opts, aci.AsLayer())...)
		if err != nil {
			t.Fatal(err)
		}
		return buf.Bytes(), res
	}
	cold, res := layer()
	var got []string
	for _, h := range entries(t, cold) {
		got = append(got, h.Name+" "+h.Linkname)
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("layer entries\n%s\nwant the ACI's rootfs\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	sum := sha256.Sum256(cold)
	if res.Digest != "sha256:"+hex.EncodeToString(sum[:]) || res.Size != int64(len(cold)) || res.ImageID != "" {
		t.Errorf("Result %+v does not describe the %d bytes written", res, len(cold))
	}
	plain, plainRes := layer(aci.WithCompression(aci.None, 0))
	sum = sha256.Sum256(plain)
	if res.DiffID != "sha256:"+hex.EncodeToString(sum[:]) || plainRes.DiffID != res.DiffID || plainRes.Digest != res.DiffID {
		t.Errorf("DiffID %s, uncompressed layer's %s and digest %s, want the SHA-256 of the tar, %x", res.DiffID, plainRes.DiffID, plainRes.Digest, sum)
	}

	cache, err := fragcache.OpenCache(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := cache.UseKey(make([]byte, fragcache.CacheKeySize)); err != nil {
		t.Fatal(err)
	}
	if _, r := write(t, img, aci.WithCache(cache)); r.CachedPaths != 0 {
		t.Fatalf("a cold ACI took %d cached paths", r.CachedPaths)
	}
	if b, r := layer(aci.WithCache(cache)); r.CachedPaths != 0 || !bytes.Equal(b, cold) {
		t.Errorf("after an ACI, a layer took %d cached paths (want 0), same bytes: %v", r.CachedPaths, bytes.Equal(b, cold))
	}
	if b, r := layer(aci.WithCache(cache)); r.CachedPaths != len(img.Closure.Paths) || !bytes.Equal(b, cold) {
		t.Errorf("a warm layer took %d of %d cached paths, same bytes as cold: %v", r.CachedPaths, len(img.Closure.Paths), bytes.Equal(b, cold))
	}
}
