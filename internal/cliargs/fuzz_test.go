package cliargs

import (
	"slices"
	"strings"
	"testing"
)

// valueFlags returns the names of the flags of commands and their
// subcommands that take a value.
func valueFlags(commands []*Command, names map[string]bool) map[string]bool {
	for _, c := range commands {
		for _, f := range c.Flags {
			for _, n := range f.Names {
				names[n] = names[n] || f.TakesValue
			}
		}
		valueFlags(c.Subcommands, names)
	}
	return names
}

func FuzzInterspersed(f *testing.F) {
	for _, s := range []string{
		"build busybox --out x --fat -- y",
		"build a -o x -j 4 --thin b",
		"build --out=x a --fat -- --thin",
		"build a --out -- b -- c",
		"pkgs list a --pkgs d --json",
		"cache gc --max-size 2G a --json",
		"s a --json -- b",
		"build a --fat --generate-bash-completion",
		"-- build a --fat",
	} {
		f.Add(s)
	}
	takesValue := valueFlags(fixture, map[string]bool{})
	// mayBeValue reports whether an argument after a could be a's value:
	// false when a is certainly not a flag taking the next argument.
	mayBeValue := func(a string) bool {
		return strings.HasPrefix(a, "-") && !strings.Contains(a, "=") && takesValue[strings.TrimLeft(a, "-")]
	}
	f.Fuzz(func(t *testing.T, s string) {
		in := append([]string{"nix2aci"}, strings.Fields(s)...)
		out := Interspersed(fixture, slices.Clone(in))
		if len(out) != len(in) || out[0] != in[0] {
			t.Fatalf("%q became %q", in, out)
		}
		a, b := slices.Clone(in), slices.Clone(out)
		slices.Sort(a)
		slices.Sort(b)
		if !slices.Equal(a, b) {
			t.Fatalf("%q became %q: not the same arguments", in, out)
		}
		// A "--" that cannot be a flag's value ends the flags, or comes
		// after the "--" that did: from it on, nothing moves.
		for i := 1; i < len(in); i++ {
			if in[i] == "--" && !mayBeValue(in[i-1]) && !slices.Equal(in[i:], out[i:]) {
				t.Fatalf("%q became %q: moved after the -- at %d", in, out, i)
			}
		}
	})
}
