package vale

import (
	"errors"
	"syscall"
	"testing"

	"github.com/epair-cni/epair/pkg/netmap"
)

// vnetFrame prefixes an Ethernet frame with a virtio-net header of hl bytes
// whose first byte is a recognisable flag value.
func vnetFrame(hl int, eth []byte) []byte {
	f := make([]byte, hl+len(eth))
	f[0], f[1] = 1, 1 // NEEDS_CSUM, GSO TCPv4: the switch must not look at them
	copy(f[hl:], eth)
	return f
}

// On a switch with VnetHdrLen 10 the header travels with the frame as bytes,
// learning reads the Ethernet header after it, and 64 KB super-frames cross
// as slot chains; bad lengths are refused.
func TestVnetHdrSwitch(t *testing.T) {
	nm, r := newTestRegistry(t, func(o *Options) { o.PortGeometry.TxSlots, o.PortGeometry.RxSlots = 128, 128 })
	cfg := DefaultConfig()
	cfg.VnetHdrLen = 7
	if _, err := r.CreateSwitch("vale5", cfg); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("VnetHdrLen 7: %v; want EINVAL", err)
	}
	cfg.VnetHdrLen = VnetHdrLen
	cfg.MaxFrame = MaxFrameHi
	if _, err := r.CreateSwitch("vale5", cfg); err != nil {
		t.Fatal(err)
	}
	a := openPort(t, nm, "vale5:a", mac(0xa))
	b := openPort(t, nm, "vale5:b", mac(0xb))
	c := openPort(t, nm, "vale5:c", mac(0xc))
	h := nm.Open()
	defer h.Close()
	if err := h.Register(&netmap.Req{Name: "vale5:a", Version: netmap.API, Cmd: netmap.BdgVnetHdr, Arg1: VnetHdrLen}); err != nil {
		t.Fatalf("BDG_VNET_HDR with the switch's length: %v", err)
	}
	if err := h.Register(&netmap.Req{Name: "vale5:a", Version: netmap.API, Cmd: netmap.BdgVnetHdr, Arg1: 0}); !errors.Is(err, syscall.EOPNOTSUPP) {
		t.Fatalf("BDG_VNET_HDR 0 on a 10-byte switch: %v; want EOPNOTSUPP", err)
	}

	// b announces itself (flooded), then a's unicast to b reaches only b.
	hello := vnetFrame(VnetHdrLen, ethFrame(bcast, b.mac, 60))
	b.send(hello)
	a.expect(hello)
	c.expect(hello)
	big := vnetFrame(VnetHdrLen, ethFrame(b.mac, a.mac, 65000))
	small := vnetFrame(VnetHdrLen, ethFrame(b.mac, a.mac, 60))
	if n := a.sendFrag(2048, big, small); n != 2 {
		t.Fatalf("sent %d of 2", n)
	}
	var slots []int
	got := b.recvSlots(&slots)
	if len(got) != 2 || string(got[0]) != string(big) || string(got[1]) != string(small) {
		t.Fatalf("b received %d frames; want the super-frame and the small one, intact", len(got))
	}
	if slots[0] < 2 {
		t.Errorf("super-frame arrived in %d slot(s); want a chain", slots[0])
	}
	c.expect()
	// A frame too short for header + Ethernet header is a bad frame.
	before := r.switches["vale5"].Counters()
	a.send(make([]byte, VnetHdrLen+10))
	b.expect()
	after := r.switches["vale5"].Counters()
	if after.Drops[DropBadFrame] != before.Drops[DropBadFrame]+1 {
		t.Errorf("bad-frame drops %d -> %d; want +1", before.Drops[DropBadFrame], after.Drops[DropBadFrame])
	}
}
