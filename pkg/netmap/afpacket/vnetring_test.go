package afpacket

import (
	"bytes"
	"encoding/binary"
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/epair-cni/epair/internal/sys"
	"github.com/epair-cni/epair/internal/testutil/netnsutil"
	"github.com/epair-cni/epair/internal/testutil/netnsutil/porttest"
	"golang.org/x/sys/unix"
)

// ringCfg is a pod end's offload socket with the receive ring.
var ringCfg = Config{VnetHdr: true, VnetRxRing: true}

// mixedFrames is n frames in runs of four: a short one (a ring slot), two super-frames and
// a plain frame of 1300 bytes of payload (three in a row longer than a slot: the receive
// queue), each with a payload telling it apart.
func mixedFrames(n int) [][]byte {
	var fs [][]byte
	for i := range n {
		var f []byte
		switch i % 4 {
		case 0:
			f = tcpSuperFrame(20+i%64, 1448) // at most 137 bytes: a slot
			f[0], f[1] = 0, 0                // no offload: a plain frame
		case 3:
			f = tcpSuperFrame(1300+i, 1448)
			f[0], f[1] = 0, 0
		default:
			f = tcpSuperFrame(20000+i, 1448)
		}
		fs = append(fs, f)
	}
	return fs
}

// gso reports whether mixedFrames' frame i is a super-frame.
func gso(i int) bool { return i%4 == 1 || i%4 == 2 }

// ours reports whether f (header + frame) is one of the test's IPv4 frames, not the pod's
// own IPv6 chatter.
func ours(f []byte) bool {
	return len(f) >= VnetHdrLen+14 && binary.BigEndian.Uint16(f[VnetHdrLen+12:]) == 0x0800
}

// sameFrame compares two frames after their virtio_net_hdr (the receiver's may say more
// than the sender's, DATA_VALID for one).
func sameFrame(a, b []byte) bool {
	return len(a) >= VnetHdrLen && len(b) >= VnetHdrLen && bytes.Equal(a[VnetHdrLen:], b[VnetHdrLen:])
}

// collect receives with recv until want test frames came or 5 s passed.
func collect(t *testing.T, s *Socket, want int, recv func() [][]byte) [][]byte {
	t.Helper()
	var got [][]byte
	for deadline := time.Now().Add(5 * time.Second); len(got) < want && time.Now().Before(deadline); {
		fs := recv()
		if len(fs) == 0 {
			if err := s.WaitRX(50 * time.Millisecond); err != nil && !errors.Is(err, sys.ErrTimeout) {
				t.Fatal(err)
			}
			continue
		}
		for _, f := range fs {
			if ours(f) {
				got = append(got, bytes.Clone(f))
			}
		}
	}
	return got
}

// batchRecv is a receive for collect: one Receive into bufs, the frames it filled.
func batchRecv(t *testing.T, s *Socket, bufs [][]byte, lens []int) func() [][]byte {
	return func() [][]byte {
		n, err := s.Receive(bufs, lens)
		if err != nil {
			t.Fatal(err)
		}
		var fs [][]byte
		for i := range n {
			fs = append(fs, bufs[i][:lens[i]])
		}
		return fs
	}
}

