package vale

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/epair-cni/epair/pkg/netmap"
)

// benchRing is one port of a forwarding benchmark: a user handle whose TX
// buffers are pre-filled with one frame (as pkt-gen does, the sender only
// sets lengths and advances head), and whose RX ring is drained on every
// round.
type benchRing struct {
	h  *netmap.Handle
	tx *netmap.Ring
	rx *netmap.Ring
}

func setupBench(b *testing.B, nports, frameLen int, slots uint32, bcastFrames bool) ([]*benchRing, *Registry) {
	b.Helper()
	maxFrame := DefaultMaxFrame
	if frameLen > maxFrame {
		maxFrame = frameLen
	}
	nm, r := newTestRegistry(b, func(o *Options) {
		o.Defaults.MaxPorts = max(DefaultMaxPorts, nports)
		o.Defaults.MaxFrame = maxFrame
		o.PortGeometry.TxSlots, o.PortGeometry.RxSlots = slots, slots
	})
	ports := make([]*benchRing, nports)
	for i := range ports {
		u := openPort(b, nm, fmt.Sprintf("vale0:p%d", i), mac(byte(i>>8), byte(i)))
		ports[i] = &benchRing{h: u.h, tx: u.h.TxRing(0), rx: u.h.RxRing(0)}
	}
	// Teach the switch every address, then drain.
	for i, p := range ports {
		f := ethFrame(bcast, mac(byte(i>>8), byte(i)), 64)
		s := &p.tx.Slot[p.tx.Head]
		s.Len = uint16(copy(p.tx.Buf(p.tx.Head), f))
		p.tx.Advance(p.tx.Next(p.tx.Head))
		p.h.TxSync()
		for _, q := range ports {
			q.drain()
		}
	}
	// Pre-fill: port i sends to port i+1 (or broadcasts).
	for i, p := range ports {
		dst := mac(byte((i+1)%nports>>8), byte((i+1)%nports))
		if bcastFrames {
			dst = bcast
		}
		f := ethFrame(dst, mac(byte(i>>8), byte(i)), frameLen)
		for j := range p.tx.Slot {
			p.tx.Slot[j].Len = uint16(copy(p.tx.Buf(uint32(j)), f))
			p.tx.Slot[j].Flags = 0
		}
	}
	return ports, r
}

// drain fetches what arrived, consumes it and releases the slots.
func (p *benchRing) drain() int {
	p.h.RxSync()
	n := int(p.rx.Space())
	p.rx.Advance(p.rx.Tail)
	p.h.RxSync()
	return n
}

// send queues up to n pre-filled frames and txsyncs.
func (p *benchRing) send(n int) int {
	n = min(n, int(p.tx.Space()))
	j := p.tx.Head + uint32(n)
	if j >= p.tx.NumSlots {
		j -= p.tx.NumSlots
	}
	p.tx.Advance(j)
	p.h.TxSync()
	return n
}

// runForward drives every port in turn from one goroutine (one core):
// each sends a burst to its neighbour, then every port drains.
func runForward(b *testing.B, ports []*benchRing, burst int, senders int, frameLen int) {
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	sent, recvd := 0, 0
	for sent < b.N {
		for _, p := range ports[:senders] {
			sent += p.send(min(burst, b.N-sent+1))
		}
		for _, p := range ports {
			recvd += p.drain()
		}
	}
	for _, p := range ports {
		recvd += p.drain()
	}
	el := time.Since(start).Seconds()
	b.StopTimer()
	pps := float64(sent) / el
	b.ReportMetric(pps, "pps")
	b.ReportMetric(pps/1e6, "Mpps")
	b.ReportMetric(pps*float64(frameLen)*8/1e9, "Gbit/s")
	b.ReportMetric(float64(recvd)/float64(sent), "delivered/sent")
}

// BenchmarkForward: known-unicast frames between ports, one core. The
// 2-port cases are the headline (VALE: ~20 Mpps at 64 bytes, ~70 Gbit/s at
// 1500 bytes); 8/64/254 active ports show the cost of more ports.
func BenchmarkForward(b *testing.B) {
	cases := []struct {
		ports, size int
		slots       uint32
	}{
		{2, 64, 1024},
		{2, 1514, 1024},
		{2, 64, 256},
		{8, 64, 256},
		{64, 64, 256},
		{254, 64, 256},
		{2, 1514, 256},
		{254, 1514, 256},
		// Same port counts with 64-slot rings: a 4× smaller footprint
		// (254 × 2 × 64 × 2 KiB = 65 MB) shows how much of the many-port
		// cost is memory rather than forwarding work.
		{2, 64, 64},
		{254, 64, 64},
	}
	for _, c := range cases {
		b.Run(fmt.Sprintf("ports=%d/size=%d/slots=%d", c.ports, c.size, c.slots), func(b *testing.B) {
			ports, _ := setupBench(b, c.ports, c.size, c.slots, false)
			runForward(b, ports, int(c.slots)-1, c.ports, c.size)
		})
	}
}

