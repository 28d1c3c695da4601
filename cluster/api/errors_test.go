package api

import (
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/keymesh/keymesh/fsm"
)

// TestEveryCode lists every code a root server can answer: each Code*
// constant of this package, every code of the state machine's
// rejections, and every code the server's handlers write — each is in
// Codes, has its own sentinel, and an *APIError of it matches that
// sentinel and no other.
func TestEveryCode(t *testing.T) {
	consts := codeConstants(t, "errors.go")
	if len(consts) < 20 {
		t.Fatalf("found %d code constants in errors.go", len(consts))
	}
	codes := Codes()
	want := slices.Clone(consts)
	want = append(want, fsm.ErrorCodes()...)
	want = append(want, fsm.CodeInternal)
	want = append(want, serverCodes(t)...)
	seen := map[error]string{}
	for _, c := range want {
		if !slices.Contains(codes, c) {
			t.Errorf("code %q is not in Codes()", c)
			continue
		}
		s := Sentinel(c)
		if s == nil {
			t.Errorf("code %q has no sentinel", c)
			continue
		}
		if other, dup := seen[s]; dup && other != c {
			t.Errorf("codes %q and %q share a sentinel", c, other)
		}
		seen[s] = c
		e := &APIError{Status: 400, Code: c, Message: "m"}
		if !errors.Is(e, s) {
			t.Errorf("an APIError of %q does not match its sentinel", c)
		}
		for _, other := range codes {
			if other != c && errors.Is(e, Sentinel(other)) {
				t.Errorf("an APIError of %q matches the sentinel of %q", c, other)
			}
		}
	}
	for _, c := range codes {
		if !slices.Contains(want, c) {
			t.Errorf("Codes() lists %q, which no constant names", c)
		}
	}
	for _, c := range []string{CodeNodeRevoked, CodeCertRevoked, CodeKeyRevoked} {
		if !errors.Is(&APIError{Code: c}, ErrRevoked) {
			t.Errorf("%s does not match ErrRevoked", c)
		}
	}
	if errors.Is(&APIError{Code: CodeForbidden}, ErrRevoked) || errors.Is(&APIError{Code: "made-up"}, ErrForbidden) {
		t.Error("ErrRevoked or a sentinel matches a code it should not")
	}
}

// codeConstants are the values of the Code* constants in file.
func codeConstants(t *testing.T, file string) []string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), file, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, sp := range g.Specs {
			vs := sp.(*ast.ValueSpec)
			for i, n := range vs.Names {
				if !strings.HasPrefix(n.Name, "Code") || i >= len(vs.Values) {
					continue
				}
				if lit, ok := vs.Values[i].(*ast.BasicLit); ok {
					v, _ := strconv.Unquote(lit.Value)
					out = append(out, v)
				}
			}
		}
	}
	return out
}

// serverCodes are the codes the root server's handlers write as string
// literals (writeError(w, status, "literal", ...)): there must be none;
// every code comes from a constant of this package or fsm.ErrorCode.
func serverCodes(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("..", "*.go"))
	if err != nil || len(files) == 0 {
		t.Fatalf("server sources: %v", err)
	}
	var out []string
	for _, file := range files {
		if strings.HasSuffix(file, "_test.go") {
			continue
		}
		src, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		f, err := parser.ParseFile(token.NewFileSet(), file, src, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			if id, ok := call.Fun.(*ast.Ident); ok && id.Name == "writeError" && len(call.Args) >= 3 {
				if lit, ok := call.Args[2].(*ast.BasicLit); ok {
					v, _ := strconv.Unquote(lit.Value)
					t.Errorf("%s: writeError with the literal code %q; use an api.Code constant", file, v)
					out = append(out, v)
				}
			}
			return true
		})
	}
	return out
}
