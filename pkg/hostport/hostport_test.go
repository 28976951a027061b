package hostport

import (
	"errors"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/epair-cni/epair/internal/testutil/netnsutil"
	"github.com/epair-cni/epair/internal/testutil/netnsutil/porttest"
	"github.com/epair-cni/epair/pkg/linkport"
	"github.com/epair-cni/epair/pkg/netmap/afpacket"
	"github.com/epair-cni/epair/pkg/netmap/afxdp"
)

func open(tb testing.TB, ns *netnsutil.NS, cfg Config) *Port {
	tb.Helper()
	var p *Port
	err := ns.Do(func() error {
		var err error
		p, err = Open(cfg)
		return err
	})
	if err != nil {
		tb.Fatalf("open host port in %s: %v", ns.Name, err)
	}
	tb.Cleanup(func() { p.Close() })
	return p
}

func TestConfigValidation(t *testing.T) {
	bad := []Config{
		{},
		{Name: "this-name-is-too-long"},
		{Name: "hp0", MTU: 10},
		{Name: "hp0", MAC: net.HardwareAddr{1, 0, 0, 0, 0, 1}},
		{Name: "hp0", Addrs: []netip.Prefix{{}}},
		{Name: "hp0", TXQueueLen: -1},
	}
	for _, c := range bad {
		if _, err := Open(c); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("Open(%+v) err = %v; want EINVAL", c, err)
		}
	}
}

// TestPodReachesHost: pod A's eth0 ↔ ha (a linkport port) ↔ forwarder ↔ the TAP host port
// carrying the gateway address 10.77.0.254 in the "host" namespace. The pod pings the
// gateway and streams UDP to a socket bound on it.
func TestPodReachesHost(t *testing.T) {
	for _, be := range []linkport.Backend{linkport.XDP, linkport.Packet} {
		t.Run(be.String(), func(t *testing.T) {
			p := netnsutil.TwoPods(t)
			mac := net.HardwareAddr{0x02, 0, 0, 0x77, 0, 0xfe}
			hp := open(t, p.Host, Config{
				Name: "hp0", MTU: 1500, MAC: mac, TXQueueLen: 4096,
				Addrs: []netip.Prefix{netip.MustParsePrefix("10.77.0.254/24")},
			})
			var o linkport.Opened
			if err := p.Host.Do(func() error {
				var err error
				o, err = linkport.Open(p.HostA, linkport.Options{Backend: be})
				return err
			}); err != nil {
				t.Fatal(err)
			}
			defer o.Port.Close()
			isClosed := func(err error) bool {
				return errors.Is(err, ErrClosed) || errors.Is(err, afxdp.ErrClosed) || errors.Is(err, afpacket.ErrClosed)
			}
			fw := porttest.Forward(o.Port, hp, isClosed)
			stopped := false
			stop := func() {
				if !stopped {
					stopped = true
					if err := fw.Stop(); err != nil {
						t.Errorf("forwarder: %v", err)
					}
				}
			}
			defer stop()
			if _, err := p.A.Exec("ping", "-c", "3", "-i", "0.2", "-W", "2", "10.77.0.254"); err != nil {
				t.Fatalf("pod → host gateway ping: %v", err)
			}
			// The stream goes to the host namespace's socket on the gateway address.
			toHost := *p
			toHost.B, toHost.IPB = p.Host, "10.77.0.254"
			n := porttest.Frames(t) / 10
			if got := porttest.UDPStream(t, &toHost, n, 96); got != n {
				t.Fatalf("UDP pod → host: %d of %d datagrams arrived", got, n)
			}
			stop()
			st := hp.Stats()
			if st.TxPackets < uint64(n) || st.RxPackets == 0 {
				t.Fatalf("host port stats %+v; want ≥ %d frames into the host and replies out", st, n)
			}
			t.Logf("host port stats: %+v", st)
		})
	}
}

func TestCloseRemovesDevice(t *testing.T) {
	ns := netnsutil.New(t)
	hp := open(t, ns, Config{Name: "hp1", Addrs: []netip.Prefix{netip.MustParsePrefix("fd00::1/64"), netip.MustParsePrefix("10.9.0.1/24")}})
	l, err := ns.NL.LinkByName("hp1")
	if err != nil {
		t.Fatal(err)
	}
	if l.Type() != "tuntap" || l.Attrs().Flags&net.FlagUp == 0 {
		t.Fatalf("hp1 is %s with flags %v; want an up tuntap", l.Type(), l.Attrs().Flags)
	}
	// A second port of the same name is refused while the first is open.
	err = ns.Do(func() error { _, err := Open(Config{Name: "hp1"}); return err })
	if !errors.Is(err, syscall.EBUSY) {
		t.Fatalf("second open = %v; want EBUSY", err)
	}
	porttest.WaitReadyCancel(t, hp)
	if err := hp.Close(); err != nil {
		t.Fatal(err)
	}
	if err := hp.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := ns.NL.LinkByName("hp1"); err == nil {
		t.Fatal("hp1 still exists after Close")
	}
	if _, err := hp.Transmit([][]byte{make([]byte, 60)}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Transmit after Close = %v", err)
	}
	if err := hp.WaitRX(time.Second); !errors.Is(err, ErrClosed) {
		t.Fatalf("WaitRX after Close = %v", err)
	}
}

