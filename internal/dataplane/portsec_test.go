package dataplane

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/epair-cni/epair/pkg/linkport"
)

// TestPortIdentity: a pod port needs its MAC (and, with anti-spoofing, an
// address), and no port may take a MAC another port of the switch has.
func TestPortIdentity(t *testing.T) {
	e := newEnv(t, 0, linkport.Auto, nil)
	a, b := e.makePod(), e.makePod()
	e.attach(a)

	r := b.req()
	r.PodMAC = nil
	if _, err := e.dp.AttachPort(context.Background(), r); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "podMAC") {
		t.Fatalf("attach without podMAC: %v, want EINVAL naming podMAC", err)
	}
	r = b.req()
	r.PodIPs = nil
	if _, err := e.dp.AttachPort(context.Background(), r); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "podIPs") {
		t.Fatalf("attach without podIPs: %v, want EINVAL naming podIPs", err)
	}
	r = b.req()
	r.PodMAC = a.pair.PodMAC
	_, err := e.dp.AttachPort(context.Background(), r)
	if !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), a.portName()) {
		t.Fatalf("attach with another pod's MAC: %v, want EBUSY naming %s", err, a.portName())
	}
	r.PodMAC = e.cfg.Switches[0].HostPort.MAC
	if _, err := e.dp.AttachPort(context.Background(), r); !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), testTap) {
		t.Fatalf("attach with the gateway's MAC: %v, want EBUSY naming the host port", err)
	}
	// The refused attaches left nothing: b attaches with its own identity.
	e.attach(b)
	e.ping(a, b.ip)
	if n := len(e.dp.Ports()); n != 2 {
		t.Fatalf("%d ports, want 2", n)
	}
}

// TestPodPortsNotLearned: the FDB holds every pod's MAC and the gateway's as
// static entries, and traffic never adds an entry for a pod port, even one
// that may spoof and sends from other MACs.
func TestPodPortsNotLearned(t *testing.T) {
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			e := newEnv(t, 0, v.be, v.mod(nil))
			a, b, c := e.makePod(), e.makePod(), e.makePod()
			e.attach(a)
			e.attach(b)
			e.attachWithID(c, &PortPolicy{AllowSpoofing: true})
			e.ping(a, b.ip)
			e.ping(c, testGW)
			for i := range 50 {
				sendRaw(t, c, udpFrame(net.HardwareAddr{0x02, 0xf1, 0, 0, 0, byte(i)}, a.pair.PodMAC, c.ip, a.ip))
			}
			ents, err := e.dp.FDB("vale0")
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]string{
				a.pair.PodMAC.String(): a.portName(), b.pair.PodMAC.String(): b.portName(), c.pair.PodMAC.String(): c.portName(),
				e.cfg.Switches[0].HostPort.MAC.String(): "vale0:" + testTap,
			}
			for _, en := range ents {
				if w, ok := want[en.MAC.String()]; ok {
					if !en.Static || en.Port != w {
						t.Errorf("entry %s → %s static=%v, want static → %s", en.MAC, en.Port, en.Static, w)
					}
					delete(want, en.MAC.String())
					continue
				}
				if en.Port != "vale0:"+testTap {
					t.Errorf("learned %s on pod port %s", en.MAC, en.Port)
				}
			}
			if len(want) != 0 {
				t.Errorf("missing static entries: %v", want)
			}
			// The forged frames were forwarded (c may spoof), and a's traffic still
			// reaches a.
			e.ping(b, a.ip)
		})
	}
}

// TestUnknownUnicastNotToPods: a frame for a MAC the switch does not know
// goes to the host port only, never to another pod.
func TestUnknownUnicastNotToPods(t *testing.T) {
	e := newEnv(t, 0, linkport.Auto, nil)
	a, b := e.makePod(), e.makePod()
	e.attach(a)
	e.attach(b)
	e.ping(a, b.ip)
	unknown := net.HardwareAddr{0x02, 0x77, 0, 0, 0, 1}
	tapBefore := e.switchPort(t, "vale0:"+testTap).Counters.OutFrames
	seen := countFramesTo(t, b, unknown, func() {
		for range 20 {
			sendRaw(t, a, udpFrame(a.pair.PodMAC, unknown, a.ip, "10.78.0.200"))
		}
		waitFor(t, "the host port's copies", 2*time.Second, func() bool {
			return e.switchPort(t, "vale0:"+testTap).Counters.OutFrames >= tapBefore+20
		})
	})
	if seen != 0 {
		t.Fatalf("another pod received %d of the 20 frames for an unknown MAC", seen)
	}
}

