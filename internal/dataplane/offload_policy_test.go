package dataplane

import (
	"bytes"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"net"
	"testing"
	"time"

	"github.com/epair-cni/epair/pkg/linkport"
)

// tcpTransfer sends n pseudo-random bytes from pod a to pod b over TCP and
// checks that b got them intact; it returns the rate in bit/s.
func tcpTransfer(t *testing.T, a, b *pod, n int) float64 {
	t.Helper()
	var ln net.Listener
	if err := b.ns.Do(func() (err error) { ln, err = net.Listen("tcp", b.ip+":5201"); return }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		sum [32]byte
		n   int64
		err error
	}
	got := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- result{err: err}
			return
		}
		defer c.Close()
		h := sha256.New()
		m, err := io.Copy(h, c)
		var r result
		copy(r.sum[:], h.Sum(nil))
		r.n, r.err = m, err
		got <- r
	}()
	var c net.Conn
	if err := a.ns.Do(func() (err error) { c, err = net.DialTimeout("tcp", b.ip+":5201", 5*time.Second); return }); err != nil {
		t.Fatal(err)
	}
	data := make([]byte, n)
	rng := rand.New(rand.NewPCG(7, 9))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	want := sha256.Sum256(data)
	start := time.Now()
	if _, err := io.Copy(c, bytes.NewReader(data)); err != nil {
		t.Fatalf("send: %v", err)
	}
	c.Close()
	var r result
	select {
	case r = <-got:
	case <-time.After(60 * time.Second):
		t.Fatal("the receiver did not finish")
	}
	el := time.Since(start)
	if r.err != nil || r.n != int64(n) || r.sum != want {
		t.Fatalf("TCP transfer: received %d of %d bytes (err %v), intact %v", r.n, n, r.err, r.sum == want)
	}
	return float64(n) * 8 / el.Seconds()
}

// TestOffloadTCPAndRate: on an offload switch, pods with TSO send 64 KB
// super-frames that cross the switch and the output queues whole, the data
// arrives intact, and a port's rate limit holds for them.
func TestOffloadTCPAndRate(t *testing.T) {
	e := newEnv(t, 2, linkport.Auto, variants[2].mod(nil))
	a, b := e.pods[0], e.pods[1]
	e.ping(a, b.ip)
	free := tcpTransfer(t, a, b, 64<<20)
	pa, _ := e.dp.Port(a.portName())
	pb, _ := e.dp.Port(b.portName())
	t.Logf("unlimited: %.2f Gbit/s; %d super-frames from A, queue to B: %+v", free/1e9, pa.RxChains, pb.Queue)
	if pa.RxChains == 0 {
		t.Fatal("no super-frames came from pod A (TSO off?)")
	}
	if pb.Queue.NoBuf != 0 || pb.Queue.TxErrors != 0 {
		t.Fatalf("queue to B: %+v", pb.Queue)
	}

	const limit = 100e6
	if err := e.dp.SetPortPolicy(b.portName(), PortPolicy{RateBitsPerSec: limit}); err != nil {
		t.Fatal(err)
	}
	got := tcpTransfer(t, a, b, 16<<20)
	t.Logf("limited to %.0f Mbit/s: %.1f Mbit/s", limit/1e6, got/1e6)
	if got > limit*1.15 || got < limit*0.5 {
		t.Fatalf("TCP through a %.0f Mbit/s limit: %.1f Mbit/s", limit/1e6, got/1e6)
	}
}
