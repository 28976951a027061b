package linkport

import (
	"testing"

	"github.com/epair-cni/epair/internal/testutil/netnsutil"
)

func TestMain(m *testing.M) { netnsutil.Main(m) }
