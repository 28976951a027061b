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
