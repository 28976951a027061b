package leakcheck

import (
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestCheckReportsALeakAndAcceptsACleanRun(t *testing.T) {
	before := runtime.NumGoroutine()
	stop := make(chan struct{})
	go func() { <-stop }()
	err := Check(before, 50*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "leak: ") {
		t.Fatalf("Check with a parked goroutine = %v, want a leak report", err)
	}
	close(stop)
	if err := Check(before, Grace); err != nil {
		t.Fatalf("Check after the goroutine ended: %v", err)
	}
}