// countFramesTo counts the frames addressed to dst that p's eth0 receives
// while during runs (and 200 ms after).
func countFramesTo(t *testing.T, p *pod, dst net.HardwareAddr, during func()) int {
	t.Helper()
	var fd int
	err := p.ns.Do(func() error {
		l, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		const ethPAll = 0x0300 // htons(ETH_P_ALL)
		if fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, ethPAll); err != nil {
			return err
		}
		tv := unix.NsecToTimeval(int64(20 * time.Millisecond))
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: ethPAll, Ifindex: l.Index})
	})
	if err != nil {
		t.Fatalf("sniffer in %s: %v", p.ns.Name, err)
	}
	defer unix.Close(fd)
	done := make(chan int)
	stop := make(chan struct{})
	go func() {
		n := 0
		buf := make([]byte, 2048)
		for {
			select {
			case <-stop:
				done <- n
				return
			default:
			}
			if k, _, err := unix.Recvfrom(fd, buf, 0); err == nil && k >= 6 && bytes.Equal(buf[:6], dst) {
				n++
			}
		}
	}()
	during()
	time.Sleep(200 * time.Millisecond)
	close(stop)
	return <-done
}

// switchPort is one port of the switch (pod or host) with its counters.
func (e *env) switchPort(t *testing.T, name string) PortInfo {
	t.Helper()
	si, err := e.dp.Switch("vale0")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range si.Ports {
		if p.Name == name {
			return p
		}
	}
	t.Fatalf("no port %s", name)
	return PortInfo{}
}

// TestAnnounceGateways: the gratuitous ARP and the unsolicited NA reach the
// pods through the switch and are valid: a pod's kernel replaces a wrong
// neighbor entry for the gateway with the host port's MAC.
func TestAnnounceGateways(t *testing.T) {
	e := newEnv(t, 0, linkport.Auto, nil)
	a := e.makePod()
	e.attach(a)
	l, err := a.ns.NL.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	wrong := net.HardwareAddr{0x02, 0xde, 0xad, 0, 0, 1}
	for _, gw := range []string{testGW, testGW6} {
		fam := netlink.FAMILY_V4
		if strings.Contains(gw, ":") {
			fam = netlink.FAMILY_V6
		}
		if err := a.ns.NL.NeighSet(&netlink.Neigh{LinkIndex: l.Attrs().Index, State: netlink.NUD_STALE, Family: fam,
			IP: net.ParseIP(gw), HardwareAddr: wrong}); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.dp.AnnounceGateways(); err != nil {
		t.Fatal(err)
	}
	tap := e.cfg.Switches[0].HostPort.MAC
	for _, gw := range []string{testGW, testGW6} {
		waitFor(t, "the pod's neighbor entry for "+gw, 3*time.Second, func() bool {
			ns, err := a.ns.NL.NeighList(l.Attrs().Index, 0)
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range ns {
				if n.IP.Equal(net.ParseIP(gw)) {
					return bytes.Equal(n.HardwareAddr, tap)
				}
			}
			return false
		})
	}
}

// TestUnsolicitedNAChecksum checks the NA's checksum the RFC 8200 way, over an
// explicit pseudo-header (the kernel in TestAnnounceGateways would drop a frame
// with a wrong one too).
func TestUnsolicitedNAChecksum(t *testing.T) {
	f := unsolicitedNA(net.HardwareAddr{0x02, 0, 0, 0, 0, 1}, netip.MustParseAddr("fd00::1"))
	ip6, msg := f[14:14+40], f[14+40:]
	var pseudo []byte
	pseudo = append(pseudo, ip6[8:40]...)                                         // source, destination
	pseudo = append(pseudo, 0, 0, byte(len(msg)>>8), byte(len(msg)), 0, 0, 0, 58) // length, next header
	pseudo = append(pseudo, msg...)
	var sum uint32
	for i := 0; i < len(pseudo); i += 2 {
		w := uint32(pseudo[i]) << 8
		if i+1 < len(pseudo) {
			w |= uint32(pseudo[i+1])
		}
		sum += w
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	if sum != 0xffff {
		t.Fatalf("the NA's checksum does not verify: ones' complement sum %#x, want 0xffff", sum)
	}
	if msg[0] != icmp6NA || msg[4] != 0xa0 || ip6[7] != 255 {
		t.Fatalf("type %d flags %#x hop limit %d, want an NA with router and override flags and hop limit 255", msg[0], msg[4], ip6[7])
	}
}
