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
)

// tcpSuperFrame builds virtio_net_hdr + Ethernet + IPv4 + TCP with payload bytes of
// data, marked for TSO with the given segment size and a partial checksum.
func tcpSuperFrame(payload, mss int) []byte {
	f := make([]byte, VnetHdrLen+14+20+20+payload)
	VnetHdr{Flags: VnetFlagNeedsCsum, GSOType: VnetGSOTCPv4, HdrLen: 54, GSOSize: uint16(mss), CsumStart: 34, CsumOffset: 16}.Encode(f)
	e := f[VnetHdrLen:]
	copy(e[0:6], []byte{0x02, 0, 0, 0, 0, 0xb})
	copy(e[6:12], []byte{0x02, 0, 0, 0, 0, 0xa})
	binary.BigEndian.PutUint16(e[12:], 0x0800)
	ip := e[14:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+20+payload))
	ip[6] = 0x40 // DF
	ip[8], ip[9] = 64, 6
	copy(ip[12:16], []byte{10, 77, 0, 9})
	copy(ip[16:20], []byte{10, 77, 0, 1})
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
	tcp := ip[20:]
	binary.BigEndian.PutUint16(tcp[0:], 40000)
	binary.BigEndian.PutUint16(tcp[2:], 9)
	tcp[12] = 5 << 4
	tcp[13] = 0x10 // ACK
	binary.BigEndian.PutUint16(tcp[14:], 65535)
	for i := range payload {
		tcp[20+i] = byte(i * 7)
	}
	return f
}

func TestVnetConfig(t *testing.T) {
	if _, err := Open("lo", Config{VnetHdr: true, BlockSize: 64 << 10}); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("VnetHdr with 64 KiB blocks: err = %v; want EINVAL", err)
	}
}

// A 30000-byte TSO super-frame written on the host end crosses the veth whole and is
// received, with its GSO metadata, by a VnetHdr socket on the pod's end; a frame with a
// header the kernel refuses is counted, not fatal.
func TestVnetSuperFrame(t *testing.T) { forVnetModes(t, testVnetSuperFrame) }

// vnetModes are the two ways a VnetHdr socket receives: recvmsg/recvmmsg, and the ring.
var vnetModes = []struct {
	name string
	cfg  Config
}{{"queue", Config{VnetHdr: true}}, {"ring", Config{VnetHdr: true, VnetRxRing: true}}}

// forVnetModes runs test once per receive mode, with the receiving socket's Config.
func forVnetModes(t *testing.T, test func(*testing.T, Config)) {
	for _, m := range vnetModes {
		t.Run(m.name, func(t *testing.T) { test(t, m.cfg) })
	}
}

func testVnetSuperFrame(t *testing.T, rcfg Config) {
	p := netnsutil.TwoPods(t)
	a := open(t, p.Host, p.HostA, Config{VnetHdr: true})
	pod := open(t, p.A, "eth0", rcfg)
	if !a.VnetHdr() || a.FrameSize() != MaxVnetFrame {
		t.Fatalf("VnetHdr() = %v, FrameSize() = %d; want true, %d", a.VnetHdr(), a.FrameSize(), MaxVnetFrame)
	}
	big := tcpSuperFrame(30000, 1448)
	bad := tcpSuperFrame(100, 1448)
	bad[1] = 0x42 // unknown GSO type
	tiny := make([]byte, VnetHdrLen+4)
	n, err := a.Transmit([][]byte{bad, tiny, big})
	if err != nil || n != 3 {
		t.Fatalf("Transmit = %d, %v; want 3", n, err)
	}
	st := a.Stats()
	if st.TxPackets != 1 || st.TxRejected != 1 || st.TxDropped != 1 || st.TxBytes != uint64(len(big)-VnetHdrLen) {
		t.Fatalf("stats = %+v; want 1 sent (%d bytes), 1 rejected, 1 dropped", st, len(big)-VnetHdrLen)
	}
	buf := make([]byte, MaxVnetFrame)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if err := pod.WaitRX(100 * time.Millisecond); err != nil && !errors.Is(err, sys.ErrTimeout) {
			t.Fatal(err)
		}
		lens := []int{0}
		n, err := pod.Receive([][]byte{buf}, lens)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 || lens[0] < VnetHdrLen+14 || binary.BigEndian.Uint16(buf[VnetHdrLen+12:]) != 0x0800 {
			continue // nothing yet, or the pod's own IPv6 chatter
		}
		got := buf[:lens[0]]
		if len(got) != len(big) {
			t.Fatalf("received %d bytes; want the whole %d-byte super-frame", len(got), len(big))
		}
		var h VnetHdr
		h.Decode(got)
		if h.GSOType != VnetGSOTCPv4 || h.GSOSize != 1448 {
			t.Errorf("received header %+v; want TCPv4 GSO, size 1448", h)
		}
		if h.Flags&VnetFlagNeedsCsum != 0 && (h.CsumStart != 34 || h.CsumOffset != 16) {
			t.Errorf("received header %+v; want csum 34+16", h)
		}
		if !bytes.Equal(got[VnetHdrLen:], big[VnetHdrLen:]) {
			t.Error("received frame differs from the one sent")
		}
		return
	}
	t.Fatal("super-frame not received on the pod's end")
}

