package manifest_test

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/appc/spec/schema"

	"github.com/nix2aci/nix2aci/manifest"
)

// shells are the shells a deploy may run `rkt run $(cat X.rkt-args)` in,
// those installed here; /bin/sh at least.
func shells(t testing.TB) [][]string {
	var out [][]string
	for _, sh := range [][]string{{"/bin/sh"}, {"dash"}, {"bash"}, {"bash", "--posix"}, {"zsh"}, {"busybox", "sh"}} {
		if _, err := exec.LookPath(sh[0]); err == nil {
			out = append(out, sh)
		}
	}
	if len(out) == 0 {
		t.Fatal("no shell found")
	}
	return out
}

// shellSplit returns the words the shell sh makes of `$(cat FILE)` with
// FILE holding text, run in a directory holding files that a pattern in
// the text could match (so that pathname expansion shows).
func shellSplit(t testing.TB, sh []string, text []byte) []string {
	t.Helper()
	dir := t.TempDir()
	for _, name := range []string{"ab", "a-b", "--volume=x", "x.aci", "a,b", "a b"} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	f := filepath.Join(dir, "words")
	if err := os.WriteFile(f, text, 0o644); err != nil {
		t.Fatal(err)
	}
	args := append(slices.Clone(sh[1:]), "-c", `for w in $(cat "$0"); do printf '%s\0' "$w"; done`, f)
	cmd := exec.Command(sh[0], args...)
	cmd.Dir = dir
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v: %v", sh, err)
	}
	words := strings.Split(string(out), "\x00")
	return words[:len(words)-1]
}

// Whatever ShellWords accepts, every shell splits into exactly the words
// it returns, whatever the directory holds.
func TestShellWordsAreTheShellsWords(t *testing.T) {
	for _, text := range []string{
		"",
		"\n",
		"a b\nc\n",
		"  a   b  \n\n\nc",
		manifest.RktVolumeArgs([]string{"/nix/store/3si3s18r2nyk606x9y744rnxsd5mpyc3-a+b-1.0_x=y"}),
		"example.com_nix_libfoo-2.0-0123456789abcdfghijklmnpqrsvwxyz-linux-amd64.aci\n",
		"ab a-b --volume=x,y",
	} {
		words, err := manifest.ShellWords([]byte(text))
		if err != nil {
			t.Errorf("ShellWords(%q): %v", text, err)
			continue
		}
		for _, sh := range shells(t) {
			if got := shellSplit(t, sh, []byte(text)); !slices.Equal(got, words) {
				t.Errorf("%v splits %q into %q; ShellWords says %q", sh, text, got, words)
			}
		}
	}
}

// What the shell would split or expand otherwise than a reader sees is
// refused, each with its own message; the shell's own reading shows why.
func TestShellWordsRefusesWhatTheShellReadsOtherwise(t *testing.T) {
	for _, tc := range []struct{ text, err string }{
		{"a\r\nb\r\n", "line 1: a carriage return (Windows line ends?)"},
		{"a\u00a0b", "the non-ASCII space U+00A0"},
		{"a\u2003b", "the non-ASCII space U+2003"},
		{"a\u0085b", "the non-ASCII space U+0085"},
		{"a\vb", "a vertical tab"},
		{"a\fb", "a form feed"},
		{"a\tb", "a tab: words must be separated by spaces or newlines only"},
		{"x\na?", "line 2: the glob character '?'"},
		{"a*", "the glob character '*'"},
		{"a[b]", "the glob character '['"},
		{"a]", "the glob character ']'"},
		{`a\b`, `'\\': the shell neither removes quotes nor honours backslashes`},
		{`"a b"`, `'"': the shell neither removes quotes`},
		{`'a b'`, `'\'': the shell neither removes quotes`},
		{"a`b`", "'`': the shell neither removes quotes"},
		{"a\x00b", "a NUL byte"},
		{"a\x1bb", `the control character '\x1b'`},
		{"a\xffb", "the byte 0xff is not UTF-8 text"},
		{"ä", "the non-ASCII character 'ä' (U+00E4)"},
		{"a$b", "the character '$', which some shell or shell option treats specially"},
		{"a~b", "the character '~'"},
		{"+(a|b)", "the character '('"},
	} {
		_, err := manifest.ShellWords([]byte(tc.text))
		var se *manifest.ShellWordsError
		if !errors.As(err, &se) || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("ShellWords(%q) = %v, want an error containing %q", tc.text, err, tc.err)
		}
	}
	// Why: the shell keeps a CR and a no-break space inside words, and
	// expands a pattern into the paths it matches.
	sh := shells(t)[0]
	for text, want := range map[string][]string{
		"a\r\nb\r\n":    {"a\r", "b\r"},
		"a\u00a0b":      {"a\u00a0b"},
		"a\vb a\fb":     {"a\vb", "a\fb"},
		"a? --volume=?": {"ab", "--volume=x"},
	} {
		if got := shellSplit(t, sh, []byte(text)); !slices.Equal(got, want) {
			t.Errorf("%v splits %q into %q, want %q", sh, text, got, want)
		}
	}
}

