package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

// flagMention is a --flag in help text, with what follows the dashes.
var flagMention = regexp.MustCompile(`^[("'\x60]*--([a-z][a-z0-9-]*)`)

// foreignPrograms are the other programs help text shows with flags of
// their own.
var foreignPrograms = map[string]bool{"rkt": true, "rkt's": true, "gpg": true, "podman": true, "skopeo": true, "docker": true, "umoci": true, "curl": true}

// Every --flag a command's help names (its usage line, description,
// examples and flags' usage) is a flag of that command, or of the
// nix2aci command an example or a phrase ("build --format oci", "a
// build's --out") names; flags of rkt, gpg, podman … are left alone.
// Each flag the environment variables' help names is a flag of a command
// that lists the variable.
func TestHelpNamesRealFlags(t *testing.T) {
	app := newApp()
	flagsOf := func(c *cli.Command) map[string]bool {
		known := map[string]bool{"help": true, "h": true}
		for _, f := range c.Flags {
			for _, n := range f.Names() {
				known[n] = true
			}
		}
		return known
	}
	appFlags := map[string]bool{"help": true, "version": true, "generate-bash-completion": true}
	// find resolves a command path ("key generate") from the app.
	find := func(path []string) *cli.Command {
		var c *cli.Command
		cmds := app.Commands
		for _, w := range path {
			var next *cli.Command
			for _, s := range cmds {
				if s.HasName(w) {
					next = s
				}
			}
			if next == nil {
				break
			}
			c, cmds = next, next.Subcommands
		}
		return c
	}
	build := find([]string{"build"})
	// check checks one line of c's help text.
	check := func(name string, c *cli.Command, line string) {
		words := strings.Fields(line)
		owner := flagsOf(c) // nil: a foreign program's
		var path []string   // after "nix2aci": the command path so far
		inPath := false
		for i, w := range words {
			if strings.ContainsAny(w, "|;#") || w == "&&" {
				owner, inPath = flagsOf(c), false
			}
			if w == "nix2aci" {
				owner, path, inPath = appFlags, nil, true
				continue
			}
			if foreignPrograms[w] {
				owner, inPath = nil, false
				continue
			}
			if inPath && !strings.HasPrefix(w, "-") {
				if sub := find(append(path, w)); sub != nil && len(path) < 2 && sub.HasName(w) {
					path = append(path, w)
					owner = flagsOf(sub)
					continue
				}
				inPath = false
			}
			m := flagMention.FindStringSubmatch(w)
			if m == nil {
				continue
			}
			known := owner
			// "(build --format oci)", "a build's --out", "a --layered build's output".
			prev, next := "", ""
			if i > 0 {
				prev = strings.TrimLeft(words[i-1], "(\"'`")
			}
			if i+1 < len(words) {
				next = words[i+1]
			}
			if prev == "build" || prev == "build's" || next == "build" || next == "build's" {
				known = flagsOf(build)
			}
			if known != nil && !known[m[1]] {
				t.Errorf("%s: its help names --%s, not one of its flags: %q", name, m[1], strings.TrimSpace(line))
			}
		}
	}
	var walk func(cmds []*cli.Command, prefix string)
	walk = func(cmds []*cli.Command, prefix string) {
		for _, c := range cmds {
			name := strings.TrimSpace(prefix + " " + c.Name)
			desc, _, _ := strings.Cut(c.Description, "\nEnvironment:\n") // checked below
			texts := []string{c.Usage, c.UsageText, c.ArgsUsage, desc}
			for _, f := range c.Flags {
				if u, ok := f.(cli.DocGenerationFlag); ok {
					texts = append(texts, u.GetUsage())
				}
			}
			for _, text := range texts {
				for _, line := range strings.Split(text, "\n") {
					check(name, c, line)
				}
			}
			walk(c.Subcommands, name)
		}
	}
	walk(app.Commands, "")

	for v, help := range environmentHelp {
		for _, w := range strings.Fields(help) {
			m := flagMention.FindStringSubmatch(w)
			if m == nil {
				continue
			}
			found := false
			for name, d := range commandDocs {
				for _, e := range d.env {
					if c := find(strings.Fields(name)); e == v && c != nil && flagsOf(c)[m[1]] {
						found = true
					}
				}
			}
			if !found {
				t.Errorf("the help of %s names --%s, a flag of no command that lists %s", v, m[1], v)
			}
		}
	}
}

