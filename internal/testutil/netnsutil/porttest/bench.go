package porttest

import (
	"encoding/binary"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/epair-cni/epair/internal/testutil/netnsutil"
)

// wire is a veth pair x0 ↔ x1 inside one namespace with a port open on each end: frames
// transmitted on port 0 arrive at port 1.
func wire(tb testing.TB, be Backend) (tx, rx Port) {
	ns := netnsutil.New(tb)
	netnsutil.Veth(tb, ns, "x0", "", ns, "x1", "")
	tx = be.Open(tb, ns, "x0")
	rx = be.Open(tb, ns, "x1")
	return tx, rx
}

// testFrames returns n 64-byte broadcast frames of a local experimental ethertype.
func testFrames(n int) [][]byte {
	frames := make([][]byte, n)
	for i := range frames {
		f := make([]byte, 64)
		copy(f, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 0x01, 0x88, 0xb5})
		binary.BigEndian.PutUint32(f[14:], uint32(i))
		frames[i] = f
	}
	return frames
}

type pump struct {
	tx, rx    Port
	frames    [][]byte
	bufs      [][]byte
	lens      []int
	sent, got int
}

func newPump(tx, rx Port, batch int) *pump {
	p := &pump{tx: tx, rx: rx, frames: testFrames(batch), bufs: make([][]byte, batch), lens: make([]int, batch)}
	for i := range p.bufs {
		p.bufs[i] = make([]byte, 2048)
	}
	return p
}

// step transmits one batch (as far as there is room) and receives what has arrived,
// keeping at most window frames outstanding. It waits only when it can make no progress.
func (p *pump) step(tb testing.TB, window int) {
	progress := false
	if p.sent-p.got < window {
		k, err := p.tx.Transmit(p.frames)
		if err != nil {
			tb.Fatal(err)
		}
		p.sent += k
		progress = k > 0
	}
	n, err := p.rx.Receive(p.bufs, p.lens)
	if err != nil {
		tb.Fatal(err)
	}
	p.got += n
	if n > 0 || progress {
		return
	}
	if err := p.rx.WaitRX(5 * time.Millisecond); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		tb.Fatal(err)
	}
	if p.sent-p.got >= window {
		// Frames were lost (the kernel drops when a ring is full): forget them.
		p.sent = p.got
	}
}

// Benchmark measures the batch transmit + receive path: frames go out one port's transmit
// ring, across a veth, into the other port's receive ring. b.N counts frames.
func Benchmark(b *testing.B, be Backend) {
	netnsutil.RequireRoot(b)
	tx, rx := wire(b, be)
	p := newPump(tx, rx, 64)
	for p.got < 64 { // warm up: first frames, page faults, wake-ups
		p.step(b, 256)
	}
	p.sent, p.got = 0, 0
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for p.got < b.N {
		p.step(b, 256)
	}
	el := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(p.got)/el.Seconds(), "pps")
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(el.Nanoseconds())/float64(p.got), "ns/frame")
}

// noAllocs checks that the steady-state batch path (Transmit, Receive and the waits) does not
// allocate.
func noAllocs(t *testing.T, be Backend) {
	tx, rx := wire(t, be)
	p := newPump(tx, rx, 32)
	for p.got < 256 {
		p.step(t, 128)
	}
	allocs := testing.AllocsPerRun(200, func() { p.step(t, 128) })
	if allocs != 0 {
		t.Fatalf("batch path allocates %.2f times per batch of 32 frames", allocs)
	}
	t.Logf("0 allocations per batch; %d frames received", p.got)
}