// TestVnetRingOrder: through the ring, short frames (in their slots) and super-frames
// (longer than a slot, taken whole from the receive queue when their cut slot comes) arrive
// in the order sent, intact, with their virtio_net_hdr, whether taken in batches
// (Receive) or one by one over buffer chains (RxScatter); the port shows frames pending
// while they wait.
func TestVnetRingOrder(t *testing.T) {
	for _, mode := range []string{"batch", "scatter"} {
		t.Run(mode, func(t *testing.T) {
			p := netnsutil.TwoPods(t)
			a := open(t, p.Host, p.HostA, Config{VnetHdr: true})
			pod := open(t, p.A, "eth0", ringCfg)
			sent := mixedFrames(40)
			if n, err := a.Transmit(sent); err != nil || n != len(sent) {
				t.Fatalf("Transmit = %d, %v", n, err)
			}
			if err := pod.WaitRX(5 * time.Second); err != nil {
				t.Fatal(err)
			}
			if !pod.RxPending(0) {
				t.Fatal("frames in the ring, and RxPending says none")
			}
			var got [][]byte
			switch mode {
			case "batch":
				bufs, lens := make([][]byte, 8), make([]int, 8)
				for i := range bufs {
					bufs[i] = make([]byte, MaxVnetFrame)
				}
				got = collect(t, pod, len(sent), batchRecv(t, pod, bufs, lens))
			case "scatter":
				chain := make([][]byte, 33) // 64 KiB in 2 KiB buffers
				for i := range chain {
					chain[i] = make([]byte, 2048)
				}
				got = collect(t, pod, len(sent), func() [][]byte {
					n, ok, err := pod.RxScatter(0, chain)
					if err != nil {
						t.Fatal(err)
					}
					if !ok || n == 0 {
						return nil
					}
					var f []byte
					for _, b := range chain {
						f = append(f, b[:min(len(b), n-len(f))]...)
					}
					return [][]byte{f}
				})
			}
			if len(got) != len(sent) {
				t.Fatalf("received %d of %d frames", len(got), len(sent))
			}
			for i := range sent {
				if !sameFrame(got[i], sent[i]) {
					t.Fatalf("frame %d (%d bytes sent, %d received) differs or is out of order", i, len(sent[i]), len(got[i]))
				}
				var h VnetHdr
				h.Decode(got[i])
				if big := gso(i); big != (h.GSOType == VnetGSOTCPv4) {
					t.Fatalf("frame %d: header %+v; want GSO %v", i, h, big)
				}
			}
			if st := pod.Stats(); st.RxTruncated != 0 || st.RxErrors != 0 {
				t.Fatalf("stats %+v; want nothing cut or wrong", st)
			}
		})
	}
}

// TestVnetRingQueueFull: super-frames that find the receive queue full reach the ring cut
// and without their whole copy: each is dropped and counted (RxTruncated), never handed
// on cut, and the frames around them still arrive, in order.
func TestVnetRingQueueFull(t *testing.T) {
	p := netnsutil.TwoPods(t)
	a := open(t, p.Host, p.HostA, Config{VnetHdr: true})
	// The smallest receive queue (256 KiB): a few 60 KB super-frames fill it.
	pod := open(t, p.A, "eth0", Config{VnetHdr: true, VnetRxRing: true, BlockSize: MinVnetBlockSize, BlockCount: 2})
	var sent [][]byte
	for i := range 30 {
		sent = append(sent, tcpSuperFrame(60000+i, 1448))
	}
	last := tcpSuperFrame(64, 1448)
	last[0], last[1] = 0, 0
	sent = append(sent, last)
	for i := 0; i < len(sent); {
		n, err := a.Transmit(sent[i:])
		if err != nil {
			t.Fatal(err)
		}
		if i += n; n == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	bufs, lens := make([][]byte, 4), make([]int, 4)
	for i := range bufs {
		bufs[i] = make([]byte, MaxVnetFrame)
	}
	var got [][]byte
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		n, err := pod.Receive(bufs, lens)
		if err != nil {
			t.Fatal(err)
		}
		for i := range n {
			if f := bufs[i][:lens[i]]; ours(f) {
				got = append(got, bytes.Clone(f))
			}
		}
		if len(got) > 0 && sameFrame(got[len(got)-1], last) {
			break
		}
		if n == 0 {
			time.Sleep(5 * time.Millisecond)
		}
	}
	if len(got) == 0 || !sameFrame(got[len(got)-1], last) {
		t.Fatalf("the short frame sent last did not arrive (%d frames did)", len(got))
	}
	j := 0 // the super-frames received must be a subsequence of those sent, intact
	for _, g := range got[:len(got)-1] {
		for j < len(sent)-1 && !sameFrame(g, sent[j]) {
			j++
		}
		if j == len(sent)-1 {
			t.Fatalf("a %d-byte frame received was not sent in that order, or arrived changed", len(g))
		}
		j++
	}
	lost := uint64(len(sent) - len(got))
	if lost == 0 {
		t.Skip("the receive queue never filled; nothing to check")
	}
	if tr := pod.Stats().RxTruncated; tr != lost {
		t.Fatalf("%d super-frames lost, RxTruncated %d; want every loss counted", lost, tr)
	}
}

