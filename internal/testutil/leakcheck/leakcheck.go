// Package leakcheck fails a test binary whose goroutines outlive its tests: every server,
// worker and adapter a test starts must be stopped by its owner's Close.
//
//	func TestMain(m *testing.M) { leakcheck.Main(m) }
package leakcheck

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// Grace is how long Main waits for goroutines that are already on their way out.
const Grace = 5 * time.Second

// Main runs the tests and, if they passed, exits non-zero when more goroutines are left
// than before they ran, printing every stack.
func Main(m *testing.M) {
	before := runtime.NumGoroutine()
	code := m.Run()
	if code == 0 {
		if err := Check(before, Grace); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

// Check waits up to grace for the goroutine count to fall back to before and returns an
// error listing every goroutine's stack if it does not.
func Check(before int, grace time.Duration) error {
	deadline := time.Now().Add(grace)
	for count() > before && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := count(); n > before {
		buf := make([]byte, 1<<20)
		return fmt.Errorf("leak: %d goroutines after the tests, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
	return nil
}

// count is the number of goroutines, less the one os/signal starts for the
// life of the process (go test -fuzz calls signal.Notify while tests run).
func count() int {
	n := runtime.NumGoroutine()
	buf := make([]byte, 1<<20)
	stacks := string(buf[:runtime.Stack(buf, true)])
	return n - strings.Count(stacks, "\nos/signal.signal_recv(")
}
