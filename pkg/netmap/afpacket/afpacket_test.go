package afpacket

import (
	"bytes"
	"encoding/binary"

	"errors"
	"github.com/epair-cni/epair/internal/sys"
	"golang.org/x/sys/unix"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/epair-cni/epair/internal/testutil/netnsutil"
	"github.com/epair-cni/epair/internal/testutil/netnsutil/porttest"
	"github.com/epair-cni/epair/pkg/netmap"
)

func open(tb testing.TB, ns *netnsutil.NS, ifname string, cfg Config) *Socket {
	tb.Helper()
	var s *Socket
	err := ns.Do(func() error {
		var err error
		s, err = Open(ifname, cfg)
		return err
	})
	if err != nil {
		tb.Fatalf("open AF_PACKET on %s in %s: %v", ifname, ns.Name, err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

func backend() porttest.Backend { return backendWith(Config{}) }

func backendWith(cfg Config) porttest.Backend {
	return porttest.Backend{
		Open: func(tb testing.TB, ns *netnsutil.NS, ifname string) porttest.Port {
			return open(tb, ns, ifname, cfg)
		},
		IsClosed: func(err error) bool { return errors.Is(err, ErrClosed) },
		Ringless: cfg.Ringless || cfg.VnetHdr,
	}
}

func TestConformance(t *testing.T) { porttest.Run(t, backend()) }

func TestConformanceRingless(t *testing.T) { porttest.Run(t, backendWith(Config{Ringless: true})) }

func TestConfigValidation(t *testing.T) {
	bad := []Config{
		{BlockSize: 1000},
		{BlockCount: 1},
		{RetireTimeout: time.Microsecond},
		{TXFrameSize: 1024},
		{TXFrameSize: 3000},
		{TXFrameCount: 3},
		{TXRecheck: -1},
	}
	for _, c := range bad {
		if _, err := Open("lo", c); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("Open(%+v) err = %v; want EINVAL", c, err)
		}
	}
	if _, err := Open("no-such-if0", Config{}); err == nil {
		t.Error("Open on a missing interface succeeded")
	}
}

func TestOversizeAndVLAN(t *testing.T) {
	for _, c := range []struct {
		name string
		cfg  Config
	}{{"rings", Config{}}, {"ringless", Config{Ringless: true}}} {
		t.Run(c.name, func(t *testing.T) { testOversizeAndVLAN(t, c.cfg) })
	}
}

func testOversizeAndVLAN(t *testing.T, cfg Config) {
	p := netnsutil.TwoPods(t)
	a := open(t, p.Host, p.HostA, cfg)
	if cfg.Ringless && (a.mem != nil || a.rx != nil || a.tx != nil) {
		t.Fatal("a ring-less socket has rings mapped")
	}
	big := make([]byte, 4000)
	n, err := a.Transmit([][]byte{big, {}})
	if err != nil || n != 2 {
		t.Fatalf("Transmit = %d, %v; want 2 consumed", n, err)
	}
	if st := a.Stats(); st.TxDropped != 2 || st.TxPackets != 0 {
		t.Fatalf("stats = %+v; want 2 dropped", st)
	}
	// Sendable frames around unsendable ones all leave, in one call, in order (the
	// ring-less socket sends runs of them with sendmmsg).
	frame := func(i byte) []byte {
		f := make([]byte, 60)
		copy(f, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 1, 0x88, 0xb5, i})
		return f
	}
	podEnd := open(t, p.A, "eth0", Config{})
	n, err = a.Transmit([][]byte{frame(1), {}, frame(2), big, frame(3)})
	if err != nil || n != 5 {
		t.Fatalf("Transmit of a mixed batch = %d, %v; want 5 consumed", n, err)
	}
	if st := a.Stats(); st.TxDropped != 4 || st.TxPackets != 3 {
		t.Fatalf("stats = %+v; want 3 sent, 4 dropped in all", st)
	}
	var seen []byte
	bufs, lens := make([][]byte, 8), make([]int, 8)
	for i := range bufs {
		bufs[i] = make([]byte, 2048)
	}
	for deadline := time.Now().Add(3 * time.Second); len(seen) < 3 && time.Now().Before(deadline); {
		_ = podEnd.WaitRX(100 * time.Millisecond)
		m, _ := podEnd.Receive(bufs, lens)
		for i := range m {
			if f := bufs[i][:lens[i]]; len(f) >= 15 && f[12] == 0x88 && f[13] == 0xb5 {
				seen = append(seen, f[14])
			}
		}
	}
	if string(seen) != "\x01\x02\x03" {
		t.Fatalf("frames received in order %v; want [1 2 3]", seen)
	}
	// A VLAN-tagged frame sent from pod A's eth0 reaches the port with its tag in place.
	if out, err := p.A.Exec("ip", "link", "add", "link", "eth0", "name", "eth0.7", "type", "vlan", "id", "7"); err != nil {
		t.Skipf("no 8021q support: %v %s", err, out)
	}
	if _, err := p.A.Exec("ip", "addr", "add", "10.78.0.1/24", "dev", "eth0.7"); err != nil {
		t.Fatal(err)
	}
	if _, err := p.A.Exec("ip", "link", "set", "eth0.7", "up"); err != nil {
		t.Fatal(err)
	}
	_, _ = p.A.Exec("ping", "-c", "1", "-W", "1", "10.78.0.2")
	bufs, lens = [][]byte{make([]byte, 2048), make([]byte, 2048), make([]byte, 2048), make([]byte, 2048)}, make([]int, 4)
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if err := a.WaitRX(100 * time.Millisecond); err != nil {
			continue
		}
		n, _ := a.Receive(bufs, lens)
		for i := range n {
			f := bufs[i][:lens[i]]
			if len(f) > 16 && f[12] == 0x81 && f[13] == 0x00 && f[14]&0x0f == 0 && f[15] == 7 {
				return
			}
		}
	}
	t.Fatal("no VLAN 7 tagged frame (ARP for 10.78.0.2) seen on the port")
}

