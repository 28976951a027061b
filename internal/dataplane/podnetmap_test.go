package dataplane

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/epair-cni/epair/internal/appport"
	"github.com/epair-cni/epair/internal/testutil/netnsutil"
	"github.com/epair-cni/epair/pkg/linkport"
	"github.com/epair-cni/epair/pkg/nmport"
)

func openAppIn(ns *netnsutil.NS, name string) (p *nmport.Port, err error) {
	err = ns.Do(func() error {
		p, err = nmport.Open(PodNetmapSocket, name, 0)
		return err
	})
	return p, err
}

func appPortOf(port, ip string, last byte) AppPort {
	return AppPort{Name: "app", Port: port, MAC: net.HardwareAddr{0x06, 0, 0, 0, 0, last},
		Addrs: []nmport.Address{{Prefix: netip.MustParsePrefix(ip + "/24"), Gateway: netip.MustParseAddr(testGW)}}}
}

// TestPodNetmapPolicy: a pod's application ports follow its pod port's policy, live: the
// receive rate (frames wait in the port's rings), the priority class its frames get in
// other ports' queues. Bad requests are refused; the ports go with the pod port.
func TestPodNetmapPolicy(t *testing.T) {
	e := newEnv(t, 2, linkport.Auto, nil)
	a, b := e.pods[0], e.pods[1]
	apA, apB := appPortOf("nmta", "10.78.0.200", 0xa), appPortOf("nmtb", "10.78.0.201", 0xb)

	// Refusals first.
	for _, tc := range []struct {
		name  string
		host  string
		ports []AppPort
		want  error
	}{
		{"no such pod port", "nope0", []AppPort{apA}, ErrNoPort},
		{"no ports", a.pair.HostName, nil, ErrInvalid},
		{"named as the interface", a.pair.HostName, []AppPort{{Name: "eth0", Port: "nmx", MAC: apA.MAC, Addrs: apA.Addrs}}, ErrInvalid},
		{"switch name too long", a.pair.HostName, []AppPort{{Name: "x", Port: "nm0123456789", MAC: apA.MAC, Addrs: apA.Addrs}}, ErrInvalid},
		{"multicast MAC", a.pair.HostName, []AppPort{{Name: "x", Port: "nmx", MAC: net.HardwareAddr{1, 0, 0, 0, 0, 1}, Addrs: apA.Addrs}}, ErrInvalid},
		{"no address", a.pair.HostName, []AppPort{{Name: "x", Port: "nmx", MAC: apA.MAC}}, ErrInvalid},
		{"a port twice", a.pair.HostName, []AppPort{apA, apA}, ErrInvalid},
	} {
		if err := e.dp.ServePodNetmap(tc.host, nsPath(a.ns), "eth0", tc.ports, appport.Options{}); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}

	if err := e.dp.ServePodNetmap(a.pair.HostName, nsPath(a.ns), "eth0", []AppPort{apA}, appport.Options{}); err != nil {
		t.Fatal(err)
	}
	if err := e.dp.ServePodNetmap(a.pair.HostName, nsPath(a.ns), "eth0", []AppPort{apA}, appport.Options{}); err != nil {
		t.Fatalf("serving the same ports again (a retried attach): %v", err)
	}
	if err := e.dp.ServePodNetmap(b.pair.HostName, nsPath(b.ns), "eth0", []AppPort{apB}, appport.Options{}); err != nil {
		t.Fatal(err)
	}
	pa, err := openAppIn(a.ns, "vale0:app")
	if err != nil {
		t.Fatal(err)
	}
	defer pa.Close()
	pb, err := openAppIn(b.ns, "vale0:app")
	if err != nil {
		t.Fatal(err)
	}
	defer pb.Close()
	hdr := e.dp.switches["vale0"].hdrLen
	frameBA := append(make([]byte, hdr), udpFrame(apB.MAC, apA.MAC, "10.78.0.201", "10.78.0.200")...)

	// b's application port sends n frames to a's: at a's rate.
	const n = 200
	burst := func() time.Duration {
		t.Helper()
		fs := make([][]byte, n)
		for i := range fs {
			fs[i] = frameBA
		}
		t0 := time.Now()
		if err := appSendAll(pb, fs); err != nil {
			t.Fatal(err)
		}
		if got, err := appRecvN(pa, n, 5*time.Second); err != nil {
			t.Fatalf("received %d of %d: %v", got, n, err)
		}
		return time.Since(t0)
	}
	if d := burst(); d > 100*time.Millisecond {
		t.Fatalf("%d frames without a limit took %v", n, d)
	}
	pol := PortPolicy{RatePktsPerSec: 1000, BurstPkts: 10, Priority: 3}
	if err := e.dp.SetPortPolicy(a.portName(), pol); err != nil {
		t.Fatal(err)
	}
	if d := burst(); d < 150*time.Millisecond {
		t.Fatalf("%d frames under a's 1000 frames/s limit took %v, want about 190ms", n, d)
	}
	s := e.dp.switches["vale0"]
	pn := e.dp.podNetmaps[a.pair.HostName]
	if prio, _ := s.classes.get(pn.byPort["nmta"].vp.Index()); prio != 3 {
		t.Fatalf("a's application port has priority class %d, want its pod's 3", prio)
	}
	if err := e.dp.SetPortPolicy(a.portName(), PortPolicy{}); err != nil {
		t.Fatal(err)
	}
	if d := burst(); d > 100*time.Millisecond {
		t.Fatalf("%d frames after the limit was lifted took %v", n, d)
	}

	// The ports go with the pod port.
	if err := e.dp.DetachPort(context.Background(), a.portName()); err != nil {
		t.Fatal(err)
	}
	if _, err := openAppIn(a.ns, "vale0:app"); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("a's netmap socket after its port was detached: %v", err)
	}
	var kinds []string
	for _, p := range e.dp.Switches()[0].Ports {
		kinds = append(kinds, p.Name+" "+string(p.Kind))
	}
	if want := []string{"vale0:" + testTap + " host", b.portName() + " pod", "vale0:nmtb app"}; !slices.Equal(kinds, want) {
		t.Fatalf("switch ports after a's detach: %v, want %v", kinds, want)
	}
}

func appSendAll(p *nmport.Port, frames [][]byte) error {
	r := p.TxRing(0)
	for _, f := range frames {
		for r.Space() == 0 {
			if err := p.TxSync(); err != nil {
				return err
			}
			if _, err := p.Poll(nmport.PollOut, time.Second); err != nil {
				return err
			}
		}
		i := r.Cur()
		r.Slot(i).Len = uint16(copy(r.Buf(i), f))
		r.Advance(r.Next(i))
	}
	return p.TxSync()
}

func appRecvN(p *nmport.Port, n int, timeout time.Duration) (int, error) {
	r := p.RxRing(0)
	got := 0
	for end := time.Now().Add(timeout); got < n; {
		if time.Now().After(end) {
			return got, errors.New("timeout")
		}
		if _, err := p.Poll(nmport.PollIn, time.Until(end)); err != nil {
			return got, err
		}
		for !r.Empty() {
			r.Advance(r.Next(r.Cur()))
			got++
		}
		if err := p.RxSync(); err != nil {
			return got, err
		}
	}
	return got, nil
}