// FuzzVnetHdr: Decode accepts any input of at least VnetHdrLen bytes and Encode
// reproduces those bytes; shorter input is refused.
func FuzzVnetHdr(f *testing.F) {
	f.Add(tcpSuperFrame(10, 1448)[:VnetHdrLen])
	f.Add([]byte{1, 2, 3})
	f.Add(make([]byte, VnetHdrLen))
	f.Fuzz(func(t *testing.T, b []byte) {
		var h VnetHdr
		if !h.Decode(b) {
			if len(b) >= VnetHdrLen {
				t.Fatalf("Decode refused %d bytes", len(b))
			}
			return
		}
		out := make([]byte, VnetHdrLen)
		if !h.Encode(out) || !bytes.Equal(out, b[:VnetHdrLen]) {
			t.Fatalf("round trip %x -> %+v -> %x", b[:VnetHdrLen], h, out)
		}
		if h.Encode(out[:VnetHdrLen-1]) {
			t.Fatal("Encode into a short buffer succeeded")
		}
	})
}

// TxFrags (writev from fragments) and RxScatter (recvmsg into buffers) move a super-frame
// intact and allocate nothing per frame.
func TestVnetFragsNoAlloc(t *testing.T) {
	p := netnsutil.TwoPods(t)
	a := open(t, p.Host, p.HostA, Config{VnetHdr: true})
	pod := open(t, p.A, "eth0", Config{VnetHdr: true})
	big := tcpSuperFrame(20000, 1448)
	frags := [][]byte{big[:100], big[100:2048], big[2048:]}
	bufs := make([][]byte, 33)
	for i := range bufs {
		bufs[i] = make([]byte, 2048)
	}
	recv := func() int {
		deadline := time.Now().Add(3 * time.Second)
		for time.Now().Before(deadline) {
			n, ok, err := pod.RxScatter(0, bufs)
			if err != nil {
				t.Fatal(err)
			}
			if ok && n > VnetHdrLen+14 && bufs[0][VnetHdrLen+12] == 0x08 {
				return n
			}
			if !ok {
				_ = pod.WaitRX(50 * time.Millisecond)
			}
		}
		return 0
	}
	if ok, err := a.TxFrags(0, frags); !ok || err != nil {
		t.Fatalf("TxFrags = %v, %v", ok, err)
	}
	n := recv()
	if n != len(big) {
		t.Fatalf("RxScatter got %d bytes; want %d", n, len(big))
	}
	var joined []byte
	for _, b := range bufs {
		joined = append(joined, b...)
	}
	if !bytes.Equal(joined[VnetHdrLen:n], big[VnetHdrLen:]) {
		t.Fatal("scattered frame differs")
	}
	allocs := testing.AllocsPerRun(20, func() {
		if ok, err := a.TxFrags(0, frags); !ok || err != nil {
			t.Fatalf("TxFrags = %v, %v", ok, err)
		}
		if recv() != len(big) {
			t.Fatal("frame lost")
		}
	})
	if allocs > 0 {
		t.Errorf("%.1f allocations per TxFrags+RxScatter; want 0", allocs)
	}
}

func TestFragsNeedVnetHdr(t *testing.T) {
	p := netnsutil.TwoPods(t)
	a := open(t, p.Host, p.HostA, Config{})
	if _, err := a.TxFrags(0, [][]byte{make([]byte, 64)}); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("TxFrags without VnetHdr: %v; want EINVAL", err)
	}
	if _, _, err := a.RxScatter(0, [][]byte{make([]byte, 64)}); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("RxScatter without VnetHdr: %v; want EINVAL", err)
	}
}