// TestCopyFrameVLAN checks the tag re-insertion on a synthetic ring entry (the test kernel
// may lack 8021q, which skips the end-to-end part above).
func TestCopyFrameVLAN(t *testing.T) {
	blk := make([]byte, 4096)
	s := &Socket{pktOff: 64}
	h := sys.PointerAt[unix.Tpacket3Hdr](blk, 64)
	frame := []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0x08, 0x06, 0xaa, 0xbb}
	h.Mac = 80
	h.Snaplen, h.Len = uint32(len(frame)), uint32(len(frame))
	copy(blk[64+80:], frame)
	dst := make([]byte, 64)
	if n := s.copyFrame(dst, blk, h); n != len(frame) || !bytes.Equal(dst[:n], frame) {
		t.Fatalf("untagged copy = %x", dst[:n])
	}
	h.Status = unix.TP_STATUS_VLAN_VALID
	h.Hv1.Vlan_tci = 0x2007
	n := s.copyFrame(dst, blk, h)
	want := []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0x81, 0x00, 0x20, 0x07, 0x08, 0x06, 0xaa, 0xbb}
	if !bytes.Equal(dst[:n], want) {
		t.Fatalf("tagged copy = %x; want %x", dst[:n], want)
	}
	h.Status |= unix.TP_STATUS_VLAN_TPID_VALID
	h.Hv1.Vlan_tpid = 0x88a8
	n = s.copyFrame(dst, blk, h)
	if dst[12] != 0x88 || dst[13] != 0xa8 || n != len(want) {
		t.Fatalf("QinQ copy = %x", dst[:n])
	}
	// Too small a buffer: truncated and counted.
	if n := s.copyFrame(make([]byte, 10), blk, h); n != 10 || s.rxTrunc.Load() == 0 {
		t.Fatalf("short buffer: n=%d truncated=%d", n, s.rxTrunc.Load())
	}
}

func BenchmarkTransmitReceive(b *testing.B) { porttest.Benchmark(b, backend()) }

