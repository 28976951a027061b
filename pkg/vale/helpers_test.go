package vale

import (
	"bytes"
	"net"
	"testing"

	"github.com/epair-cni/epair/pkg/netmap"
)

// fakeClock is an injectable clock for aging tests.
type fakeClock struct{ now int64 }

func (c *fakeClock) read() int64 { return c.now }

func newTestRegistry(t testing.TB, mod func(*Options)) (*netmap.Netmap, *Registry) {
	t.Helper()
	nm := netmap.New(netmap.Config{})
	opts := DefaultOptions()
	opts.PortGeometry.TxSlots, opts.PortGeometry.RxSlots = 64, 64
	if mod != nil {
		mod(&opts)
	}
	r, err := New(nm, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("close registry: %v", err)
		}
	})
	return nm, r
}

// userPort is a test user of a VALE port: a netmap handle registered on
// "vale<sw>:<port>", sending on TX ring 0 and receiving on RX ring 0.
type userPort struct {
	t    testing.TB
	h    *netmap.Handle
	name string
	mac  net.HardwareAddr
}

func openPort(t testing.TB, nm *netmap.Netmap, name string, m net.HardwareAddr) *userPort {
	t.Helper()
	h := nm.Open()
	req := &netmap.Req{Name: name, Version: netmap.API, Flags: netmap.RegAllNIC}
	if err := h.Register(req); err != nil {
		h.Close()
		t.Fatalf("register %s: %v", name, err)
	}
	u := &userPort{t: t, h: h, name: name, mac: m}
	t.Cleanup(func() { h.Close() })
	return u
}

// send queues frames (each possibly cut into fragments of at most frag
// bytes, 0 = no cut) and txsyncs. It returns how many frames fit.
func (u *userPort) sendFrag(frag int, frames ...[]byte) int {
	u.t.Helper()
	r := u.h.TxRing(0)
	sent := 0
	for _, f := range frames {
		parts := [][]byte{f}
		if frag > 0 && len(f) > frag {
			parts = nil
			for off := 0; off < len(f); off += frag {
				parts = append(parts, f[off:min(off+frag, len(f))])
			}
		}
		if int(r.Space()) < len(parts) {
			break
		}
		for i, p := range parts {
			s := &r.Slot[r.Head]
			s.Len = uint16(copy(r.Buf(r.Head), p))
			s.Flags = 0
			if i < len(parts)-1 {
				s.Flags = netmap.MoreFrag
			}
			r.Advance(r.Next(r.Head))
		}
		sent++
	}
	if err := u.h.TxSync(); err != nil {
		u.t.Fatalf("txsync %s: %v", u.name, err)
	}
	return sent
}

func (u *userPort) send(frames ...[]byte) int { return u.sendFrag(0, frames...) }

// recv rxsyncs and returns every complete frame received (fragments
// joined), releasing the slots.
func (u *userPort) recv() [][]byte {
	u.t.Helper()
	return u.recvSlots(nil)
}

// recvSlots is recv that also reports the slot count of each frame.
func (u *userPort) recvSlots(nslots *[]int) [][]byte {
	u.t.Helper()
	if err := u.h.RxSync(); err != nil {
		u.t.Fatalf("rxsync %s: %v", u.name, err)
	}
	r := u.h.RxRing(0)
	var out [][]byte
	var cur []byte
	n := 0
	for r.Head != r.Tail {
		s := &r.Slot[r.Head]
		cur = append(cur, r.Buf(r.Head)[:s.Len]...)
		n++
		if s.Flags&netmap.MoreFrag == 0 {
			out = append(out, cur)
			if nslots != nil {
				*nslots = append(*nslots, n)
			}
			cur, n = nil, 0
		}
		r.Advance(r.Next(r.Head))
	}
	if err := u.h.RxSync(); err != nil { // release
		u.t.Fatalf("rxsync %s: %v", u.name, err)
	}
	return out
}

func (u *userPort) expect(want ...[]byte) {
	u.t.Helper()
	got := u.recv()
	if len(got) != len(want) {
		u.t.Fatalf("%s received %d frames, want %d", u.name, len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			u.t.Fatalf("%s frame %d differs: got %d bytes %x..., want %d bytes %x...", u.name, i, len(got[i]), got[i][:min(16, len(got[i]))], len(want[i]), want[i][:min(16, len(want[i]))])
		}
	}
}
