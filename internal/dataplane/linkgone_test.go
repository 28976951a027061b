package dataplane

import (
	"context"
	"testing"
	"time"
)

// TestLinkDeletedWhileAttached removes a pod's link under the dataplane
// (the CNI deleted the pod first): the port must go away by itself, cost
// no CPU meanwhile, and a later DetachPort must succeed.
func TestLinkDeletedWhileAttached(t *testing.T) {
	for _, be := range backends {
		t.Run(be.String(), func(t *testing.T) {
			e := newEnv(t, 2, be, nil)
			a, b := e.pods[0], e.pods[1]
			e.ping(a, b.ip)
			if err := e.cl.Destroy(b.pair.HostName); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the port of the deleted link to go", 5*time.Second, func() bool {
				_, err := e.dp.Port(b.portName())
				return err != nil
			})
			if n := e.dp.AutoDetached(); n != 1 {
				t.Errorf("AutoDetached() = %d, want 1", n)
			}
			// The other pod's port may still be moving to AF_XDP in the background (an
			// XDP attach costs tens of milliseconds): that is not the deleted link's cost.
			settle(t, e.dp)
			c0, t0 := cpuTime(t), time.Now()
			time.Sleep(time.Second)
			if share := float64(cpuTime(t)-c0) / float64(time.Since(t0)); share > 0.05 {
				t.Errorf("after the link went: %.1f%% of a core", 100*share)
			}
			if err := e.dp.DetachPort(context.Background(), b.portName()); err != nil {
				t.Fatalf("detach after the link went: %v", err)
			}
			e.ping(a, testGW)
		})
	}
}
