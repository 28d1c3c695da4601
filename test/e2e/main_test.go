// Package e2e runs the keymesh binary as real processes on loopback: root
// servers bootstrap, join, lose their leader to kill -9, restart from their
// data directories, and are removed and replaced.
package e2e

import (
	"testing"

	"github.com/keymesh/keymesh/test/harness"
)

// bin is the keymesh binary built once for the whole package.
var bin string

func TestMain(m *testing.M) { harness.Main(m, &bin) }