// TestVnetFragsRefused: a chain TxFrags cannot send (too short, too long, too many
// fragments, none) is consumed and counted, never written.
func TestVnetFragsRefused(t *testing.T) {
	p := netnsutil.TwoPods(t)
	a := open(t, p.Host, p.HostA, Config{VnetHdr: true})
	for _, c := range []struct {
		name  string
		frags [][]byte
	}{
		{"none", nil},
		{"shorter than a header and an Ethernet header", [][]byte{make([]byte, 10), make([]byte, 13)}},
		{"longer than a super-frame", [][]byte{make([]byte, 40000), make([]byte, 40000)}},
		{"too many fragments", make([][]byte, maxTxFrags+1)},
	} {
		before := a.Stats()
		if ok, err := a.TxFrags(0, c.frags); !ok || err != nil {
			t.Fatalf("%s: TxFrags = %v, %v; want consumed", c.name, ok, err)
		}
		if st := a.Stats(); st.TxDropped != before.TxDropped+1 || st.TxPackets != before.TxPackets {
			t.Fatalf("%s: stats %+v after %+v; want one more dropped, none sent", c.name, st, before)
		}
	}
}

// TestVnetReceiveBatch: a VnetHdr socket takes the frames queued on it in batches
// (recvmmsg, rxBatchMax at a time): 40 frames written at once come back in order, intact,
// each with its virtio_net_hdr, and one Receive fills all 32 buffers offered (more than
// one recvmmsg), since fewer frames than buffers must mean the socket had no more; a
// frame longer than its buffer is cut and dropped (counted, its length 0), never handed
// on.
func TestVnetReceiveBatch(t *testing.T) { forVnetModes(t, testVnetReceiveBatch) }

func testVnetReceiveBatch(t *testing.T, rcfg Config) {
	p := netnsutil.TwoPods(t)
	a := open(t, p.Host, p.HostA, Config{VnetHdr: true})
	pod := open(t, p.A, "eth0", rcfg)
	var sent [][]byte
	for i := range 40 {
		f := tcpSuperFrame(100+i, 1448)
		f[0], f[1] = 0, 0 // no offload: a plain frame
		sent = append(sent, f)
	}
	if n, err := a.Transmit(sent); err != nil || n != len(sent) {
		t.Fatalf("Transmit = %d, %v", n, err)
	}
	bufs, lens := make([][]byte, 32), make([]int, 32)
	for i := range bufs {
		bufs[i] = make([]byte, MaxVnetFrame)
	}
	var got [][]byte
	calls, most := 0, 0
	for deadline := time.Now().Add(5 * time.Second); len(got) < len(sent) && time.Now().Before(deadline); {
		n, err := pod.Receive(bufs, lens)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		calls++
		most = max(most, n)
		for i := range n {
			f := bufs[i][:lens[i]]
			if len(f) < VnetHdrLen+14 || binary.BigEndian.Uint16(f[VnetHdrLen+12:]) != 0x0800 {
				continue // the pod's own IPv6 or ARP chatter
			}
			got = append(got, bytes.Clone(f[VnetHdrLen:]))
		}
	}
	if len(got) != len(sent) {
		t.Fatalf("received %d of %d frames", len(got), len(sent))
	}
	for i := range sent {
		if !bytes.Equal(got[i], sent[i][VnetHdrLen:]) {
			t.Fatalf("frame %d differs or is out of order", i)
		}
	}
	if most != len(bufs) {
		t.Fatalf("at most %d frames per call over %d calls; want one call to fill all %d buffers", most, calls, len(bufs))
	}
	// A frame longer than the buffer offered: cut, dropped and counted.
	if n, err := a.Transmit([][]byte{sent[0]}); err != nil || n != 1 {
		t.Fatalf("Transmit = %d, %v", n, err)
	}
	small := [][]byte{make([]byte, 64)}
	trunc0 := pod.Stats().RxTruncated
	for deadline := time.Now().Add(5 * time.Second); pod.Stats().RxTruncated == trunc0 && time.Now().Before(deadline); {
		n, err := pod.Receive(small, lens[:1])
		if err != nil {
			t.Fatal(err)
		}
		if n == 1 && lens[0] != 0 && lens[0] > len(small[0]) {
			t.Fatalf("a cut frame was handed on with length %d", lens[0])
		}
		time.Sleep(5 * time.Millisecond)
	}
	if pod.Stats().RxTruncated == trunc0 {
		t.Fatal("the frame longer than its buffer was not counted as cut")
	}
}
