package main

import (
	"strings"
	"testing"
)

func TestInterspersed(t *testing.T) {
	tests := []struct{ in, want string }{
		{"nix2aci build busybox --fat", "nix2aci build --fat busybox"},
		{"nix2aci build busybox --out x --thin", "nix2aci build --out x --thin busybox"},
		{"nix2aci build --out=x busybox -j 4", "nix2aci build --out=x -j 4 busybox"},
		{"nix2aci build busybox -- --fat", "nix2aci build busybox -- --fat"},
		{"nix2aci pkgs list --pkgs d", "nix2aci pkgs list --pkgs d"},
		{"nix2aci inspect x.aci --json", "nix2aci inspect --json x.aci"},
		{"nix2aci nosuch a --b", "nix2aci nosuch a --b"},
		{"nix2aci", "nix2aci"},
	}
	app := newApp()
	for _, tt := range tests {
		got := strings.Join(interspersed(app, strings.Fields(tt.in)), " ")
		if got != tt.want {
			t.Errorf("interspersed(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
