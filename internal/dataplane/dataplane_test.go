package dataplane

import (
	"context"
	"testing"

	"github.com/epair-cni/epair/pkg/linkport"
	"github.com/epair-cni/epair/pkg/vale"
)

var backends = []linkport.Backend{linkport.XDP, linkport.Packet}

// variant is a dataplane configuration the behaviour tests run on.
type variant struct {
	name    string
	be      linkport.Backend
	offload bool // SwitchConfig.Offload (the ports are AF_PACKET with virtio-net headers)
}

var variants = []variant{{"af_xdp", linkport.XDP, false}, {"af_packet", linkport.Packet, false}, {"offload", linkport.Packet, true}}

// mod returns the variant's config change (chained after extra, if any).
func (v variant) mod(extra func(*Config)) func(*Config) {
	return func(c *Config) {
		c.Switches[0].Offload = v.offload
		if extra != nil {
			extra(c)
		}
	}
}

func TestPodsPing(t *testing.T) {
	for _, v := range variants {
		be := v.be
		t.Run(v.name, func(t *testing.T) {
			e := newEnv(t, 3, be, v.mod(nil))
			a, b, c := e.pods[0], e.pods[1], e.pods[2]
			e.ping(a, b.ip)
			e.ping(b, c.ip)
			e.ping(c, a.ip)
			e.ping(a, testGW)
			e.ping(c, testGW)
			e.ping(a, b.ip6)
			e.ping(c, testGW6)
			settle(t, e.dp)
			for _, p := range e.pods {
				pi, err := e.dp.Port(p.portName())
				if err != nil {
					t.Fatal(err)
				}
				if pi.Backend != be.String() {
					t.Errorf("%s: backend %s, want %s", pi.Name, pi.Backend, be)
				}
				if pi.Counters.InFrames < 4 || pi.Counters.OutFrames < 4 || pi.Queue.TxFrames < 4 {
					t.Errorf("%s: counters %+v queue %+v; want ≥ 4 frames each way", pi.Name, pi.Counters, pi.Queue)
				}
			}
			si, err := e.dp.Switch("vale0")
			if err != nil {
				t.Fatal(err)
			}
			if len(si.Ports) != 4 || si.HostPortStats.TxPackets == 0 || si.HostPortStats.RxPackets == 0 {
				t.Errorf("switch info: %d ports, host port %+v", len(si.Ports), si.HostPortStats)
			}
			fdb, err := e.dp.FDB("vale0")
			if err != nil {
				t.Fatal(err)
			}
			learned := map[string]string{}
			for _, f := range fdb {
				learned[f.MAC.String()] = f.Port
			}
			for _, p := range e.pods {
				if learned[p.pair.PodMAC.String()] != p.portName() {
					t.Errorf("FDB: %s on %q, want %s (fdb %v)", p.pair.PodMAC, learned[p.pair.PodMAC.String()], p.portName(), fdb)
				}
			}
		})
	}
}

func TestAttachIdempotentAndBusy(t *testing.T) {
	e := newEnv(t, 2, linkport.Auto, nil)
	a, b := e.pods[0], e.pods[1]
	pi := e.attach(a) // again
	if pi.Name != a.portName() {
		t.Fatalf("re-attach returned %s", pi.Name)
	}
	if n := len(e.dp.Ports()); n != 2 {
		t.Fatalf("%d ports after idempotent attach, want 2", n)
	}
	_, err := e.dp.AttachPort(context.Background(), a.reqAs("other/eth0"))
	if Errno(err) != ErrBusy.Errno() {
		t.Fatalf("attach for another owner: %v, want EBUSY", err)
	}
	_, err = e.dp.AttachPort(context.Background(), b.reqAs(a.owner))
	if Errno(err) != ErrBusy.Errno() {
		t.Fatalf("attach another link for an owner: %v, want EBUSY", err)
	}
	_, err = e.dp.AttachPort(context.Background(), AttachRequest{Owner: "x/eth0", HostIfName: "nosuchlink", PodMAC: a.pair.PodMAC, PodIPs: a.req().PodIPs})
	if Errno(err) != ErrNoPort.Errno() {
		t.Fatalf("attach a missing link: %v, want ENXIO", err)
	}
	_, err = e.dp.AttachPort(context.Background(), AttachRequest{Owner: "x/eth0", HostIfName: a.pair.HostName, HostIfIndex: a.pair.HostIndex + 1000, PodMAC: a.pair.PodMAC, PodIPs: a.req().PodIPs})
	if Errno(err) != ErrInvalid.Errno() {
		t.Fatalf("attach with a mismatched index: %v, want EINVAL", err)
	}
	_, err = e.dp.AttachPort(context.Background(), AttachRequest{Switch: "vale9", Owner: "x/eth0", HostIfName: b.pair.HostName, PodMAC: b.pair.PodMAC, PodIPs: b.req().PodIPs})
	if Errno(err) != ErrNoSwitch.Errno() {
		t.Fatalf("attach to a missing switch: %v, want ENXIO", err)
	}
	if err := e.dp.DetachPort(context.Background(), a.portName()); err != nil {
		t.Fatal(err)
	}
	if err := e.dp.DetachPort(context.Background(), a.portName()); err != nil {
		t.Fatalf("second detach: %v", err)
	}
	if _, err := e.dp.Port(a.portName()); Errno(err) != ErrNoPort.Errno() {
		t.Fatalf("port after detach: %v", err)
	}
	for _, pi := range e.dp.Switches()[0].Ports {
		if pi.Name == a.portName() {
			t.Fatalf("switch still lists %s", pi.Name)
		}
	}
	e.attach(a)
	e.ping(a, b.ip)
	_ = vale.ErrNoPort
}
