package linkport

import (
	"testing"
	"time"

	"github.com/epair-cni/epair/internal/testutil/netnsutil"
	"github.com/epair-cni/epair/pkg/netmap/afpacket"
)

// BenchmarkOpen times opening and closing a port on a veth end, one at a time, per
// backend: what attaching a pod's link costs (the figures in BENCHMARKS.md, "CNI
// ADD/DEL latency"). ms/open and ms/close are wall time per call.
func BenchmarkOpen(b *testing.B) {
	netnsutil.RequireRoot(b)
	for _, c := range []struct {
		name string
		opts Options
	}{
		{"af_xdp", Options{Backend: XDP}},
		{"af_packet", Options{Backend: Packet}},
		{"af_packet_ringless", Options{Backend: Ringless}},
		{"faststart", Options{FastStart: true}},
		{"offload", Options{Offload: true}},
		{"offload_pooled", Options{Offload: true}},
	} {
		b.Run(c.name, func(b *testing.B) {
			ns := netnsutil.New(b)
			netnsutil.Veth(b, ns, "o0", "", ns, "o1", "")
			opts := c.opts
			if c.name == "offload_pooled" {
				// The ring set up ahead (not timed): Open only binds.
				pool, err := NewRingPool(afpacket.Config{}, 1, ns.Do, nil)
				if err != nil {
					b.Fatal(err)
				}
				defer pool.Close()
				opts.Rings = pool
			}
			var open, close time.Duration
			for b.Loop() {
				if opts.Rings != nil {
					waitPool(b, opts.Rings, 1)
				}
				err := ns.Do(func() error {
					t0 := time.Now()
					o, err := Open("o0", opts)
					if err != nil {
						return err
					}
					t1 := time.Now()
					err = o.Port.Close()
					open += t1.Sub(t0)
					close += time.Since(t1)
					return err
				})
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(open.Microseconds())/1e3/float64(b.N), "ms/open")
			b.ReportMetric(float64(close.Microseconds())/1e3/float64(b.N), "ms/close")
		})
	}
}
