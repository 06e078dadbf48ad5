package main

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

// cliDoc is the guide whose command reference is made from the command
// definitions, and whose exit-code table must list the codes of errors.go.
const cliDoc = "../../docs/cli.md"

// The generated part of cliDoc lies between these lines.
const (
	refBegin = "<!-- BEGIN GENERATED: NIX2ACI_UPDATE_DOCS=1 go test ./cmd/nix2aci -run TestCLIReference -->"
	refEnd   = "<!-- END GENERATED -->"
)

// TestCLIReference keeps docs/cli.md's command reference equal to what
// --help says: every command with its synopsis and flags, and every
// environment variable. NIX2ACI_UPDATE_DOCS=1 rewrites it.
func TestCLIReference(t *testing.T) {
	doc, err := os.ReadFile(cliDoc)
	if err != nil {
		t.Fatal(err)
	}
	text := string(doc)
	b, e := strings.Index(text, refBegin), strings.Index(text, refEnd)
	if b < 0 || e < b {
		t.Fatalf("%s has no %q ... %q block", cliDoc, refBegin, refEnd)
	}
	want := text[:b] + refBegin + "\n\n" + cliReference() + "\n" + text[e:]
	if want == text {
		return
	}
	if os.Getenv("NIX2ACI_UPDATE_DOCS") == "1" {
		if err := os.WriteFile(cliDoc, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("rewrote the command reference in %s", cliDoc)
		return
	}
	t.Errorf("the command reference in %s is not what the commands define: run NIX2ACI_UPDATE_DOCS=1 go test ./cmd/nix2aci -run TestCLIReference", cliDoc)
}

// cliReference renders the commands, their flags and the environment
// variables as Markdown.
func cliReference() string {
	app := newApp()
	var b strings.Builder
	var walk func(cmds []*cli.Command, prefix string)
	walk = func(cmds []*cli.Command, prefix string) {
		for _, c := range cmds {
			if c.Hidden || c.Name == "help" {
				continue
			}
			name := strings.TrimSpace(prefix + " " + c.Name)
			fmt.Fprintf(&b, "### nix2aci %s\n\n", name)
			synopsis := "nix2aci " + name
			if len(c.Subcommands) > 0 {
				synopsis += " COMMAND"
			} else if len(c.VisibleFlags()) > 0 {
				synopsis += " [options]"
			}
			if c.ArgsUsage != "" {
				synopsis += " " + c.ArgsUsage
			}
			fmt.Fprintf(&b, "`%s`: %s.\n\n", synopsis, c.Usage)
			if flags := c.VisibleFlags(); len(flags) > 0 {
				b.WriteString("| flag | what it does |\n|---|---|\n")
				for _, f := range flags {
					names, usage, _ := strings.Cut(cli.FlagStringer(f), "\t")
					names, _, _ = strings.Cut(names, " [ ")
					if s, ok := f.(cli.DocGenerationSliceFlag); ok && s.IsSliceFlag() && !strings.Contains(usage, "repeatable") {
						usage += " (repeatable)"
					}
					fmt.Fprintf(&b, "| `%s` | %s |\n", cell(names), cell(usage))
				}
				b.WriteString("\n")
			}
			walk(c.Subcommands, name)
		}
	}
	walk(app.Commands, "")
	b.WriteString("### Environment\n\n| variable | what it does |\n|---|---|\n")
	vars := make([]string, 0, len(environmentHelp))
	for v := range environmentHelp {
		vars = append(vars, v)
	}
	sort.Strings(vars)
	for _, v := range vars {
		fmt.Fprintf(&b, "| `%s` | %s |\n", v, cell(environmentHelp[v]))
	}
	return b.String()
}

// cell escapes what Markdown would read as a table's column or as HTML.
func cell(s string) string {
	return strings.NewReplacer("|", `\|`, "<", "&lt;", ">", "&gt;").Replace(s)
}

// TestExitCodeTable checks that docs/cli.md's exit-code table, the EXIT
// CODES of every help page and the exit* constants of errors.go list the
// same codes.
func TestExitCodeTable(t *testing.T) {
	// The constants, read from the source: a new one must be documented.
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "errors.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var consts []int
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, s := range g.Specs {
			v := s.(*ast.ValueSpec)
			for i, n := range v.Names {
				if !strings.HasPrefix(n.Name, "exit") || i >= len(v.Values) {
					continue
				}
				lit, ok := v.Values[i].(*ast.BasicLit)
				if !ok {
					t.Fatalf("errors.go: %s is not a literal", n.Name)
				}
				c, err := strconv.Atoi(lit.Value)
				if err != nil {
					t.Fatal(err)
				}
				consts = append(consts, c)
			}
		}
	}
	help := codes(t, exitCodesHelp, regexp.MustCompile(`(?m)^   ([0-9]+) `))
	doc, err := os.ReadFile(cliDoc)
	if err != nil {
		t.Fatal(err)
	}
	table := codes(t, string(doc), regexp.MustCompile(`(?m)^\| ([0-9]+) \|`))
	slices.Sort(consts)
	if len(consts) == 0 || !slices.Equal(consts, help) || !slices.Equal(consts, table) {
		t.Errorf("exit codes differ: errors.go %v, help pages %v, %s %v", consts, help, cliDoc, table)
	}
}

func codes(t *testing.T, text string, re *regexp.Regexp) []int {
	var cs []int
	for _, m := range re.FindAllStringSubmatch(text, -1) {
		c, err := strconv.Atoi(m[1])
		if err != nil {
			t.Fatal(err)
		}
		cs = append(cs, c)
	}
	slices.Sort(cs)
	return cs
}
