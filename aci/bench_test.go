package aci_test

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/nix2aci/nix2aci/aci"
	"github.com/nix2aci/nix2aci/fragcache"
	"github.com/nix2aci/nix2aci/nixstore/nixtest"
)

// benchRoot is the closure the benchmarks write: NIX2ACI_BENCH_ROOT (e.g.
// the store path `../shared/bench/make-corpus debian` prints), else a
// generated 40 MB fixture. scripts/bench compares whole builds with
// tar | pigz; these measure the writer alone.
func benchRoot(b *testing.B) string {
	if r := os.Getenv("NIX2ACI_BENCH_ROOT"); r != "" {
		return r
	}
	return nixtest.Build(b, `mk "bench-1.0" "mkdir -p $out/share; for i in 1 2 3 4 5 6; do seq $i 900000 > $out/share/n$i; done"`)
}

func BenchmarkWriteFat(b *testing.B) {
	img := image(b, benchRoot(b), false)
	b.SetBytes(img.Closure.NarSize())
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := aci.Write(context.Background(), io.Discard, img); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkWriteFatCached(b *testing.B) {
	img := image(b, benchRoot(b), false)
	cache, err := fragcache.OpenCache(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	if _, err := cache.LoadKey(filepath.Join(b.TempDir(), "key")); err != nil {
		b.Fatal(err)
	}
	if _, err := aci.Write(context.Background(), io.Discard, img, aci.WithCache(cache)); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(img.Closure.NarSize())
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := aci.Write(context.Background(), io.Discard, img, aci.WithCache(cache)); err != nil {
			b.Fatal(err)
		}
	}
}
