package session

import (
	"os"
	"testing"

	"golang.org/x/mod/modfile"
	"golang.org/x/mod/semver"
)

// knownGood is the dependency set of DESIGN.md. raft v1.8 and memberlist v0.7
// need go-metrics v0.7, which dropped the compat package raft-boltdb/v2 imports.
var knownGood = map[string]string{
	"github.com/hashicorp/raft":           "v1.7.3",
	"github.com/hashicorp/raft-boltdb/v2": "v2.3.1",
	"github.com/hashicorp/raft-wal":       "v0.4.2",
	"github.com/hashicorp/memberlist":     "v0.6.0",
	"github.com/cedar-policy/cedar-go":    "v1.9.0",
	"github.com/lestrrat-go/jwx/v2":       "v2.1.7",
	"github.com/hashicorp/go-hclog":       "v1.6.3",
}

func TestDependencyPins(t *testing.T) {
	data, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	mf, err := modfile.Parse("go.mod", data, nil)
	if err != nil {
		t.Fatal(err)
	}
	required := map[string]string{}
	for _, r := range mf.Require {
		required[r.Mod.Path] = r.Mod.Version
	}
	for path, want := range knownGood {
		if got := required[path]; got != want {
			t.Errorf("go.mod requires %s %q, the known-good pin is %s", path, got, want)
		}
	}
	if v, ok := required["github.com/hashicorp/go-metrics"]; ok && semver.Compare(v, "v0.7.0") >= 0 {
		t.Errorf("go.mod requires go-metrics %s; v0.7 dropped the compat package raft-boltdb/v2 imports", v)
	}

	for _, r := range mf.Replace {
		if _, pinned := knownGood[r.Old.Path]; pinned {
			t.Errorf("go.mod replaces %s with %s %s; the pins hold only without a replace", r.Old.Path, r.New.Path, r.New.Version)
		}
	}
}
