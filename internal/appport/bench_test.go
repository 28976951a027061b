package appport

import (
	"runtime"
	"testing"
	"time"
)

// BenchmarkAppToApp: application to application through the switch, as
// issue 17 measures it, with the agent in process. Two applications' ports
// (vale0:a, vale0:b) on one server, as in appport_test.go; a sends b.N
// 60-byte frames (64 bytes on a wire, with the FCS) unicast to b in batches,
// and b receives every one of them. One op is one frame: ns/op is the time
// per frame, frames/s the rate, allocs/op the allocations per frame.
//
// What allocs/op covers: b.ReportAllocs counts every allocation of the
// process during the timed loop, and the client and the server share the
// process. The client side here only touches its rings and calls TxSync and
// RxSync (no Poll: it yields instead of sleeping), which do not allocate, so
// the figure is in effect the agent side's: the server's sync loops (one per
// port: copying between the shared region and the krings, txsync/rxsync),
// the VALE switch forwarding between the ports, and the runtime. A zero means
// no allocation per frame anywhere on that path; a non-zero figure is an
// upper bound for the agent's share.
//
// Sent and not yet received frames are kept below a quarter of b's RX ring:
// VALE drops what does not fit a receiver's ring (it never blocks a sender),
// and the benchmark counts every frame. Should the switch drop some anyway,
// they count as moved once nothing else is in flight, and "dropped" (for the
// warm-up and the timed loop together) says how many.
func BenchmarkAppToApp(b *testing.B) {
	const (
		size  = 60
		batch = 256
	)
	w := newWorld(b, Options{})
	pa := w.open(b, "vale0:a")
	pb := w.open(b, "vale0:b")
	// b announces itself so the switch learns its MAC; then a sends unicast.
	send(b, pb, frame(0xff, 0xb, 0, size))
	recv(b, pa, 1, 2*time.Second)

	tx, rx := pa.TxRing(0), pb.RxRing(0)
	// Every TX buffer holds the frame once: the server copies out of the
	// shared buffers, so they stay the application's.
	f := frame(0xb, 0xa, 1, size)
	for i := uint32(0); i < tx.NumSlots(); i++ {
		copy(tx.Buf(i), f)
	}
	// A quarter of the ring: the server sees b's releases one sync of its
	// loop late, so b's ring can hold up to twice the window.
	window := uint64(rx.NumSlots() / 4)
	sw, err := w.reg.Switch("vale0")
	if err != nil {
		b.Fatal(err)
	}
	var dropped uint64
	move := func(n uint64) {
		var sent, got uint64
		drops0 := sw.Counters().Dropped()
		progress := time.Now()
		for got < n {
			k := 0
			for k < batch && sent < n && sent-got < window && tx.Space() > 0 {
				i := tx.Cur()
				tx.Slot(i).Len = size
				tx.Advance(tx.Next(i))
				sent++
				k++
			}
			if err := pa.TxSync(); err != nil {
				b.Fatal(err)
			}
			g := got
			for !rx.Empty() {
				i := rx.Cur()
				rx.Advance(rx.Next(i))
				got++
			}
			if err := pb.RxSync(); err != nil {
				b.Fatal(err)
			}
			if k > 0 || got > g {
				progress = time.Now()
				continue
			}
			if idle := time.Since(progress); idle > 100*time.Millisecond {
				// Nothing moves: frames the switch dropped (none
				// expected) count as done, and are reported.
				d := sw.Counters().Dropped() - drops0
				if sent-got <= d {
					dropped += d
					return
				}
				if idle > 5*time.Second {
					b.Fatalf("no progress for 5s: sent %d, received %d of %d frames, %d dropped", sent, got, n, d)
				}
			}
			runtime.Gosched()
		}
	}
	move(10000) // warm up: the switch's tables, the loops' first wake-ups
	b.ReportAllocs()
	b.ResetTimer()
	t0 := time.Now()
	move(uint64(b.N))
	el := time.Since(t0)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/el.Seconds(), "frames/s")
	b.ReportMetric(float64(dropped), "dropped")
}
