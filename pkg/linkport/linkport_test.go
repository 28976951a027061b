package linkport

import (
	"errors"
	"syscall"
	"testing"

	"github.com/epair-cni/epair/internal/testutil/netnsutil"
	"github.com/epair-cni/epair/internal/testutil/netnsutil/porttest"
	"github.com/epair-cni/epair/pkg/netmap/afpacket"
	"github.com/epair-cni/epair/pkg/netmap/afxdp"
)

func open(tb testing.TB, ns *netnsutil.NS, ifname string, opts Options) (Opened, error) {
	tb.Helper()
	var o Opened
	err := ns.Do(func() error {
		var err error
		o, err = Open(ifname, opts)
		return err
	})
	if err == nil {
		tb.Cleanup(func() { o.Port.Close() })
	}
	return o, err
}

func TestParseBackend(t *testing.T) {
	for s, want := range map[string]Backend{"": Auto, "auto": Auto, "af_xdp": XDP, "xdp": XDP, "af_packet": Packet, "packet": Packet} {
		if got, err := ParseBackend(s); err != nil || got != want {
			t.Errorf("ParseBackend(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	if _, err := ParseBackend("dpdk"); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("ParseBackend(dpdk) err = %v; want EINVAL", err)
	}
	if Packet.String() != "af_packet" || XDP.String() != "af_xdp" {
		t.Error("String")
	}
}

func TestSelection(t *testing.T) {
	ns := netnsutil.New(t)
	netnsutil.Veth(t, ns, "v0", "", ns, "v1", "")
	// A 4-queue veth: AF_XDP refuses it (one socket serves one queue).
	if out, err := ns.Exec("ip", "link", "add", "mq0", "numtxqueues", "4", "numrxqueues", "4", "type", "veth", "peer", "name", "mq1", "numtxqueues", "4", "numrxqueues", "4"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if _, err := ns.Exec("ip", "link", "set", "mq0", "up"); err != nil {
		t.Fatal(err)
	}

	o, err := open(t, ns, "v0", Options{})
	if err != nil || o.Backend != XDP || o.Fallback != nil {
		t.Fatalf("auto on a single-queue veth = %v/%v, %v; want af_xdp", o.Backend, o.Fallback, err)
	}
	if _, ok := o.Port.(*afxdp.Socket); !ok {
		t.Fatalf("port is %T", o.Port)
	}
	o.Port.Close()

	o, err = open(t, ns, "v0", Options{Backend: Packet})
	if err != nil || o.Backend != Packet {
		t.Fatalf("forced af_packet = %v, %v", o.Backend, err)
	}
	if _, ok := o.Port.(*afpacket.Socket); !ok {
		t.Fatalf("port is %T", o.Port)
	}
	o.Port.Close()

	o, err = open(t, ns, "mq0", Options{})
	if err != nil || o.Backend != Packet || !errors.Is(o.Fallback, syscall.EOPNOTSUPP) {
		t.Fatalf("auto on a 4-queue veth = %v (fallback %v), %v; want af_packet after EOPNOTSUPP", o.Backend, o.Fallback, err)
	}
	o.Port.Close()

	if _, err := open(t, ns, "mq0", Options{Backend: XDP}); !errors.Is(err, syscall.EOPNOTSUPP) {
		t.Fatalf("forced af_xdp on a 4-queue veth err = %v; want EOPNOTSUPP", err)
	}
	// A bad AF_XDP config is the caller's mistake: no silent fallback.
	if _, err := open(t, ns, "v0", Options{XDP: afxdp.Config{FrameSize: 100}}); !errors.Is(err, afxdp.ErrBadConfig) {
		t.Fatalf("auto with a bad XDP config err = %v; want ErrBadConfig", err)
	}
	if _, err := open(t, ns, "v0", Options{Backend: 9}); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("unknown backend err = %v; want EINVAL", err)
	}
	if _, err := open(t, ns, "nope0", Options{}); err == nil {
		t.Fatal("open of a missing link succeeded")
	}
}

// TestConformanceAuto runs the shared suite on ports chosen by auto-selection.
func TestConformanceAuto(t *testing.T) {
	porttest.Run(t, porttest.Backend{
		Open: func(tb testing.TB, ns *netnsutil.NS, ifname string) porttest.Port {
			o, err := open(tb, ns, ifname, Options{})
			if err != nil {
				tb.Fatal(err)
			}
			return o.Port
		},
		IsClosed: func(err error) bool { return errors.Is(err, afxdp.ErrClosed) || errors.Is(err, afpacket.ErrClosed) },
	})
}