// BenchmarkForwardSmallBursts is BenchmarkForward with 32-frame bursts per
// port per round: the frames in flight per round stay few, which separates
// the cost of having many ports from the cost of a working set (254 ports ×
// 2 rings × 256 buffers) that does not fit the caches.
func BenchmarkForwardSmallBursts(b *testing.B) {
	for _, n := range []int{2, 8, 64, 254} {
		b.Run(fmt.Sprintf("ports=%d/size=64/burst=32", n), func(b *testing.B) {
			ports, _ := setupBench(b, n, 64, 256, false)
			runForward(b, ports, 32, n, 64)
		})
	}
}

// BenchmarkFlood: broadcast frames from one port to 1, 7 and 63 others.
// pps counts frames received by the switch; each is copied to every
// other port.
func BenchmarkFlood(b *testing.B) {
	for _, n := range []int{2, 8, 64} {
		b.Run(fmt.Sprintf("ports=%d", n), func(b *testing.B) {
			ports, _ := setupBench(b, n, 64, 256, true)
			runForward(b, ports, 255, 1, 64)
		})
	}
}

// BenchmarkFloodKnownOnly: like BenchmarkFlood, but every other frame is
// unknown unicast and half of the receivers are known-only, so pass two
// keeps two flood lists (broadcast + unknown, broadcast alone).
func BenchmarkFloodKnownOnly(b *testing.B) {
	for _, n := range []int{8, 64} {
		b.Run(fmt.Sprintf("ports=%d", n), func(b *testing.B) {
			ports, r := setupBench(b, n, 64, 256, true)
			sw, err := r.Switch("vale0")
			if err != nil {
				b.Fatal(err)
			}
			for i := 1; i < n; i += 2 {
				if err := sw.SetKnownOnly(fmt.Sprintf("p%d", i), true); err != nil {
					b.Fatal(err)
				}
			}
			tx := ports[0].tx
			unknown := ethFrame(mac(0xee, 0xee), mac(0), 64)
			for j := 1; j < len(tx.Slot); j += 2 {
				tx.Slot[j].Len = uint16(copy(tx.Buf(uint32(j)), unknown))
			}
			runForward(b, ports, 255, 1, 64)
		})
	}
}

// BenchmarkLearningLookup measures the lookup alone over 1024-frame
// batches: the hit path (known unicast, repeated source), the flood path
// (broadcast destination, changing sources that must be learned) and
// unknown unicast.
func BenchmarkLearningLookup(b *testing.B) {
	benchLookup(b, func(l *Learning, fr []Frame, now int64) { l.Lookup(1, fr, now) })
}

// BenchmarkLearningResolve is BenchmarkLearningLookup for Resolve (pod
// ports: no learning); unknown unicast probes both of the address's buckets.
func BenchmarkLearningResolve(b *testing.B) {
	benchLookup(b, func(l *Learning, fr []Frame, _ int64) { l.Resolve(fr, 0) })
}

func benchLookup(b *testing.B, call func(l *Learning, frames []Frame, now int64)) {
	for _, c := range []struct {
		name     string
		src, dst func(i int) net.HardwareAddr
	}{
		{"hit", func(i int) net.HardwareAddr { return mac(byte(200)) }, func(i int) net.HardwareAddr { return mac(byte(i % 64)) }},
		{"flood", func(i int) net.HardwareAddr { return mac(byte(i>>8), byte(i)) }, func(int) net.HardwareAddr { return bcast }},
		{"unknown", func(i int) net.HardwareAddr { return mac(byte(200)) }, func(i int) net.HardwareAddr { return mac(1, byte(i>>8), byte(i)) }},
	} {
		b.Run(c.name, func(b *testing.B) {
			fr := make([]Frame, 1024)
			for i := range fr {
				fr[i] = Frame{Data: ethFrame(c.dst(i), c.src(i), 64), Len: 64}
			}
			l := newLearning(b, DefaultFDBSize, DefaultAging, DefaultMaxPorts)
			for i := 0; i < 64; i++ {
				l.FDB().learn(macKey(mac(byte(i))), uint16(i), 0)
			}
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for done := 0; done < b.N; done += len(fr) {
				call(l, fr, int64(done))
			}
			el := time.Since(start).Seconds()
			n := (b.N + len(fr) - 1) / len(fr) * len(fr)
			b.ReportMetric(float64(n)/el, "pps")
		})
	}
}

