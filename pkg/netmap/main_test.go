package netmap

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestMain fails the run if goroutines running this package's code (generic
// adapter readiness loops, pollers) outlive the tests.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		deadline := time.Now().Add(3 * time.Second)
		leaked := ours()
		for len(leaked) > 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
			leaked = ours()
		}
		if len(leaked) > 0 {
			fmt.Fprintf(os.Stderr, "goroutine leak:\n%s\n", strings.Join(leaked, "\n\n"))
			code = 1
		}
	}
	os.Exit(code)
}

// ours lists the stacks of goroutines, other than this one, that are in
// this package.
func ours() []string {
	buf := make([]byte, 1<<20)
	var out []string
	for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
		if strings.Contains(g, "pkg/netmap.") && !strings.Contains(g, "pkg/netmap.TestMain") && !strings.Contains(g, "pkg/netmap.ours") {
			out = append(out, g)
		}
	}
	return out
}
