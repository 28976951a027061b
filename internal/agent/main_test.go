package agent

import (
	"testing"

	"github.com/epair-cni/epair/internal/testutil/leakcheck"
)

// TestMain fails the run if goroutines outlive the tests: every socket server, client and
// agent a test opens must be closed, and the runnables must stop with their context.
func TestMain(m *testing.M) { leakcheck.Main(m) }
