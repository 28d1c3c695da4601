// Package e2e runs the keymesh binary as real processes on loopback: root
// servers bootstrap, join, lose their leader to kill -9, restart from their
// data directories, and are removed and replaced.
package e2e

import (
	"fmt"
	"os"
	"testing"

	"github.com/keymesh/keymesh/test/harness"
)

// bin is the keymesh binary built once for the whole package.
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "keymesh-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin, err = harness.Build(dir, os.Getenv("KEYMESH_E2E_RACE") == "1")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
