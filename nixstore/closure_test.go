package nixstore_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nix2aci/nix2aci/nixstore"
	"github.com/nix2aci/nix2aci/nixstore/nixtest"
)

func TestReadGraph(t *testing.T) {
	const a = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-a-1.0"
	const b = "/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-b-1.0"
	tests := []struct {
		name    string
		in      string
		want    []nixstore.PathInfo
		wantErr string
	}{
		{name: "empty", in: "", want: nil},
		{name: "two paths, sorted, deriver empty", in: b + "\n\n0\n" + a + "\n/nix/store/cccccccccccccccccccccccccccccccc-a.drv\n2\n" + b + "\n" + a + "\n",
			want: []nixstore.PathInfo{
				{Path: a, Deriver: "/nix/store/cccccccccccccccccccccccccccccccc-a.drv", References: []string{a, b}},
				{Path: b, References: []string{}},
			}},
		{name: "truncated", in: a + "\n\n2\n" + b + "\n", wantErr: "unexpected end of input"},
		{name: "bad count", in: a + "\n\nmany\n", wantErr: "bad reference count"},
		{name: "not a store path", in: "/tmp/x\n\n0\n", wantErr: "not a store path"},
		{name: "duplicate", in: a + "\n\n0\n" + a + "\n\n0\n", wantErr: "appears twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, err := nixstore.ReadGraph(strings.NewReader(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(g.Paths) != len(tt.want) {
				t.Fatalf("got %d paths, want %d", len(g.Paths), len(tt.want))
			}
			for i := range tt.want {
				got, want := g.Paths[i], tt.want[i]
				if got.Path != want.Path || got.Deriver != want.Deriver || strings.Join(got.References, " ") != strings.Join(want.References, " ") {
					t.Errorf("path %d: got %+v, want %+v", i, got, want)
				}
			}
		})
	}
}

// FuzzReadGraph: whatever the input, ReadGraph returns an error or a
// graph within the limits: store paths, sorted and unique, each with
// sorted, unique store-path references, every distinct path held once.
// The same input under tiny limits is refused or within them.
func FuzzReadGraph(f *testing.F) {
	f.Add("/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-a\n\n1\n/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-a\n")
	f.Add("/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-a\n\n99999999999\n")
	f.Fuzz(func(t *testing.T, in string) {
		g, err := nixstore.ReadGraph(strings.NewReader(in))
		if err == nil {
			checkGraph(t, g, nixstore.MaxGraphPaths, nixstore.MaxGraphReferences)
		}
		small, err := nixstore.ReadGraphLimited(strings.NewReader(in), 512, 3, 4)
		if err == nil {
			checkGraph(t, small, 3, 4)
			if len(in) > 512 {
				t.Fatalf("read %d bytes under a limit of 512", len(in))
			}
		}
	})
}

func checkGraph(t *testing.T, g *nixstore.Graph, maxPaths, maxRefs int) {
	t.Helper()
	if len(g.Paths) > maxPaths {
		t.Fatalf("%d paths, limit %d", len(g.Paths), maxPaths)
	}
	refs := 0
	for i, p := range g.Paths {
		if !nixstore.IsStorePath(p.Path) {
			t.Fatalf("accepted %q", p.Path)
		}
		if i > 0 && g.Paths[i-1].Path >= p.Path {
			t.Fatal("paths not sorted and unique")
		}
		if p.Deriver != "" && !nixstore.IsStorePath(p.Deriver) {
			t.Fatalf("accepted the deriver %q", p.Deriver)
		}
		for j, r := range p.References {
			if !nixstore.IsStorePath(r) || (j > 0 && p.References[j-1] >= r) {
				t.Fatalf("%s: references %q not sorted, unique store paths", p.Path, p.References)
			}
		}
		refs += len(p.References)
	}
	if refs > maxRefs {
		t.Fatalf("%d references, limit %d", refs, maxRefs)
	}
}

