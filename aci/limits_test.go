package aci_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/nix2aci/nix2aci/aci"
	"github.com/nix2aci/nix2aci/nixstore/nixtest"
)

// Write refuses an image past what Inspect reads (entries, bytes of entry
// names), counting them exactly as Inspect does: at the limit the image is
// written, one past it nothing is, with an error naming the fix.
func TestWriteRefusesWhatInspectRefuses(t *testing.T) {
	root := nixtest.Hello(t)
	for _, thin := range []bool{false, true} {
		img := image(t, root, thin)
		b, _ := write(t, img)
		n, names := 0, 0
		for _, h := range entries(t, b) {
			n++
			names += len(h.Name)
		}
		if again, _ := write(t, img, aci.WithEntryLimits(n, names)); string(again) != string(b) {
			t.Errorf("thin=%v: at the limits, the image differs", thin)
		}
		for _, tc := range []struct {
			entries, names int
			want           string
		}{
			{n - 1, names, "more than " + itoa(n-1) + " entries"},
			{n, names - 1, "entry names would take more than " + itoa(names-1) + " bytes"},
		} {
			dir := t.TempDir()
			_, err := aci.WriteFile(context.Background(), filepath.Join(dir, "x.aci"), img, aci.WithEntryLimits(tc.entries, tc.names))
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "build it --layered") {
				t.Errorf("thin=%v, limits %d/%d: got %v, want an error containing %q", thin, tc.entries, tc.names, err, tc.want)
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 0 {
				t.Errorf("a refused image left %v behind", ents)
			}
		}
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