func TestTransmitDropsBadFrames(t *testing.T) {
	ns := netnsutil.New(t)
	hp := open(t, ns, Config{Name: "hp2", MTU: 1500})
	n, err := hp.Transmit([][]byte{make([]byte, 10), make([]byte, 2000), make([]byte, 60)})
	if err != nil || n != 3 {
		t.Fatalf("Transmit = %d, %v", n, err)
	}
	if st := hp.Stats(); st.TxDropped != 2 || st.TxPackets != 1 {
		t.Fatalf("stats = %+v; want 2 dropped, 1 sent", st)
	}
}

// In offload mode frames carry a virtio_net_hdr: the size limits move with it, and an
// ICMP echo request written with an all-zero header is answered by the host stack with a
// header-prefixed reply.
func TestVnetHdrMode(t *testing.T) {
	ns := netnsutil.New(t)
	mac := net.HardwareAddr{0x02, 0, 0, 0x66, 0, 1}
	hp := open(t, ns, Config{Name: "hp3", MTU: 1500, MAC: mac, VnetHdr: true, Addrs: []netip.Prefix{netip.MustParsePrefix("10.66.0.1/24")}})
	if !hp.VnetHdr() || hp.FrameSize() != MaxVnetFrame {
		t.Fatalf("VnetHdr() = %v, FrameSize() = %d; want true, %d", hp.VnetHdr(), hp.FrameSize(), MaxVnetFrame)
	}
	peer := net.HardwareAddr{0x02, 0, 0, 0x66, 0, 2}
	if out, err := ns.Exec("ip", "neigh", "add", "10.66.0.2", "lladdr", peer.String(), "dev", "hp3", "nud", "permanent"); err != nil {
		t.Fatalf("static neighbor: %v %s", err, out)
	}
	f := make([]byte, VnetHdrLen+14+20+8+32)
	e := f[VnetHdrLen:]
	copy(e, mac)
	copy(e[6:], peer)
	e[12], e[13] = 0x08, 0x00
	ip := e[14:]
	ip[0], ip[2], ip[3], ip[8], ip[9] = 0x45, 0, 60, 64, 1
	copy(ip[12:], []byte{10, 66, 0, 2, 10, 66, 0, 1})
	putCsum(ip[:20], 10)
	icmp := ip[20:]
	icmp[0] = 8
	icmp[4], icmp[7] = 0x12, 1
	putCsum(icmp, 2)
	n, err := hp.Transmit([][]byte{f[:VnetHdrLen+10], f})
	if err != nil || n != 2 {
		t.Fatalf("Transmit = %d, %v", n, err)
	}
	if st := hp.Stats(); st.TxDropped != 1 || st.TxPackets != 1 {
		t.Fatalf("stats = %+v; want 1 dropped (short), 1 sent", st)
	}
	buf := make([]byte, MaxVnetFrame)
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		_ = hp.WaitRX(100 * time.Millisecond)
		lens := []int{0}
		if n, err := hp.Receive([][]byte{buf}, lens); err != nil {
			t.Fatal(err)
		} else if n == 0 {
			continue
		}
		r := buf[:lens[0]]
		if len(r) >= VnetHdrLen+14+20+8 && r[VnetHdrLen+12] == 0x08 && r[VnetHdrLen+14+9] == 1 && r[VnetHdrLen+14+20] == 0 {
			if r[1] != 0 {
				t.Errorf("echo reply has GSO type %d", r[1])
			}
			// The same request as fragments (writev) is answered too, read with readv.
			if ok, err := hp.TxFrags(0, [][]byte{f[:7], f[7:40], f[40:]}); !ok || err != nil {
				t.Fatalf("TxFrags = %v, %v", ok, err)
			}
			bufs := [][]byte{make([]byte, 20), make([]byte, 30), make([]byte, 2048)}
			for time.Now().Before(deadline) {
				n, ok, err := hp.RxScatter(0, bufs)
				if err != nil {
					t.Fatal(err)
				}
				if !ok {
					_ = hp.WaitRX(100 * time.Millisecond)
					continue
				}
				j := append(append(append([]byte(nil), bufs[0]...), bufs[1]...), bufs[2]...)[:n]
				if n == len(r) && j[VnetHdrLen+14+9] == 1 && j[VnetHdrLen+14+20] == 0 {
					return
				}
			}
			t.Fatal("no echo reply to the fragmented request")
		}
	}
	t.Fatal("no echo reply read from the offload TAP")
}

// putCsum stores the Internet checksum of b at offset at.
func putCsum(b []byte, at int) {
	b[at], b[at+1] = 0, 0
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	c := ^uint16(s)
	b[at], b[at+1] = byte(c>>8), byte(c)
}