// TestVnetRingFull: frames that find every slot taken are the kernel's drops, reported by
// KernelStats (PACKET_STATISTICS of a TPACKET_V2 socket), and the ring goes on after it is
// emptied.
func TestVnetRingFull(t *testing.T) {
	p := netnsutil.TwoPods(t)
	a := open(t, p.Host, p.HostA, Config{VnetHdr: true})
	pod := open(t, p.A, "eth0", Config{VnetHdr: true, VnetRxRing: true, VnetRxSlots: 16})
	sent := mixedFrames(100)
	for i := range sent {
		sent[i] = sent[i-i%4] // short frames only
	}
	if n, err := a.Transmit(sent); err != nil || n != len(sent) {
		t.Fatalf("Transmit = %d, %v", n, err)
	}
	time.Sleep(50 * time.Millisecond)
	ks, err := pod.KernelStats()
	if err != nil {
		t.Fatal(err)
	}
	if ks.Drops < uint64(len(sent)-16) {
		t.Fatalf("kernel drops %d; want at least %d of %d frames sent to 16 slots", ks.Drops, len(sent)-16, len(sent))
	}
	bufs, lens := make([][]byte, 32), make([]int, 32)
	for i := range bufs {
		bufs[i] = make([]byte, 2048)
	}
	if n, err := pod.Receive(bufs, lens); err != nil || n > 16 || n == 0 {
		t.Fatalf("Receive = %d, %v; want the 16 slots' frames at most", n, err)
	}
	if n, err := a.Transmit(sent[:1]); err != nil || n != 1 {
		t.Fatalf("Transmit = %d, %v", n, err)
	}
	got := collect(t, pod, 1, batchRecv(t, pod, bufs, lens))
	if len(got) != 1 || !sameFrame(got[0], sent[0]) {
		t.Fatalf("after the ring was emptied: %d frames; want the one sent", len(got))
	}
}

// TestVnetRingConfig: the ring needs the header and a sane slot count.
func TestVnetRingConfig(t *testing.T) {
	for _, c := range []Config{
		{VnetRxRing: true},
		{VnetHdr: true, VnetRxRing: true, VnetRxSlots: 100},
		{VnetHdr: true, VnetRxRing: true, VnetRxSlots: 8},
		{VnetHdr: true, VnetRxRing: true, VnetRxSlots: 8192},
	} {
		if _, err := Prepare(c); !errors.Is(err, ErrBadConfig) {
			t.Errorf("Prepare(%+v) = %v; want ErrBadConfig", c, err)
		}
	}
}

