package linkport

import (
	"errors"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/epair-cni/epair/internal/testutil/netnsutil"
	"github.com/epair-cni/epair/internal/testutil/netnsutil/porttest"
	"github.com/epair-cni/epair/pkg/netmap"
	"github.com/epair-cni/epair/pkg/netmap/afpacket"
	"github.com/epair-cni/epair/pkg/netmap/afxdp"
)

func isClosed(err error) bool {
	return errors.Is(err, ErrClosed) || errors.Is(err, afxdp.ErrClosed) || errors.Is(err, afpacket.ErrClosed)
}

// openFastPort opens a FastStart port on ifname in ns.
func openFastPort(tb testing.TB, ns *netnsutil.NS, ifname string, opts Options) *Upgradable {
	tb.Helper()
	opts.FastStart = true
	o, err := open(tb, ns, ifname, opts)
	if err != nil {
		tb.Fatal(err)
	}
	u, ok := o.Port.(*Upgradable)
	if !ok || o.Backend != Ringless || u.Current().Backend != Ringless {
		tb.Fatalf("FastStart opened %T (%v); want an *Upgradable on af_packet_ringless", o.Port, o.Backend)
	}
	return u
}

func upgrade(tb testing.TB, ns *netnsutil.NS, u *Upgradable) (Opened, error) {
	tb.Helper()
	var o Opened
	err := ns.Do(func() error {
		var err error
		o, err = u.Upgrade()
		return err
	})
	return o, err
}

// TestConformanceFastStart runs the shared suite on FastStart ports before their
// upgrade (ring-less AF_PACKET behind the Upgradable).
func TestConformanceFastStart(t *testing.T) {
	porttest.Run(t, porttest.Backend{
		Open: func(tb testing.TB, ns *netnsutil.NS, ifname string) porttest.Port {
			return openFastPort(tb, ns, ifname, Options{})
		},
		IsClosed: isClosed,
		Ringless: true,
	})
}

// TestConformanceUpgraded runs the shared suite on FastStart ports upgraded at once.
func TestConformanceUpgraded(t *testing.T) {
	porttest.Run(t, porttest.Backend{
		Open: func(tb testing.TB, ns *netnsutil.NS, ifname string) porttest.Port {
			u := openFastPort(tb, ns, ifname, Options{})
			o, err := upgrade(tb, ns, u)
			if err != nil || o.Backend != XDP || o.Port != u || u.Current().Backend != XDP {
				tb.Fatalf("upgrade = %v (%v), %v; want af_xdp", o.Backend, o.Fallback, err)
			}
			return u
		},
		IsClosed: isClosed,
	})
}

// TestUpgradeUnderTraffic upgrades both ports of a forwarding path in the middle of
// a UDP stream: not one datagram may be lost or duplicated.
func TestUpgradeUnderTraffic(t *testing.T) {
	for _, be := range []Backend{Auto, XDP} {
		t.Run(be.String(), func(t *testing.T) {
			p := netnsutil.TwoPods(t)
			a := openFastPort(t, p.Host, p.HostA, Options{Backend: be})
			b := openFastPort(t, p.Host, p.HostB, Options{Backend: be})
			fw := porttest.Forward(a, b, isClosed)
			defer func() {
				if err := fw.Stop(); err != nil {
					t.Errorf("forwarder: %v", err)
				}
			}()
			p.StaticNeighbors(t)
			n := porttest.Frames(t)
			var wg sync.WaitGroup
			var errs [2]error
			var took [2]time.Duration
			var atDone uint64 // frames forwarded when both upgrades were done
			wg.Add(1)
			go func() {
				defer wg.Done()
				for fw.Frames[0].Load() < uint64(n/3) {
					time.Sleep(time.Millisecond)
				}
				for i, u := range []*Upgradable{a, b} {
					t0 := time.Now()
					_, errs[i] = upgrade(t, p.Host, u)
					took[i] = time.Since(t0)
				}
				atDone = fw.Frames[0].Load()
			}()
			got := porttest.UDPStream(t, p, n, 96)
			wg.Wait()
			for i, u := range []*Upgradable{a, b} {
				if errs[i] != nil || u.Current().Backend != XDP {
					t.Fatalf("upgrade of port %d: %v, now %v; want af_xdp", i, errs[i], u.Current().Backend)
				}
			}
			if got != n {
				t.Fatalf("UDP stream across the upgrade: %d of %d datagrams arrived", got, n)
			}
			if atDone >= uint64(n) {
				t.Fatalf("the upgrades finished after the stream (%d frames forwarded by then): nothing was tested", atDone)
			}
			t.Logf("%d datagrams, none lost; upgrades took %v and %v", n, took[0].Round(time.Millisecond), took[1].Round(time.Millisecond))
		})
	}
}

