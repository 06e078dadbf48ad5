package cliargs

import (
	"strings"
	"testing"
)

// fixture has a flag of each kind nix2aci's commands have: switches,
// flags taking a value (string, int, duration, list) with one-letter
// aliases, a name that is a switch in one command and takes a value in
// another, and commands with subcommands.
var fixture = []*Command{
	{
		Names: []string{"build"},
		Flags: []Flag{
			{Names: []string{"out", "o"}, TakesValue: true},
			{Names: []string{"fat"}},
			{Names: []string{"thin"}},
			{Names: []string{"jobs", "j"}, TakesValue: true},
			{Names: []string{"timeout"}, TakesValue: true},
			{Names: []string{"tag"}, TakesValue: true},
		},
	},
	{
		Names: []string{"inspect"},
		Flags: []Flag{{Names: []string{"json"}}},
	},
	{
		Names: []string{"pkgs"},
		Subcommands: []*Command{{
			Names: []string{"list"},
			Flags: []Flag{
				{Names: []string{"pkgs"}, TakesValue: true},
				{Names: []string{"json"}},
			},
		}},
	},
	{
		Names: []string{"cache"},
		Subcommands: []*Command{{
			Names: []string{"gc"},
			Flags: []Flag{
				{Names: []string{"cache-dir"}, TakesValue: true},
				{Names: []string{"max-size"}, TakesValue: true},
				{Names: []string{"json"}},
			},
		}},
	},
	{
		Names: []string{"serve", "s"},
		Flags: []Flag{
			{Names: []string{"json"}, TakesValue: true},
			{Names: []string{"listen", "l"}, TakesValue: true},
		},
	},
}

func TestInterspersed(t *testing.T) {
	tests := []struct{ in, want string }{
		{"x build busybox --fat", "x build --fat busybox"},
		{"x build a --out o --thin b", "x build --out o --thin a b"},
		{"x build --out=o a -j 4 b", "x build --out=o -j 4 a b"},
		{"x build a -o o --timeout 5s --tag t1 --tag t2", "x build -o o --timeout 5s --tag t1 --tag t2 a"},
		{"x build a --nosuch b", "x build --nosuch a b"},
		{"x build a --out", "x build --out a"},
		{"x build a -- --fat", "x build a -- --fat"},
		{"x build a --out -- b", "x build --out -- a b"},
		{"x build a - --fat", "x build --fat a -"},
		{"x pkgs list a --pkgs d --json", "x pkgs list --pkgs d --json a"},
		{"x pkgs a --pkgs d", "x pkgs --pkgs a d"}, // pkgs has no flags of its own
		{"x cache gc --max-size 2G", "x cache gc --max-size 2G"},
		{"x inspect a --json b", "x inspect --json a b"},
		{"x s a --json j -l :80", "x s --json j -l :80 a"},
		{"x build a --fat --generate-bash-completion", "x build a --fat --generate-bash-completion"},
		{"x nosuch a --b", "x nosuch a --b"},
		{"x --fat build a", "x --fat build a"},
		{"x build", "x build"},
		{"x", "x"},
	}
	for _, tt := range tests {
		got := strings.Join(Interspersed(fixture, strings.Fields(tt.in)), " ")
		if got != tt.want {
			t.Errorf("Interspersed(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
