package cniplugin

import (
	"testing"

	"github.com/epair-cni/epair/internal/testutil/leakcheck"
)

// TestMain fails the run if goroutines outlive the tests: every agent client, socket server
// and netlink handle a handler or a test opens must be closed.
func TestMain(m *testing.M) { leakcheck.Main(m) }