// TestUpgradeFallback: where AF_XDP cannot serve the link (a 4-queue veth), the
// port stays on its ring-less socket, which keeps working, with the reason reported;
// FastStart does not apply to a forced AF_PACKET.
func TestUpgradeFallback(t *testing.T) {
	ns := netnsutil.New(t)
	if out, err := ns.Exec("ip", "link", "add", "mq0", "numtxqueues", "4", "numrxqueues", "4", "type", "veth", "peer", "name", "mq1", "numtxqueues", "4", "numrxqueues", "4"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	for _, l := range []string{"mq0", "mq1"} {
		if out, err := ns.Exec("ip", "link", "set", l, "up"); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
	}
	o, err := open(t, ns, "mq0", Options{Backend: Packet, FastStart: true})
	if err != nil || o.Backend != Packet {
		t.Fatalf("FastStart with af_packet = %v, %v; want af_packet", o.Backend, err)
	}
	if _, ok := o.Port.(*afpacket.Socket); !ok {
		t.Fatalf("FastStart with af_packet opened %T", o.Port)
	}
	o.Port.Close()

	u := openFastPort(t, ns, "mq0", Options{})
	if _, err := upgrade(t, ns, u); !errors.Is(err, syscall.EOPNOTSUPP) {
		t.Fatalf("forced af_xdp upgrade on a 4-queue veth err = %v; want EOPNOTSUPP", err)
	}
	cur := u.Current()
	if cur.Backend != Ringless || !errors.Is(cur.Fallback, syscall.EOPNOTSUPP) {
		t.Fatalf("after a failed upgrade: %v (fallback %v); want af_packet_ringless with the reason", cur.Backend, cur.Fallback)
	}
	// Still a working port: a frame sent on it arrives at the peer.
	peer, err := open(t, ns, "mq1", Options{Backend: Packet})
	if err != nil {
		t.Fatal(err)
	}
	frame := make([]byte, 60)
	copy(frame, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 1, 0x88, 0xb5, 'h', 'i'})
	if n, err := u.Transmit([][]byte{frame}); n != 1 || err != nil {
		t.Fatalf("Transmit after the failed upgrade = %d, %v", n, err)
	}
	bufs, lens := [][]byte{make([]byte, 2048)}, []int{0}
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		_ = peer.Port.WaitRX(100 * time.Millisecond)
		if n, _ := peer.Port.Receive(bufs, lens); n == 1 && lens[0] == 60 && bufs[0][14] == 'h' {
			return
		}
	}
	t.Fatal("the frame sent after the failed upgrade did not arrive")
}

// TestUpgradeCloseRaces: Upgrade after Close fails; Close during an Upgrade cuts it
// short and leaves no XDP program, descriptor or goroutine behind; a second Upgrade
// is a no-op.
func TestUpgradeCloseRaces(t *testing.T) {
	ns := netnsutil.New(t)
	netnsutil.Veth(t, ns, "u0", "", ns, "u1", "")

	u := openFastPort(t, ns, "u0", Options{})
	if err := u.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := upgrade(t, ns, u); !errors.Is(err, ErrClosed) {
		t.Fatalf("Upgrade after Close err = %v; want ErrClosed", err)
	}
	if _, err := u.Transmit([][]byte{make([]byte, 60)}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Transmit after Close err = %v; want ErrClosed", err)
	}

	u = openFastPort(t, ns, "u0", Options{})
	o1, err := upgrade(t, ns, u)
	if err != nil {
		t.Fatal(err)
	}
	o2, err := upgrade(t, ns, u)
	if err != nil || o2.Backend != o1.Backend {
		t.Fatalf("second Upgrade = %v, %v; want %v, nil", o2.Backend, err, o1.Backend)
	}
	if err := u.Close(); err != nil {
		t.Fatal(err)
	}

	for i := 0; i < 5; i++ {
		u = openFastPort(t, ns, "u0", Options{})
		done := make(chan error, 1)
		go func() { _, err := upgrade(t, ns, u); done <- err }()
		time.Sleep(time.Duration(i) * 3 * time.Millisecond)
		if err := u.Close(); err != nil {
			t.Fatalf("Close during Upgrade: %v", err)
		}
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("Upgrade did not return after Close")
		}
	}
	err = ns.Do(func() error {
		l, err := netlink.LinkByName("u0")
		if err != nil {
			return err
		}
		if x := l.Attrs().Xdp; x != nil && x.Attached {
			t.Errorf("an XDP program (id %d) is still attached to u0", x.ProgId)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestUpgradeNetmap drives FastStart ports through netmap generic adapters (the suite's
// in-order transfer and clean detach) while their upgrades run concurrently; where in the
// transfer an upgrade lands varies from run to run (TestUpgradeUnderTraffic pins that).
func TestUpgradeNetmap(t *testing.T) {
	porttest.Netmap(t, porttest.Backend{
		Open: func(tb testing.TB, ns *netnsutil.NS, ifname string) porttest.Port {
			u := openFastPort(tb, ns, ifname, Options{})
			done := make(chan struct{})
			go func() {
				defer close(done)
				_ = ns.Do(func() error { _, err := u.Upgrade(); return err })
			}()
			tb.Cleanup(func() { <-done }) // before the namespace goes
			return u
		},
		IsClosed: isClosed,
	}, func(p porttest.Port) netmap.GenericBackend { return p.(*Upgradable) }, false)
}
