package dataplane

import (
	"testing"
	"time"

	"github.com/epair-cni/epair/pkg/linkport"
)

// TestRingPoolPorts: an offload switch's pod ports are bound from the dataplane's pool of
// prepared sockets (their rings set up before the pods exist, in the dataplane's
// namespace), receive through the ring (af_packet, no fallback) and reach each other; a
// burst larger than the pool sets the rest of the rings up itself; without a pool the
// ports still get their rings.
func TestRingPoolPorts(t *testing.T) {
	for _, pool := range []int{2, -1} {
		e := newEnv(t, 0, linkport.Auto, variants[2].mod(func(c *Config) { c.RingPool = pool }))
		r := e.dp.rings.Load()
		if pool < 0 {
			if r != nil {
				t.Fatal("a ring pool with RingPool -1")
			}
		} else {
			for deadline := time.Now().Add(10 * time.Second); r.Len() < pool; time.Sleep(5 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("the pool holds %d of %d sockets after 10 s (%v)", r.Len(), pool, r.Err())
				}
			}
		}
		for range 3 {
			p := e.addPod()
			pi, err := e.dp.Port(p.portName())
			if err != nil || pi.Backend != linkport.Packet.String() || pi.Fallback != "" {
				t.Fatalf("pool %d: port %+v, %v; want af_packet without a fallback", pool, pi, err)
			}
		}
		if r != nil && r.Taken() < uint64(pool) {
			t.Fatalf("%d ports bound from a pool of %d", r.Taken(), pool)
		}
		e.ping(e.pods[0], e.pods[2].ip)
		e.ping(e.pods[2], e.pods[1].ip)
	}
}