// A thin image's .rkt-args is refused when the shell would not pass rkt the
// words the check reads: CRLF line ends, no-break spaces, vertical tabs and
// form feeds as separators, and a store path with a "?" (which Nix allows
// in store names, and the shell expands as a pattern).
func TestCheckRktVolumeArgsRefusesWhatTheShellSplitsOtherwise(t *testing.T) {
	a := "/nix/store/3si3s18r2nyk606x9y744rnxsd5mpyc3-a-1"
	b := "/nix/store/5si3s18r2nyk606x9y744rnxsd5mpyc3-b-1"
	q := "/nix/store/6si3s18r2nyk606x9y744rnxsd5mpyc3-what?-1"
	im, err := manifest.New(manifest.Spec{Name: "x", System: "x86_64-linux", Exec: []string{"/bin/x"}, Mounts: manifest.StoreMounts([]string{a, b})})
	if err != nil {
		t.Fatal(err)
	}
	imQ, err := manifest.New(manifest.Spec{Name: "x", System: "x86_64-linux", Exec: []string{"/bin/x"}, Mounts: manifest.StoreMounts([]string{q})})
	if err != nil {
		t.Fatal(err)
	}
	good := manifest.RktVolumeArgs([]string{a, b})
	if err := manifest.CheckRktVolumeArgs(im, []byte(good)); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		im   *schema.ImageManifest
		args string
		err  string
	}{
		{"CRLF", im, strings.ReplaceAll(good, "\n", "\r\n"), "a carriage return"},
		{"no-break space", im, strings.Replace(good, "\n", "\u00a0", 1), "the non-ASCII space U+00A0"},
		{"next line", im, strings.Replace(good, "\n", "\u0085", 1), "the non-ASCII space U+0085"},
		{"vertical tab", im, strings.Replace(good, "\n", "\v", 1), "a vertical tab"},
		{"form feed", im, strings.Replace(good, "\n", "\f", 1), "a form feed"},
		{"glob in a store name", imQ, manifest.RktVolumeArgs([]string{q}), "the glob character '?'"},
	} {
		err := manifest.CheckRktVolumeArgs(tc.im, []byte(tc.args))
		var re *manifest.RktArgsError
		if !errors.As(err, &re) || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), "rkt run $(cat FILE) would not get the words") {
			t.Errorf("%s: got %v, want an error containing %q", tc.name, err, tc.err)
		}
	}
}

// For any text ShellWords accepts, the shell makes
// exactly the words ShellWords validated.
func FuzzShellWords(f *testing.F) {
	for _, s := range []string{"a b\nc\n", "a\r\nb", "a\u00a0b", "a?", " --volume=x,kind=host,source=/nix/store/a-b,readOnly=true \n", "", "\n\n  x"} {
		f.Add([]byte(s))
	}
	// dash and bash (the unit tests above run every shell installed): a
	// real shell per accepted input is slow enough.
	var sh [][]string
	for _, s := range shells(f) {
		if s[0] == "/bin/sh" || len(s) == 1 && s[0] == "bash" {
			sh = append(sh, s)
		}
	}
	f.Fuzz(func(t *testing.T, text []byte) {
		words, err := manifest.ShellWords(text)
		if err != nil {
			return
		}
		for _, w := range words {
			if w == "" || bytes.ContainsAny([]byte(w), " \t\n*?[]\\") {
				t.Fatalf("accepted the word %q", w)
			}
		}
		for _, s := range sh {
			if got := shellSplit(t, s, text); !slices.Equal(got, words) {
				t.Fatalf("%v splits %q into %q; ShellWords says %q", s, text, got, words)
			}
		}
	})
}
