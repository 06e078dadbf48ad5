package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"testing"
)

// The tests build the CLI once per test process (binary): each go build
// of it costs seconds of a 2-core machine's test run. Only binary and
// staticInStore (a CGO_ENABLED=0 build for inside Nix, another binary)
// may run go build.
func TestCLIIsBuiltOnce(t *testing.T) {
	files, err := filepath.Glob("*_test.go")
	if err != nil {
		t.Fatal(err)
	}
	allowed := map[string]bool{"binary": true, "staticInStore": true, "toolDir": true}
	fset := token.NewFileSet()
	for _, name := range files {
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			fn, ok := d.(*ast.FuncDecl)
			if !ok || fn.Body == nil || allowed[fn.Name.Name] {
				continue
			}
			ast.Inspect(fn.Body, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok || len(call.Args) < 2 {
					return true
				}
				if lit, ok := call.Args[0].(*ast.BasicLit); !ok || lit.Value != strconv.Quote("go") {
					return true
				}
				if lit, ok := call.Args[1].(*ast.BasicLit); ok && lit.Value == strconv.Quote("build") {
					t.Errorf("%s: %s runs go build: use binary(t), built once per test process", fset.Position(call.Pos()), fn.Name.Name)
				}
				return true
			})
		}
	}
}