func BenchmarkTransmitReceiveRingless(b *testing.B) {
	porttest.Benchmark(b, backendWith(Config{Ringless: true}))
}

func TestMaxFrame(t *testing.T) {
	for _, c := range []struct {
		cfg  Config
		want int
	}{{Config{}, 2000}, {Config{Ringless: true}, 2000}, {Config{TXFrameSize: 4096}, 4048}, {Config{VnetHdr: true}, MaxVnetFrame}} {
		if got, err := c.cfg.MaxFrame(); err != nil || got != c.want {
			t.Errorf("%+v.MaxFrame() = %d, %v; want %d", c.cfg, got, err, c.want)
		}
	}
	if _, err := (Config{TXFrameSize: 1000}).MaxFrame(); !errors.Is(err, ErrBadConfig) {
		t.Errorf("bad config MaxFrame err = %v", err)
	}
}

// auxCmsg builds a control buffer holding one PACKET_AUXDATA message.
func auxCmsg(status uint32, tci, tpid uint16) []byte {
	b := make([]byte, unix.CmsgSpace(auxLen))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level, h.Type = unix.SOL_PACKET, unix.PACKET_AUXDATA
	h.SetLen(unix.CmsgLen(auxLen))
	d := b[unix.CmsgLen(0):]
	binary.NativeEndian.PutUint32(d[auxStatusOff:], status)
	binary.NativeEndian.PutUint16(d[auxVlanTCIOff:], tci)
	binary.NativeEndian.PutUint16(d[auxVlanTPIDOff:], tpid)
	return b
}

func TestAuxVLAN(t *testing.T) {
	s := &Socket{}
	for _, c := range []struct {
		name      string
		cmsg      []byte
		tci, tpid uint16
		ok        bool
	}{
		{"none", nil, 0, 0, false},
		{"untagged", auxCmsg(0, 0, 0), 0, 0, false},
		{"802.1Q", auxCmsg(unix.TP_STATUS_VLAN_VALID, 0x2007, 0), 0x2007, unix.ETH_P_8021Q, true},
		{"802.1ad", auxCmsg(unix.TP_STATUS_VLAN_VALID|unix.TP_STATUS_VLAN_TPID_VALID, 7, 0x88a8), 7, 0x88a8, true},
		{"short", auxCmsg(unix.TP_STATUS_VLAN_VALID, 7, 0)[:unix.CmsgLen(0)+4], 0, 0, false},
	} {
		n := copy(s.rxCmsg[:], c.cmsg)
		tci, tpid, ok := s.auxVLAN(n)
		if ok != c.ok || tci != c.tci || tpid != c.tpid {
			t.Errorf("%s: auxVLAN = %#x, %#x, %v; want %#x, %#x, %v", c.name, tci, tpid, ok, c.tci, c.tpid, c.ok)
		}
	}
}

// FuzzAuxVLAN feeds arbitrary control buffers (the kernel's layout, checked anyway).
func FuzzAuxVLAN(f *testing.F) {
	f.Add(auxCmsg(unix.TP_STATUS_VLAN_VALID, 0x2007, 0))
	f.Add(append(auxCmsg(0, 0, 0), auxCmsg(unix.TP_STATUS_VLAN_VALID, 1, 0)...))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		s := &Socket{}
		n := copy(s.rxCmsg[:], b)
		s.auxVLAN(n)
		s.auxVLAN(len(b))
	})
}

func TestNetmapGenericAdapter(t *testing.T) {
	porttest.Netmap(t, backend(), func(p porttest.Port) netmap.GenericBackend { return p.(*Socket) }, false)
}

func TestWaitReadyCancel(t *testing.T) {
	p := netnsutil.TwoPods(t)
	s := open(t, p.Host, p.HostA, Config{})
	// Keep pod A quiet so that the RX wait really parks.
	if _, err := p.A.Exec("ip", "link", "set", "eth0", "down"); err != nil {
		t.Fatal(err)
	}
	porttest.WaitReadyCancel(t, s)
}

