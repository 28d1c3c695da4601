package attack

import (
	"testing"

	"github.com/keymesh/keymesh/test/harness"
)

// bin is the keymesh binary built once for the whole package.
var bin string

func TestMain(m *testing.M) { harness.Main(m, &bin) }