// TestPrepareBind: a socket prepared ahead (ring and all) and bound later receives like one
// opened at once; a prepared socket is used once; binding to a missing interface, and
// closing a socket never bound, leave no descriptor behind.
func TestPrepareBind(t *testing.T) {
	p := netnsutil.TwoPods(t)
	a := open(t, p.Host, p.HostA, Config{VnetHdr: true})
	var pr *Prepared
	if err := p.A.Do(func() error {
		var err error
		pr, err = Prepare(ringCfg)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	pod, err := pr.Bind("eth0") // looked up in the namespace it was prepared in
	if err != nil {
		t.Fatal(err)
	}
	defer pod.Close()
	if _, err := pr.Bind("eth0"); !errors.Is(err, ErrClosed) {
		t.Fatalf("second Bind = %v; want ErrClosed", err)
	}
	sent := mixedFrames(4)
	if n, err := a.Transmit(sent); err != nil || n != len(sent) {
		t.Fatalf("Transmit = %d, %v", n, err)
	}
	bufs, lens := make([][]byte, 4), make([]int, 4)
	for i := range bufs {
		bufs[i] = make([]byte, MaxVnetFrame)
	}
	got := collect(t, pod, len(sent), batchRecv(t, pod, bufs, lens))
	if len(got) != len(sent) {
		t.Fatalf("received %d of %d frames", len(got), len(sent))
	}

	before := porttest.FDCount(t)
	for range 3 {
		pr, err := Prepare(ringCfg)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pr.Bind("no-such-if0"); err == nil || !errors.Is(err, syscall.ENODEV) {
			t.Fatalf("Bind to a missing interface = %v; want ENODEV", err)
		}
		pr, err = Prepare(ringCfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := pr.Close(); err != nil {
			t.Fatal(err)
		}
		if err := pr.Close(); err != nil {
			t.Fatalf("second Close = %v", err)
		}
	}
	if after := porttest.FDCount(t); after != before {
		t.Fatalf("open descriptors %d -> %d", before, after)
	}
}

// FuzzVnetRingSlot: whatever a slot's header says (the kernel's layout, checked anyway),
// Receive over the ring never panics or reads outside the slot, hands on only frames that
// lie inside their slot and fit their buffer, and gives every slot back.
func FuzzVnetRingSlot(f *testing.F) {
	f.Add(uint32(unix.TP_STATUS_USER), uint32(60), uint32(60), uint16(90), 64)
	f.Add(uint32(unix.TP_STATUS_USER), uint32(3000), uint32(1900), uint16(76), 2048)
	f.Add(uint32(unix.TP_STATUS_USER), uint32(10), uint32(10), uint16(2040), 16)
	f.Add(uint32(unix.TP_STATUS_USER), uint32(1500), uint32(1500), uint16(4), 2048)
	f.Fuzz(func(t *testing.T, status, tlen, snap uint32, mac uint16, buflen int) {
		const slots = 16
		s := &Socket{vnet: true, hdrLen: VnetHdrLen, vslots: slots}
		s.vring = make([]byte, slots*VnetRingSlotSize)
		status &^= unix.TP_STATUS_COPY // a long frame's copy needs a real socket
		for i := uint64(0); i < slots; i += 2 {
			h := sys.PointerAt[unix.Tpacket2Hdr](s.vring, i*VnetRingSlotSize)
			h.Status, h.Len, h.Snaplen, h.Mac = status, tlen, snap, mac
		}
		buflen = min(max(buflen, 0), 4096)
		bufs, lens := make([][]byte, slots), make([]int, slots)
		for i := range bufs {
			bufs[i] = make([]byte, buflen)
		}
		n, err := s.receiveVnetRing(bufs, lens)
		if err != nil {
			t.Fatal(err)
		}
		if status&unix.TP_STATUS_USER == 0 {
			if n != 0 {
				t.Fatalf("received %d from slots the kernel owns", n)
			}
			return
		}
		if n != 1 {
			t.Fatalf("received %d; want the first slot only (the second is the kernel's)", n)
		}
		if l := lens[0]; l != 0 {
			if l > buflen || uint64(mac)+uint64(snap) > VnetRingSlotSize || uint64(l) != uint64(snap)+VnetHdrLen || snap != tlen {
				t.Fatalf("handed on %d bytes from a slot saying len %d snap %d mac %d into %d", l, tlen, snap, mac, buflen)
			}
		}
		if st := sys.Uint32At(s.vring, 0).Load(); st != unix.TP_STATUS_KERNEL || s.vcur.Load() != 1 {
			t.Fatalf("slot status %#x, current %d after the receive; want it given back", st, s.vcur.Load())
		}
	})
}