// The closure of a real build, and the graph Nix itself would export for
// it, agree.
func TestClosureMatchesExportReferencesGraph(t *testing.T) {
	root := nixtest.Hello(t)
	g, err := nixstore.Closure(context.Background(), []string{root})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(g.Paths), 3; got != want {
		t.Fatalf("closure of %s has %d paths, want %d: %v", root, got, want, g.StorePaths())
	}
	graphFile := nixtest.Build(t, `mkWith "graph" "cp graph $out" { exportReferencesGraph = [ "graph" (builtins.storePath `+root+`) ]; }`)
	f, err := os.Open(graphFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	exported, err := nixstore.ReadGraph(f)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range g.Paths {
		e := exported.Paths[i]
		if p.Path != e.Path || strings.Join(p.References, " ") != strings.Join(e.References, " ") {
			t.Errorf("got %s -> %v, exportReferencesGraph says %s -> %v", p.Path, p.References, e.Path, e.References)
		}
		if p.NarHash == "" || p.NarSize <= 0 {
			t.Errorf("%s: no NAR hash or size", p.Path)
		}
	}
}

// A thousand-path closure costs the same two nix-store calls as a small one.
func TestClosureCallsNixAConstantNumberOfTimes(t *testing.T) {
	root := nixtest.Build(t, `let
  leaf = i: mk "leaf-${toString i}" "echo ${toString i} > $out";
  leaves = builtins.genList leaf 300;
in mk "top-1.0" "echo ${toString leaves} > $out"`)
	real, err := execLookPath("nix-store")
	if err != nil {
		t.Fatal(err)
	}
	log := filepath.Join(t.TempDir(), "calls")
	wrapper := filepath.Join(t.TempDir(), "nix-store")
	os.WriteFile(wrapper, []byte("#!/bin/sh\necho call >> "+log+"\nexec "+real+" \"$@\"\n"), 0o755)
	g, err := nixstore.Closure(context.Background(), []string{root}, nixstore.WithNixStore(wrapper))
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Paths) != 301 {
		t.Fatalf("got %d paths, want 301", len(g.Paths))
	}
	calls, _ := os.ReadFile(log)
	if n := strings.Count(string(calls), "call"); n != 2 {
		t.Errorf("nix-store ran %d times for 301 paths, want 2", n)
	}
}

// A closure whose paths would not fit one command line (ARG_MAX) is
// read in several nix-store --dump-db calls, to the same graph: here with
// batches of 4 KiB, so that 301 paths take several.
func TestClosureDumpsInBatches(t *testing.T) {
	root := nixtest.Build(t, `let
  leaf = i: mk "leaf-${toString i}" "echo ${toString i} > $out";
  leaves = builtins.genList leaf 300;
in mk "top-1.0" "echo ${toString leaves} > $out"`)
	whole, err := nixstore.Closure(context.Background(), []string{root})
	if err != nil {
		t.Fatal(err)
	}
	real, err := execLookPath("nix-store")
	if err != nil {
		t.Fatal(err)
	}
	log := filepath.Join(t.TempDir(), "calls")
	wrapper := filepath.Join(t.TempDir(), "nix-store")
	os.WriteFile(wrapper, []byte("#!/bin/sh\necho \"$1 $#\" >> "+log+"\nexec "+real+" \"$@\"\n"), 0o755)
	restore := nixstore.SetDumpBatch(4 << 10)
	g, err := nixstore.Closure(context.Background(), []string{root}, nixstore.WithNixStore(wrapper))
	restore()
	if err != nil {
		t.Fatal(err)
	}
	calls, _ := os.ReadFile(log)
	dumps, args := 0, 0
	for _, c := range strings.Split(strings.TrimSpace(string(calls)), "\n") {
		var flag string
		var n int
		fmt.Sscanf(c, "%s %d", &flag, &n)
		if flag == "--dump-db" {
			dumps++
			args += n - 1
		}
	}
	if dumps < 4 || args != 301 {
		t.Errorf("nix-store --dump-db ran %d times for %d paths, want at least 4 for 301", dumps, args)
	}
	if len(g.Paths) != len(whole.Paths) {
		t.Fatalf("%d paths in batches, %d at once", len(g.Paths), len(whole.Paths))
	}
	for i, p := range g.Paths {
		w := whole.Paths[i]
		if p.Path != w.Path || p.NarHash != w.NarHash || p.NarSize != w.NarSize || strings.Join(p.References, " ") != strings.Join(w.References, " ") {
			t.Errorf("%s in batches differs from %s at once", p.Path, w.Path)
		}
	}
}

func TestClosureErrors(t *testing.T) {
	nixtest.Require(t)
	ctx := context.Background()
	missing := "/nix/store/00000000000000000000000000000000-missing-1.0"
	_, err := nixstore.Closure(ctx, []string{missing})
	var ip *nixstore.InvalidPathError
	if !errors.As(err, &ip) || ip.Path != missing {
		t.Errorf("missing path: got %v, want an InvalidPathError naming %s", err, missing)
	}
	_, err = nixstore.Closure(ctx, []string{t.TempDir()})
	if !errors.As(err, &ip) || !strings.Contains(err.Error(), "not inside /nix/store") {
		t.Errorf("path outside the store: got %v", err)
	}
	_, err = nixstore.Closure(ctx, []string{missing}, nixstore.WithNixStore("/nonexistent/nix-store"))
	if !errors.Is(err, nixstore.ErrNixNotInstalled) || !strings.Contains(err.Error(), "apt-get install nix-bin") {
		t.Errorf("no nix: got %v", err)
	}
}