// wellFormedBlock returns a retired block with two 60-byte frames.
func wellFormedBlock() []byte {
	good := make([]byte, 512)
	binary.NativeEndian.PutUint32(good[blkNumPktsOff:], 2)
	binary.NativeEndian.PutUint32(good[blkFirstPktOff:], 48)
	binary.NativeEndian.PutUint32(good[48:], 128)    // next_offset
	binary.NativeEndian.PutUint32(good[48+12:], 60)  // snaplen
	binary.NativeEndian.PutUint32(good[48+16:], 60)  // len
	binary.NativeEndian.PutUint16(good[48+24:], 64)  // mac
	binary.NativeEndian.PutUint32(good[176+12:], 60) // second frame
	binary.NativeEndian.PutUint32(good[176+16:], 60)
	binary.NativeEndian.PutUint16(good[176+24:], 64)
	good[176+64] = 0xab
	return good
}

func TestReceiveWellFormedBlock(t *testing.T) {
	blk := make([]byte, 4096)
	copy(blk, wellFormedBlock())
	s := &Socket{rx: blk, blockSize: 4096, blocks: 1}
	s.blockStatus(0).Store(unix.TP_STATUS_USER)
	bufs, lens := [][]byte{make([]byte, 2048), make([]byte, 2048), make([]byte, 2048)}, make([]int, 3)
	n, err := s.Receive(bufs, lens)
	if err != nil || n != 2 || lens[0] != 60 || lens[1] != 60 || bufs[1][0] != 0xab {
		t.Fatalf("Receive = %d (%v), lens %v", n, err, lens)
	}
	if s.blockStatus(0).Load() != unix.TP_STATUS_KERNEL || s.Stats().RxErrors != 0 {
		t.Fatalf("block not returned cleanly: status %d, stats %+v", s.blockStatus(0).Load(), s.Stats())
	}
	// A corrupt next_offset: the first frame is delivered, the rest dropped and counted.
	copy(blk, wellFormedBlock())
	binary.NativeEndian.PutUint32(blk[48:], 3)
	s.blockStatus(0).Store(unix.TP_STATUS_USER)
	if n, _ := s.Receive(bufs, lens); n != 1 || s.Stats().RxErrors != 1 || s.blockStatus(0).Load() != unix.TP_STATUS_KERNEL {
		t.Fatalf("corrupt block: n=%d stats %+v", n, s.Stats())
	}
}

// FuzzReceiveBlock feeds arbitrary bytes as a retired receive block: Receive must neither
// panic nor read outside the block, and must hand the block back to the kernel.
func FuzzReceiveBlock(f *testing.F) {
	good := wellFormedBlock()
	f.Add(good, 2)
	f.Add([]byte{}, 1)
	f.Add(bytes.Repeat([]byte{0xff}, 300), 3)
	f.Fuzz(func(t *testing.T, data []byte, batch int) {
		const bs = 4096
		blk := make([]byte, bs)
		copy(blk, data)
		s := &Socket{rx: blk, blockSize: bs, blocks: 1}
		s.blockStatus(0).Store(unix.TP_STATUS_USER)
		batch = int(uint(batch)%8) + 1
		bufs, lens := make([][]byte, batch), make([]int, batch)
		for i := range bufs {
			bufs[i] = make([]byte, 2048)
		}
		num := binary.NativeEndian.Uint32(blk[blkNumPktsOff:])
		for range min(num, 1<<12)/uint32(batch) + 2 {
			n, err := s.Receive(bufs, lens)
			if err != nil {
				t.Fatal(err)
			}
			for i := range n {
				if lens[i] < 0 || lens[i] > len(bufs[i]) {
					t.Fatalf("length %d outside buffer", lens[i])
				}
			}
			if s.blockStatus(0).Load() == unix.TP_STATUS_KERNEL {
				return
			}
		}
		if num <= 1<<12 {
			t.Fatalf("block with %d frames not handed back", num)
		}
	})
}
