package cni

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/epair-cni/epair/internal/testutil/netnsutil"
	"github.com/epair-cni/epair/pkg/nmport"
)

// TestNetmapAppPort: an application opens a netmap port of the node's switch
// through the agent's netmap socket and, with frames it builds itself,
// resolves and pings a pod made through libcni and the node (the gateway on
// the host port). The socket refuses a switch the node does not have and
// the pod's own port.
func TestNetmapAppPort(t *testing.T) {
	netnsutil.RequireRoot(t)
	e := newEnv(t, envOpts{netmap: true})
	sock := filepath.Join(e.agent.dir, "run", "netmap.sock")
	l := e.conflist("1.0.0")
	ns := netnsutil.New(t)
	res := e.mustAdd(l, rt("nmapp-pod", ns))
	podIP := res.IPs[0].Address.IP.To4()
	gw := res.IPs[0].Gateway.To4()

	p, err := nmport.Open(sock, "vale0:app0", 0)
	if err != nil {
		t.Fatalf("open vale0:app0: %v", err)
	}
	defer p.Close()
	appMAC := net.HardwareAddr{0x02, 0xaa, 0, 0, 0, 0x01}
	appIP := net.IPv4(10, 60, 255, 200).To4()

	for _, dst := range []net.IP{podIP, gw} {
		mac := appARP(t, p, appMAC, appIP, dst)
		for seq := uint16(1); seq <= 3; seq++ {
			appPing(t, p, appMAC, mac, appIP, dst, seq)
		}
		t.Logf("application port pinged %v (%v) 3 times", dst, mac)
	}

	// Refusals, with netmap's errno.
	if _, err := nmport.Open(sock, "vale7:x", 0); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("open on a switch the node lacks: %v, want ENOENT", err)
	}
	host := e.hostEpairs()
	if len(host) != 1 {
		t.Fatalf("host links %v, want one", host)
	}
	if _, err := nmport.Open(sock, "vale0:"+host[0], 0); !errors.Is(err, syscall.EBUSY) {
		t.Fatalf("open the pod's own port: %v, want EBUSY", err)
	}
}

// appSend puts one frame on the port and syncs.
func appSend(t *testing.T, p *nmport.Port, f []byte) {
	t.Helper()
	r := p.TxRing(0)
	for r.Space() == 0 {
		if _, err := p.Poll(nmport.PollOut, time.Second); err != nil {
			t.Fatal(err)
		}
	}
	i := r.Cur()
	r.Slot(i).Len = uint16(copy(r.Buf(i), f))
	r.Advance(r.Next(i))
	if err := p.TxSync(); err != nil {
		t.Fatal(err)
	}
}

// appRecv returns the first frame accepted by match within 3 s.
func appRecv(t *testing.T, p *nmport.Port, what string, match func([]byte) bool) []byte {
	t.Helper()
	r := p.RxRing(0)
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := p.Poll(nmport.PollIn, time.Until(deadline)); err != nil {
			t.Fatal(err)
		}
		for !r.Empty() {
			i := r.Cur()
			f := append([]byte(nil), r.Buf(i)[:r.Slot(i).Len]...)
			r.Advance(r.Next(i))
			if match(f) {
				p.RxSync()
				return f
			}
		}
		p.RxSync()
	}
	t.Fatalf("no %s within 3s", what)
	return nil
}

// The offload switch carries a virtio-net header (10 bytes, all zero for a
// plain frame) in front of every frame.
const vnetHdr = 10

func appARP(t *testing.T, p *nmport.Port, mac net.HardwareAddr, ip, target net.IP) net.HardwareAddr {
	t.Helper()
	f := make([]byte, vnetHdr+42)
	e := f[vnetHdr:]
	copy(e[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(e[6:12], mac)
	binary.BigEndian.PutUint16(e[12:], 0x0806)
	copy(e[14:22], []byte{0, 1, 8, 0, 6, 4, 0, 1})
	copy(e[22:28], mac)
	copy(e[28:32], ip)
	copy(e[38:42], target)
	appSend(t, p, f)
	r := appRecv(t, p, "ARP reply from "+target.String(), func(f []byte) bool {
		e := f[vnetHdr:]
		return len(e) >= 42 && binary.BigEndian.Uint16(e[12:]) == 0x0806 &&
			binary.BigEndian.Uint16(e[20:]) == 2 && bytes.Equal(e[28:32], target)
	})
	return net.HardwareAddr(append([]byte(nil), r[vnetHdr+22:vnetHdr+28]...))
}

func appPing(t *testing.T, p *nmport.Port, src, dst net.HardwareAddr, sip, dip net.IP, seq uint16) {
	t.Helper()
	payload := []byte("epair netmap application port ping")
	f := make([]byte, vnetHdr+14+20+8+len(payload))
	e := f[vnetHdr:]
	copy(e[0:6], dst)
	copy(e[6:12], src)
	binary.BigEndian.PutUint16(e[12:], 0x0800)
	ip := e[14:34]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+8+len(payload)))
	ip[8], ip[9] = 64, 1
	copy(ip[12:16], sip)
	copy(ip[16:20], dip)
	binary.BigEndian.PutUint16(ip[10:], csum(ip))
	icmp := e[34:]
	icmp[0] = 8
	binary.BigEndian.PutUint16(icmp[4:], 0xe9a1)
	binary.BigEndian.PutUint16(icmp[6:], seq)
	copy(icmp[8:], payload)
	binary.BigEndian.PutUint16(icmp[2:], csum(icmp))
	appSend(t, p, f)
	appRecv(t, p, "echo reply from "+dip.String(), func(f []byte) bool {
		e := f[vnetHdr:]
		if len(e) < 42 || binary.BigEndian.Uint16(e[12:]) != 0x0800 || e[23] != 1 {
			return false
		}
		ihl := int(e[14]&0xf) * 4
		ic := e[14+ihl:]
		return bytes.Equal(e[26:30], dip) && ic[0] == 0 && binary.BigEndian.Uint16(ic[4:]) == 0xe9a1 &&
			binary.BigEndian.Uint16(ic[6:]) == seq && bytes.Equal(ic[8:], payload)
	})
}

// csum is the Internet checksum of b (RFC 1071).
func csum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
}
