package aci

import (
	"sort"
	"testing"
)

func TestPathLess(t *testing.T) {
	got := []string{"a-b", "a/c", "a", "b", "a/b/c", "a.b", "nix", "nix/store", "bin/sh", "bin"}
	sort.Slice(got, func(i, j int) bool { return pathLess(got[i], got[j]) })
	want := []string{"a", "a/b/c", "a/c", "a-b", "a.b", "b", "bin", "bin/sh", "nix", "nix/store"}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
}
