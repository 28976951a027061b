package vale

import (
	"testing"

	"github.com/epair-cni/epair/internal/testutil/leakcheck"
)

// TestMain fails the package if goroutines outlive the tests (bwrap
// workers, generic adapters' readiness goroutines).
func TestMain(m *testing.M) { leakcheck.Main(m) }