// A flag whose usage says it goes "with --X" names the flag its check
// demands: the usage errors of the commands' source ("--describe goes with
// --layer-group", "--max-layers applies to --layered builds only").
func TestFlagUsageNamesTheFlagItGoesWith(t *testing.T) {
	demands := regexp.MustCompile(`^--([a-z-]+) (?:goes with|applies to|is for) --([a-z-]+)`)
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{} // flag: the flag its check wants with it
	fset := token.NewFileSet()
	for _, file := range files {
		if strings.HasSuffix(file, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, file, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			if lit, ok := n.(*ast.BasicLit); ok && lit.Kind == token.STRING {
				if s, err := strconv.Unquote(lit.Value); err == nil {
					if m := demands.FindStringSubmatch(s); m != nil {
						want[m[1]] = m[2]
					}
				}
			}
			return true
		})
	}
	if want["describe"] == "" {
		t.Fatalf("no check found for --describe in %v: the pattern no longer matches the source", files)
	}
	with := regexp.MustCompile(`^with --([a-z-]+)`)
	var walk func(cmds []*cli.Command)
	walk = func(cmds []*cli.Command) {
		for _, c := range cmds {
			for _, f := range c.Flags {
				u, ok := f.(cli.DocGenerationFlag)
				if !ok {
					continue
				}
				for _, n := range f.Names() {
					m := with.FindStringSubmatch(u.GetUsage())
					if w, ok := want[n]; ok && (m == nil || m[1] != w) {
						t.Errorf("%s --%s: its usage %q does not begin with \"with --%s\", the flag its check wants", c.Name, n, u.GetUsage(), w)
					}
				}
			}
			walk(c.Subcommands)
		}
	}
	walk(newApp().Commands)
}

// Every command's --help gives each flag's default once: a flag whose
// usage already says its default gets no second "(default: 0)", and a
// bool flag no "(default: false)".
func TestHelpShowsEachDefaultOnce(t *testing.T) {
	defaults := regexp.MustCompile(`\(default\b`)
	for name, page := range helpPages(t) {
		for _, line := range strings.Split(page, "\n") {
			if !strings.HasPrefix(strings.TrimSpace(line), "-") {
				continue
			}
			if n := len(defaults.FindAllString(line, -1)); n > 1 || strings.Contains(line, "(default: false)") {
				t.Errorf("nix2aci %s --help: %s", name, strings.TrimSpace(line))
			}
		}
	}
}

// Every environment variable a command's help names (its description or
// a flag's usage, e.g. --store's AWS_ACCESS_KEY_ID) is in the
// Environment section of that help page, and so is every secret nix2aci
// takes out of the environment (secrets.go), on some page.
func TestHelpListsTheEnvironmentItNames(t *testing.T) {
	variable := regexp.MustCompile(`\b[A-Z][A-Z0-9]*_[A-Z0-9_]*[A-Z0-9]\b`)
	listed := map[string]bool{}
	for name, out := range helpPages(t) {
		page, env, _ := strings.Cut(out, "\n   Environment:\n")
		env, rest, _ := strings.Cut(env, "\n\n")
		page += "\n" + rest
		here := map[string]bool{}
		for _, line := range strings.Split(env, "\n") {
			if f := strings.Fields(line); len(f) > 0 {
				here[f[0]], listed[f[0]] = true, true
			}
		}
		page, _, _ = strings.Cut(page, "\nEXIT CODES:")
		for _, v := range dedupe(variable.FindAllString(page, -1)) {
			if !here[v] {
				t.Errorf("nix2aci %s --help names %s, which its Environment section does not list", name, v)
			}
		}
	}
	for _, v := range secretNames {
		if !listed[v] {
			t.Errorf("no help page lists %s, a secret nix2aci reads from the environment", v)
		}
	}
}

// helpPages returns every command's --help, by the command's words
// ("serve", "key generate").
func helpPages(t *testing.T) map[string]string {
	t.Helper()
	pages := map[string]string{}
	var walk func(cmds []*cli.Command, path []string)
	walk = func(cmds []*cli.Command, path []string) {
		for _, c := range cmds {
			if c.Name == "help" {
				continue
			}
			p := append(append([]string(nil), path...), c.Name)
			app := newApp()
			var out strings.Builder
			app.Writer, app.ErrWriter = &out, &out
			if err := app.Run(append(append([]string{"nix2aci"}, p...), "--help")); err != nil {
				t.Fatalf("nix2aci %s --help: %v", strings.Join(p, " "), err)
			}
			pages[strings.Join(p, " ")] = out.String()
			walk(c.Subcommands, p)
		}
	}
	walk(newApp().Commands, nil)
	return pages
}

func dedupe(s []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, v := range s {
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out
}