// discardDeliverer takes every frame (an output queue that never fills).
type discardDeliverer struct{}

func (discardDeliverer) Deliver(d *Delivery) int { return d.Len() }

// discardTap looks at every frame's decision and keeps nothing.
type discardTap struct{ n int }

func (t *discardTap) Tapped(d *Delivery, _ bool) { t.n += d.Len() }

// BenchmarkForwardDeliverer: 64-byte known-unicast frames between 2 ports whose
// destination has a Deliverer (the dataplane's pod ports: the output queue), with and
// without a capture tap on both: a tap costs no allocation and little time.
func BenchmarkForwardDeliverer(b *testing.B) {
	for _, tapped := range []bool{false, true} {
		b.Run(fmt.Sprintf("tap=%v", tapped), func(b *testing.B) {
			ports, r := setupBench(b, 2, 64, 256, false)
			sw, _ := r.Switch("vale0")
			for _, p := range []string{"p0", "p1"} {
				if err := sw.SetDeliverer(p, discardDeliverer{}); err != nil {
					b.Fatal(err)
				}
				if tapped {
					if _, err := sw.AddTap(p, &discardTap{}); err != nil {
						b.Fatal(err)
					}
				}
			}
			runForward(b, ports, 255, 2, 64)
		})
	}
}

// BenchmarkCopyBound is the memory traffic of BenchmarkForward without the
// switch: per round, each port's 255 frames are read at their headers in
// their TX buffers and copied (64 bytes) into the next port's RX buffers,
// with the same per-port pools, 256-slot rings and independent touch loops
// as the switch's gather and deliverRing. It is the floor of the one copy
// per frame that VALE's private port memory needs on this machine: what
// BenchmarkForward loses between 2 and 254 ports that this loses too is
// the caches', not the switch's. The 128-byte buffers show the same ports
// with a footprint the hardware prefetchers can stream.
func BenchmarkCopyBound(b *testing.B) {
	for _, c := range []struct{ ports, bufSize int }{{2, 2048}, {254, 2048}, {2, 128}, {254, 128}} {
		b.Run(fmt.Sprintf("ports=%d/size=64/slots=256/buf=%d", c.ports, c.bufSize), func(b *testing.B) {
			const slots, frameLen = 256, 64
			type port struct {
				pool   *netmap.Pool
				tx, rx []uint32 // buffer index per slot
			}
			ports := make([]port, c.ports)
			for i := range ports {
				pool, err := netmap.NewPool(2*slots+2, c.bufSize)
				if err != nil {
					b.Fatal(err)
				}
				p := port{pool: pool, tx: make([]uint32, slots), rx: make([]uint32, slots)}
				for j := range slots {
					if p.tx[j], err = pool.Alloc(); err != nil {
						b.Fatal(err)
					}
					if p.rx[j], err = pool.Alloc(); err != nil {
						b.Fatal(err)
					}
					copy(pool.Buf(p.tx[j]), ethFrame(mac(byte(i+1)), mac(byte(i)), frameLen))
				}
				ports[i] = p
			}
			var x byte
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			n, pos := 0, 0
			for n < b.N {
				for i := range ports {
					src, dst := &ports[i], &ports[(i+1)%len(ports)]
					for k, j := 0, pos; k < slots-1; k, j = k+1, (j+1)%slots {
						x += src.pool.Buf(src.tx[j])[0]
					}
					for k, j := 0, pos; k < slots-1; k, j = k+1, (j+1)%slots {
						x += dst.pool.Buf(dst.rx[j])[0]
					}
					for k, j := 0, pos; k < slots-1; k, j = k+1, (j+1)%slots {
						copy(dst.pool.Buf(dst.rx[j]), src.pool.Buf(src.tx[j])[:frameLen])
					}
					n += slots - 1
				}
				pos = (pos + slots - 1) % slots
			}
			el := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(n)/el.Seconds()/1e6, "Mpps")
			b.ReportMetric(float64(el.Nanoseconds())/float64(n), "ns/frame")
			if x == 1 { // keep the touch loops
				b.Log(x)
			}
		})
	}
}
