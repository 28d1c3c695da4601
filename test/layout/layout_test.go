// Package layout holds the import rule of keymesh's packages: which
// package may import which, and that nothing of Raft, boltdb or the
// Prometheus client reaches a node.
package layout

import (
	"bufio"
	"bytes"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/keymesh/keymesh/"

// allowed lists, for each package of the module (by path below the module,
// a trailing "/..." for a tree), the packages of the module it may import.
// Imports point one way: cmd → cluster → session, routing → identity → ca,
// and fsm (plain data) below everything.
var allowed = []struct {
	pkg     string
	imports []string
}{
	{"fsm", nil},
	{"ca", nil},
	{"identity", nil},
	{"identity/policy", []string{"identity"}},
	{"identity/trust", []string{"ca", "fsm", "identity"}},
	{"session/...", []string{"ca", "fsm", "identity", "identity/policy", "identity/trust", "session/..."}},
	{"routing/...", []string{"ca", "fsm", "identity", "identity/policy", "identity/trust", "routing/..."}},
	{"cluster/api", []string{"ca", "fsm", "identity", "identity/policy", "identity/trust"}},
	{"cluster/run", nil},
	{"cluster/client", []string{"ca", "cluster/api", "fsm", "identity", "identity/policy", "identity/trust"}},
	{"cluster/agent", []string{"ca", "cluster/api", "cluster/client", "cluster/run", "fsm", "identity", "identity/policy",
		"identity/trust", "session/...", "routing/..."}},
	{"cluster", []string{"ca", "cluster/api", "cluster/run", "fsm", "identity", "identity/policy", "identity/trust", "session/...", "routing/..."}},
	{"cmd/...", []string{"*"}},
	{"test/...", []string{"*"}},
}

// nodeSide are the packages a node agent is built from; serverOnly are
// the modules none of them may depend on, even indirectly.
var (
	nodeSide   = []string{"./cluster/agent/...", "./cluster/client/...", "./cluster/api/...", "./identity/...", "./session/...", "./routing/..."}
	serverOnly = []string{"github.com/hashicorp/raft", "github.com/hashicorp/raft-boltdb", "github.com/hashicorp/raft-wal", "github.com/boltdb/bolt", "go.etcd.io/bbolt",
		"github.com/prometheus/client_golang"}
)

func repo(t *testing.T) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

func goList(t *testing.T, args ...string) []string {
	t.Helper()
	cmd := exec.Command("go", append([]string{"list"}, args...)...)
	cmd.Dir = repo(t)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("go list %v: %v\n%s", args, err, errb.String())
	}
	var lines []string
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return lines
}

func matches(rule, pkg string) bool {
	if tree, ok := strings.CutSuffix(rule, "/..."); ok {
		return pkg == tree || strings.HasPrefix(pkg, tree+"/")
	}
	return rule == pkg
}

// rule returns the imports allowed to pkg: the most specific rule.
func rule(pkg string) ([]string, bool) {
	best, found := -1, false
	var imports []string
	for _, r := range allowed {
		if matches(r.pkg, pkg) && len(r.pkg) > best {
			best, imports, found = len(r.pkg), r.imports, true
		}
	}
	return imports, found
}

// TestImportRule: every package of the module imports only what the rule
// allows it (its own tree aside).
func TestImportRule(t *testing.T) {
	for _, line := range goList(t, "-f", "{{.ImportPath}} {{join .Imports \" \"}}", "./...") {
		fields := strings.Fields(line)
		pkg := strings.TrimPrefix(fields[0], module)
		may, ok := rule(pkg)
		if !ok {
			t.Errorf("package %s has no import rule; add it to test/layout", pkg)
			continue
		}
		if slices.Contains(may, "*") {
			continue
		}
		for _, imp := range fields[1:] {
			dep, ours := strings.CutPrefix(imp, module)
			if !ours || dep == pkg {
				continue
			}
			if !slices.ContainsFunc(may, func(r string) bool { return matches(r, dep) }) {
				t.Errorf("%s imports %s, which the rule does not allow", pkg, dep)
			}
		}
	}
}

// TestNodeSideHasNoServerCode: `go list -deps` of the node agent's
// packages names nothing of Raft, boltdb or the Prometheus client.
func TestNodeSideHasNoServerCode(t *testing.T) {
	deps := goList(t, append([]string{"-deps"}, nodeSide...)...)
	if !slices.Contains(deps, module+"cluster/agent") {
		t.Fatalf("go list -deps did not list the agent: %v", deps)
	}
	for _, d := range deps {
		for _, bad := range serverOnly {
			if d == bad || strings.HasPrefix(d, bad+"/") {
				t.Errorf("the node side depends on %s", d)
			}
		}
		if d == module+"cluster" {
			t.Errorf("the node side depends on the root server (%s)", d)
		}
	}
}
