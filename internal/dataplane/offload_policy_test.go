package dataplane

import (
	"testing"

	"github.com/epair-cni/epair/internal/testutil/netnsutil"
	"github.com/epair-cni/epair/pkg/linkport"
)

// TestOffloadTCPAndRate: on an offload switch, pods with TSO send 64 KB
// super-frames that cross the switch and the output queues whole, the data
// arrives intact, and a port's rate limit holds for them.
func TestOffloadTCPAndRate(t *testing.T) {
	e := newEnv(t, 2, linkport.Auto, variants[2].mod(nil))
	a, b := e.pods[0], e.pods[1]
	e.ping(a, b.ip)
	free := netnsutil.TCPTransfer(t, a.ns, b.ns, b.ip, 5201, 64<<20)
	pa, _ := e.dp.Port(a.portName())
	pb, _ := e.dp.Port(b.portName())
	t.Logf("unlimited: %.2f Gbit/s; %d super-frames from A, queue to B: %+v", free/1e9, pa.RxChains, pb.Queue)
	if pa.RxChains == 0 {
		t.Fatal("no super-frames came from pod A (TSO off?)")
	}
	if pb.Queue.NoBuf != 0 || pb.Queue.TxErrors != 0 {
		t.Fatalf("queue to B: %+v", pb.Queue)
	}
	// Without a regulator, frames that find B's queue empty go straight from the switch's
	// buffers to B's link (cut-through): most of them in a stream whose link keeps up.
	if pb.Queue.Direct == 0 || pb.Queue.Direct > pb.Queue.TxFrames {
		t.Fatalf("queue to B: %d of %d frames cut through; want some, at most all", pb.Queue.Direct, pb.Queue.TxFrames)
	}
	// To the node through the TAP host port (IFF_VNET_HDR), and back.
	toHost := netnsutil.TCPTransfer(t, a.ns, e.host, testGW, 5202, 16<<20)
	fromHost := netnsutil.TCPTransfer(t, e.host, b.ns, b.ip, 5203, 16<<20)
	t.Logf("pod → node %.2f Gbit/s, node → pod %.2f Gbit/s", toHost/1e9, fromHost/1e9)

	const limit = 100e6
	if err := e.dp.SetPortPolicy(b.portName(), PortPolicy{RateBitsPerSec: limit}); err != nil {
		t.Fatal(err)
	}
	pb0, _ := e.dp.Port(b.portName())
	got := netnsutil.TCPTransfer(t, a.ns, b.ns, b.ip, 5201, 16<<20)
	t.Logf("limited to %.0f Mbit/s: %.1f Mbit/s", limit/1e6, got/1e6)
	if pb1, _ := e.dp.Port(b.portName()); pb1.Queue.Direct != pb0.Queue.Direct {
		t.Fatalf("%d frames cut through a port with a rate limit", pb1.Queue.Direct-pb0.Queue.Direct)
	}
	if got > limit*1.15 || got < limit*0.5 {
		t.Fatalf("TCP through a %.0f Mbit/s limit: %.1f Mbit/s", limit/1e6, got/1e6)
	}
}
