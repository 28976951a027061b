package cni

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/epair-cni/epair/internal/testutil/netnsutil"
	"github.com/epair-cni/epair/pkg/agentapi"
	"github.com/epair-cni/epair/pkg/epair"
)

// Port security by default (issue 11), end to end: the attacks of the issue run from a pod
// (attacker X, a raw AF_PACKET socket on its eth0) against two other pods (victims A and B)
// and the gateway, on the agent's default configuration, while a sniffer in X counts the
// victims' frames it receives. Each attack must neither let X see the victims' traffic nor
// make them lose any, and its forged frames must be refused and counted by reason on X's
// port in the agent API. With anti-spoofing turned off ("antiSpoofing": false, the
// opt-out) the address forgery gets through, but the MAC attacks still steal nothing: pod
// ports are never learned from. TestAgentRestartKeepsGateway checks that the gateway's MAC
// is stable across agent restarts, so a pod pinging its gateway loses only the downtime.

const (
	// etherTypeMarker is the IEEE 802 local experimental EtherType: the pods' and the node's
	// kernels ignore such frames, so forged ones with it disturb nothing but the switch.
	etherTypeMarker = 0x88B5
	// The agent's default storm control of a pod port: 1000 broadcast frames per second
	// with a burst of 100 ms worth.
	defaultBroadcastRate = 1000
	defaultStormBurst    = 100
	// floodRate paces the floods (frames/s): near the 2.8 M frames in 15 s,
	// sustained for the whole of the victims' 50 pings.
	floodRate = 150_000
	floodMax  = 300_000
	// victimPings are sent at 20 ms intervals while an attack runs.
	victimPings = 50
)

// secPod is one pod of a port-security test.
type secPod struct {
	name   string
	ns     *netnsutil.NS
	ip     net.IP // IPv4, 4 bytes
	mac    net.HardwareAddr
	hostIf string // the pod's host link: its switch port's HostIfName
}

// secWorld is victims A and B and attacker X on one switch, and their gateway.
type secWorld struct {
	e       *env
	a, b, x *secPod
	gw      net.IP
	gwMAC   net.HardwareAddr
}

// newSecEnv is newEnv whose switch has the extra fields in its configuration ("antiSpoofing",
// "broadcastRate", ...): the configuration newEnv wrote is rewritten and the agent restarted
// on it (before any pod exists). extra == nil is newEnv's default configuration.
func newSecEnv(t *testing.T, extra map[string]any) *env {
	t.Helper()
	e := newEnv(t, envOpts{})
	if extra == nil {
		return e
	}
	b, err := os.ReadFile(e.agent.cfg)
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatalf("agent config %s: %v", e.agent.cfg, err)
	}
	sws, _ := cfg["switches"].([]any)
	if len(sws) != 1 {
		t.Fatalf("agent config: want one switch, have %v", cfg["switches"])
	}
	sw := sws[0].(map[string]any)
	for k, v := range extra {
		sw[k] = v
	}
	if b, err = json.Marshal(cfg); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.agent.cfg, b, 0o600); err != nil {
		t.Fatal(err)
	}
	e.agent.stop(false)
	e.agent.start()
	t.Logf("agent restarted with switch config %s", mustJSON(sw))
	return e
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// newSecWorld adds pods A, B and X to e's switch and resolves A↔B, A→gateway and
// X→gateway (so that the victims' pings need no ARP during the attacks).
func newSecWorld(t *testing.T, e *env) *secWorld {
	t.Helper()
	l := e.conflist("1.1.0")
	w := &secWorld{e: e}
	var resA *current.Result
	for _, p := range []struct {
		name string
		dst  **secPod
	}{{"sec-a", &w.a}, {"sec-b", &w.b}, {"sec-x", &w.x}} {
		ns := netnsutil.New(t)
		res := e.mustAdd(l, rt(p.name, ns))
		if resA == nil {
			resA = res
		}
		*p.dst = secPodOf(t, p.name, ns, res)
	}
	if len(resA.IPs) == 0 || resA.IPs[0].Gateway.To4() == nil {
		t.Fatalf("ADD result without an IPv4 gateway: %+v", resA.IPs)
	}
	w.gw = resA.IPs[0].Gateway.To4()
	w.gwMAC = tapMAC(t, e)
	for _, c := range []struct {
		from *secPod
		to   net.IP
	}{{w.a, w.b.ip}, {w.b, w.a.ip}, {w.a, w.gw}, {w.x, w.gw}} {
		if err := ping(c.from.ns, c.to.String()); err != nil {
			t.Fatalf("before any attack: %v", err)
		}
	}
	if m := neighMAC(t, w.a.ns, w.gw); !bytes.Equal(m, w.gwMAC) {
		t.Fatalf("before any attack: pod A's neighbour entry for the gateway %s is %v, the host port epvale0 has %v", w.gw, m, w.gwMAC)
	}
	t.Logf("A %s %s (%s), B %s %s (%s), X %s %s (%s), gateway %s %s", w.a.ip, w.a.mac, w.a.hostIf,
		w.b.ip, w.b.mac, w.b.hostIf, w.x.ip, w.x.mac, w.x.hostIf, w.gw, w.gwMAC)
	return w
}

func secPodOf(t *testing.T, name string, ns *netnsutil.NS, res *current.Result) *secPod {
	t.Helper()
	p := &secPod{name: name, ns: ns}
	for _, ifc := range res.Interfaces {
		if ifc.Sandbox != "" {
			m, err := net.ParseMAC(ifc.Mac)
			if err != nil || len(m) != 6 {
				t.Fatalf("%s: pod interface MAC %q in the ADD result: %v", name, ifc.Mac, err)
			}
			p.mac = m
		} else {
			p.hostIf = ifc.Name
		}
	}
	if len(res.IPs) > 0 {
		p.ip = res.IPs[0].Address.IP.To4()
	}
	if p.mac == nil || p.hostIf == "" || p.ip == nil {
		t.Fatalf("%s: ADD result lacks the pod MAC, host link or IPv4 address: %+v", name, res)
	}
	return p
}

// tapMAC is the MAC of the switch's host port, the TAP epvale0 in the host namespace.
func tapMAC(t testing.TB, e *env) net.HardwareAddr {
	t.Helper()
	l, err := e.host.NL.LinkByName("epvale0")
	if err != nil {
		t.Fatalf("host port epvale0: %v", err)
	}
	return l.Attrs().HardwareAddr
}

// neighMAC is the MAC of ns's eth0 neighbour entry for ip (nil if there is none).
func neighMAC(t testing.TB, ns *netnsutil.NS, ip net.IP) net.HardwareAddr {
	t.Helper()
	l, err := ns.NL.LinkByName("eth0")
	if err != nil {
		t.Fatalf("eth0 in %s: %v", ns.Name, err)
	}
	ns4, err := ns.NL.NeighList(l.Attrs().Index, netlink.FAMILY_V4)
	if err != nil {
		t.Fatalf("neighbours in %s: %v", ns.Name, err)
	}
	for _, n := range ns4 {
		if n.IP.Equal(ip) {
			return n.HardwareAddr
		}
	}
	return nil
}

// port is p's switch port as the agent API shows it.
func (w *secWorld) port(t testing.TB, p *secPod) agentapi.PortInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sl, err := w.e.agent.client.Switches(ctx)
	if err != nil {
		t.Fatalf("agent API switches: %v", err)
	}
	for _, s := range sl.Items {
		for _, pi := range s.Ports {
			if pi.HostIfName == p.hostIf {
				return pi
			}
		}
	}
	t.Fatalf("agent API: no switch port for %s's host link %s: %+v", p.name, p.hostIf, sl.Items)
	return agentapi.PortInfo{}
}

// settledPort waits until p's port counters stop moving (the switch has processed what
// was queued) and returns them with the time they first read the settled value.
func (w *secWorld) settledPort(t testing.TB, p *secPod) (agentapi.PortInfo, time.Time) {
	t.Helper()
	prev, at := w.port(t, p), time.Now()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
		cur := w.port(t, p)
		if cur.Stats.InFrames == prev.Stats.InFrames && cur.Stats.Dropped == prev.Stats.Dropped {
			return cur, at
		}
		prev, at = cur, time.Now()
	}
	t.Fatalf("%s's port counters still moving 5 s after the attack: %+v", p.name, prev.Stats)
	return prev, at
}

func dropsDelta(before, after map[string]uint64) map[string]uint64 {
	d := map[string]uint64{}
	for k, v := range after {
		if n := v - before[k]; n != 0 {
			d[k] = n
		}
	}
	return d
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// openPacket opens an AF_PACKET SOCK_RAW socket for EtherType proto (0: send only,
// unix.ETH_P_ALL: every frame) in ns, bound to ifname.
func openPacket(t testing.TB, ns *netnsutil.NS, ifname string, proto uint16) (fd, ifindex int) {
	t.Helper()
	l, err := ns.NL.LinkByName(ifname)
	if err != nil {
		t.Fatalf("%s in %s: %v", ifname, ns.Name, err)
	}
	ifindex = l.Attrs().Index
	err = ns.Do(func() error {
		var err error
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(proto)))
		if err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(proto), Ifindex: ifindex}); err != nil {
			unix.Close(fd)
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatalf("packet socket on %s in %s: %v", ifname, ns.Name, err)
	}
	return fd, ifindex
}

// sniffer counts the frames an ETH_P_ALL socket receives on a link (not the ones the
// namespace sends) that match a predicate.
type sniffer struct {
	name  string
	fd    int
	match func([]byte) bool
	n     atomic.Int64
	stop  atomic.Bool
	done  chan struct{}
	err   error
	once  sync.Once
	count int64
}

func sniff(t testing.TB, name string, ns *netnsutil.NS, ifname string, match func([]byte) bool) *sniffer {
	t.Helper()
	fd, _ := openPacket(t, ns, ifname, unix.ETH_P_ALL)
	s := &sniffer{name: name, fd: fd, match: match, done: make(chan struct{})}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 50_000}); err != nil {
		unix.Close(fd)
		t.Fatalf("sniffer %s: SO_RCVTIMEO: %v", name, err)
	}
	go s.run()
	t.Cleanup(func() { s.close() })
	return s
}

func (s *sniffer) run() {
	defer close(s.done)
	buf := make([]byte, 1<<16)
	var stopAt time.Time
	for {
		n, from, err := unix.Recvfrom(s.fd, buf, 0)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				if s.stop.Load() {
					return // stopped and drained
				}
				continue
			}
			s.err = err
			return
		}
		if s.stop.Load() {
			if stopAt.IsZero() {
				stopAt = time.Now()
			} else if time.Since(stopAt) > time.Second {
				return
			}
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		if s.match(buf[:n]) {
			s.n.Add(1)
		}
	}
}

// close stops the sniffer once what is queued is read, and returns the count.
func (s *sniffer) close() int64 {
	s.once.Do(func() {
		s.stop.Store(true)
		<-s.done
		unix.Close(s.fd)
		s.count = s.n.Load()
	})
	return s.count
}

// sendStats is what a sender did: frames the kernel accepted, frames it refused (ENOBUFS:
// the link's queue was full) and for how long it sent.
type sendStats struct {
	sent, nobufs int
	dur          time.Duration
	err          error
}

// sender sends gen's frames from a raw socket in a tight loop, paced to about rate frames
// per second (0: as fast as it can), until max frames are sent, maxDur passes or stop is
// closed.
type sender struct {
	fd   int
	stop chan struct{}
	done chan struct{} // closed when the loop has ended; st is then final
	once sync.Once
	st   sendStats
}

func startSender(t testing.TB, ns *netnsutil.NS, gen func(i int) []byte, rate, max int, maxDur time.Duration) *sender {
	t.Helper()
	fd, _ := openPacket(t, ns, "eth0", 0)
	s := &sender{fd: fd, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		st := &s.st
		start := time.Now()
		defer func() { st.dur = time.Since(start); close(s.done) }()
		for st.sent < max {
			if st.sent%64 == 0 {
				select {
				case <-s.stop:
					return
				default:
				}
				el := time.Since(start)
				if el > maxDur {
					return
				}
				if rate > 0 {
					if ahead := time.Duration(float64(st.sent)/float64(rate)*float64(time.Second)) - el; ahead > 0 {
						time.Sleep(ahead)
					}
				}
			}
			_, err := unix.Write(fd, gen(st.sent))
			switch {
			case err == nil:
				st.sent++
			case errors.Is(err, unix.ENOBUFS) || errors.Is(err, unix.EAGAIN):
				st.nobufs++
				if st.nobufs > 100*max {
					st.err = err
					return
				}
				time.Sleep(20 * time.Microsecond)
			default:
				st.err = err
				return
			}
		}
	}()
	t.Cleanup(func() { s.wait() })
	return s
}

// wait stops the sender (if it still runs) and returns its stats.
func (s *sender) wait() sendStats {
	s.once.Do(func() {
		close(s.stop)
		<-s.done
		unix.Close(s.fd)
	})
	return s.st
}

// udpCounter counts the datagrams with a payload prefix that a UDP socket in ns receives.
type udpCounter struct {
	conn *net.UDPConn
	n    atomic.Int64
	done chan struct{}
}

func listenUDP(t testing.TB, ns *netnsutil.NS, ip net.IP, port int, prefix []byte) *udpCounter {
	t.Helper()
	u := &udpCounter{done: make(chan struct{})}
	err := ns.Do(func() (err error) {
		u.conn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: ip, Port: port})
		return
	})
	if err != nil {
		t.Fatalf("UDP listener %s:%d in %s: %v", ip, port, ns.Name, err)
	}
	u.conn.SetReadBuffer(4 << 20)
	go func() {
		defer close(u.done)
		buf := make([]byte, 2048)
		for {
			n, _, err := u.conn.ReadFromUDP(buf)
			if err != nil {
				return
			}
			if bytes.HasPrefix(buf[:n], prefix) {
				u.n.Add(1)
			}
		}
	}()
	t.Cleanup(func() { u.close() })
	return u
}

// close stops the listener once what is queued is read, and returns the count.
func (u *udpCounter) close() int64 {
	for last := int64(-1); last != u.n.Load(); {
		last = u.n.Load()
		time.Sleep(50 * time.Millisecond)
	}
	u.conn.Close()
	<-u.done
	return u.n.Load()
}

// Frames.

func ethHeader(f []byte, dst, src net.HardwareAddr, et uint16) {
	copy(f[0:6], dst)
	copy(f[6:12], src)
	binary.BigEndian.PutUint16(f[12:14], et)
}

// marker is the payload that identifies one attack's frames.
func marker(tag string) []byte { return []byte("EPAIRSEC" + tag) }

// markerFrame is a 64-byte frame of EtherType etherTypeMarker carrying marker(tag).
func markerFrame(dst, src net.HardwareAddr, tag string) []byte {
	f := make([]byte, 64)
	ethHeader(f, dst, src, etherTypeMarker)
	copy(f[14:], marker(tag))
	return f
}

func isMarker(tag string) func([]byte) bool {
	m := marker(tag)
	return func(f []byte) bool {
		return len(f) >= 14+len(m) && binary.BigEndian.Uint16(f[12:14]) == etherTypeMarker && bytes.HasPrefix(f[14:], m)
	}
}

func ipChecksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

// udpFrame is an Ethernet/IPv4/UDP frame (UDP checksum 0: none) padded to 64 bytes.
func udpFrame(dstMAC, srcMAC net.HardwareAddr, src, dst net.IP, sport, dport uint16, payload []byte) []byte {
	f := make([]byte, max(14+20+8+len(payload), 64))
	ethHeader(f, dstMAC, srcMAC, unix.ETH_P_IP)
	ip := f[14:34]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+8+len(payload)))
	ip[6] = 0x40 // DF
	ip[8] = 64
	ip[9] = unix.IPPROTO_UDP
	copy(ip[12:16], src.To4())
	copy(ip[16:20], dst.To4())
	binary.BigEndian.PutUint16(ip[10:], ipChecksum(ip))
	u := f[34:42]
	binary.BigEndian.PutUint16(u[0:], sport)
	binary.BigEndian.PutUint16(u[2:], dport)
	binary.BigEndian.PutUint16(u[4:], uint16(8+len(payload)))
	copy(f[42:], payload)
	return f
}

// arpFrame is an Ethernet/ARP frame padded to 60 bytes.
func arpFrame(dst, src net.HardwareAddr, op uint16, sha net.HardwareAddr, spa net.IP, tha net.HardwareAddr, tpa net.IP) []byte {
	f := make([]byte, 60)
	ethHeader(f, dst, src, unix.ETH_P_ARP)
	p := f[14:]
	binary.BigEndian.PutUint16(p[0:], 1)
	binary.BigEndian.PutUint16(p[2:], unix.ETH_P_IP)
	p[4], p[5] = 6, 4
	binary.BigEndian.PutUint16(p[6:], op)
	copy(p[8:14], sha)
	copy(p[14:18], spa.To4())
	copy(p[18:24], tha)
	copy(p[24:28], tpa.To4())
	return f
}

// ipv4 returns f's IPv4 header and payload (nil if f is not untagged IPv4).
func ipv4(f []byte) (hdr, payload []byte) {
	if len(f) < 34 || binary.BigEndian.Uint16(f[12:14]) != unix.ETH_P_IP || f[14]>>4 != 4 {
		return nil, nil
	}
	ihl := int(f[14]&0xf) * 4
	if ihl < 20 || len(f) < 14+ihl {
		return nil, nil
	}
	return f[14 : 14+ihl], f[14+ihl:]
}

// icmpEchoBetween matches ICMP echo requests and replies between p and q (either way).
func icmpEchoBetween(p, q net.IP) func([]byte) bool {
	p, q = p.To4(), q.To4()
	return func(f []byte) bool {
		h, pl := ipv4(f)
		if h == nil || h[9] != unix.IPPROTO_ICMP || len(pl) < 8 || (pl[0] != 0 && pl[0] != 8) {
			return false
		}
		src, dst := net.IP(h[12:16]), net.IP(h[16:20])
		return src.Equal(p) && dst.Equal(q) || src.Equal(q) && dst.Equal(p)
	}
}

// udpMarked matches IPv4/UDP frames from src (to dst, unless nil) carrying marker(tag).
func udpMarked(dst, src net.HardwareAddr, tag string) func([]byte) bool {
	m := marker(tag)
	return func(f []byte) bool {
		h, pl := ipv4(f)
		return h != nil && h[9] == unix.IPPROTO_UDP && (dst == nil || bytes.Equal(f[0:6], dst)) && bytes.Equal(f[6:12], src) &&
			len(pl) >= 8+len(m) && bytes.HasPrefix(pl[8:], m)
	}
}

var bcastMAC = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// randomUnicast writes a random locally administered unicast MAC into b.
func randomUnicast(b []byte, r uint64) {
	for i := range 6 {
		b[i] = byte(r >> (8 * i))
	}
	b[0] = b[0]&0xfc | 0x02
}

// pingStats pings dst from ns n times at 20 ms intervals (1 s timeout each) and returns
// the transmitted and received counts with ping's output.
func pingStats(t testing.TB, ns *netnsutil.NS, dst net.IP, n int) (tx, rx int, out string) {
	t.Helper()
	out, _ = ns.Exec("ping", "-c", strconv.Itoa(n), "-i", "0.02", "-W", "1", dst.String())
	m := pingSummary.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("ping %s from %s: no summary in its output:\n%s", dst, ns.Name, out)
	}
	tx, _ = strconv.Atoi(m[1])
	rx, _ = strconv.Atoi(m[2])
	return tx, rx, out
}

var pingSummary = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)

// agentCPU is the CPU time (user + system) the agent process has used.
func agentCPU(t testing.TB, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatalf("agent CPU time: %v", err)
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	// After the command: state(3) ... utime(14) stime(15), in USER_HZ (100) ticks.
	ut, _ := strconv.ParseUint(f[14-3], 10, 64)
	st, _ := strconv.ParseUint(f[15-3], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// attack is one attack from X with the victims' traffic that runs meanwhile.
type attack struct {
	gen      func(i int) []byte
	rate     int // frames/s, 0: unpaced
	max      int
	maxDur   time.Duration
	pingFrom *secPod // the victim's pings (nil: none; the attack sends max frames)
	pingTo   net.IP
	sniffers []sniffSpec
}

type sniffSpec struct {
	name   string
	ns     *netnsutil.NS
	ifname string
	match  func([]byte) bool
}

// outcome is what an attack did.
type outcome struct {
	send    sendStats
	seen    map[string]int64 // matching frames per sniffer
	tx, rx  int              // the victim's pings
	pingOut string
	in      uint64            // frames the switch received from X's port
	drops   map[string]uint64 // X's port drops by reason, during the attack
	window  time.Duration     // from the first frame sent until X's counters settled
	cpu     time.Duration     // agent CPU time used in the window
	xPort   agentapi.PortInfo
}

func (o *outcome) String() string {
	return fmt.Sprintf("sent %d (ENOBUFS %d) in %v, switch received %d from X, X's drops %v, sniffed %v, victim pings %d/%d, window %v, agent CPU %v",
		o.send.sent, o.send.nobufs, o.send.dur.Round(time.Millisecond), o.in, o.drops, o.seen, o.rx, o.tx, o.window.Round(time.Millisecond), o.cpu)
}

func (w *secWorld) run(t *testing.T, a attack) *outcome {
	t.Helper()
	o := &outcome{seen: map[string]int64{}}
	before := w.port(t, w.x)
	pid := w.e.agent.pid()
	cpu0 := agentCPU(t, pid)
	var sn []*sniffer
	for _, s := range a.sniffers {
		sn = append(sn, sniff(t, s.name, s.ns, s.ifname, s.match))
	}
	start := time.Now()
	snd := startSender(t, w.x.ns, a.gen, a.rate, a.max, a.maxDur)
	if a.pingFrom != nil {
		time.Sleep(50 * time.Millisecond) // the attack is under way before the victim's traffic
		o.tx, o.rx, o.pingOut = pingStats(t, a.pingFrom.ns, a.pingTo, victimPings)
	} else {
		<-snd.done // it stops by itself after max frames
	}
	o.send = snd.wait()
	after, settled := w.settledPort(t, w.x)
	o.window = settled.Sub(start)
	o.cpu = agentCPU(t, pid) - cpu0
	time.Sleep(100 * time.Millisecond)
	for i, s := range sn {
		o.seen[a.sniffers[i].name] = s.close()
		if s.err != nil {
			t.Fatalf("sniffer %s: %v", s.name, s.err)
		}
	}
	if o.send.err != nil {
		t.Fatalf("attacker's sender: %v after %d frames", o.send.err, o.send.sent)
	}
	if o.send.sent == 0 {
		t.Fatalf("the attacker sent nothing")
	}
	o.in = after.Stats.InFrames - before.Stats.InFrames
	o.drops = dropsDelta(before.Stats.Drops, after.Stats.Drops)
	o.xPort = after
	t.Logf("%v", o)
	return o
}

// noSniffing and noLoss are the victims' side of every MAC attack.
func noSniffing(t *testing.T, o *outcome, sniffer, what string) {
	t.Helper()
	if n := o.seen[sniffer]; n != 0 {
		t.Errorf("the attacker's sniffer received %d frames of %s (want 0: the switch sent the victims' traffic to the attacker's port)", n, what)
	}
}

func noLoss(t *testing.T, o *outcome, what string) {
	t.Helper()
	if o.tx != victimPings || o.rx != o.tx {
		t.Errorf("%s during the attack: %d of %d pings answered, want all %d (the victim's traffic was diverted or dropped)\n%s",
			what, o.rx, o.tx, victimPings, o.pingOut)
	}
}

// refusedAs checks that X's forged frames were refused and counted as reason: all the
// frames the switch received from X but a few (X's kernel's own) are counted as reason,
// and the switch received at least minIn of them (the attack was in force). The frames X
// sends are compared with what the switch received, not with what X sent: the kernel drops
// what the agent does not read in time (its rings are 64 slots), a large part of a flood.
func refusedAs(t *testing.T, o *outcome, reason string, minIn uint64) {
	t.Helper()
	got := o.drops[reason]
	if o.in < minIn {
		t.Errorf("the switch received %d frames from X (X sent %d), want at least %d: the attack was not in force, the test proves nothing", o.in, o.send.sent, minIn)
	}
	if got+16 < o.in || got > o.in {
		t.Errorf("X's port counted %d frames as %s, want (about) all %d frames the switch received from X (X sent %d); X's drops: %v",
			got, reason, o.in, o.send.sent, o.drops)
	}
}

// TestPortSecurity runs the attacks from pod X against pods A and B and their
// gateway on the agent's default configuration (no port-security fields): none may let X
// see or divert the victims' traffic, and the agent counts X's refused frames by reason.
func TestPortSecurity(t *testing.T) {
	e := newSecEnv(t, nil)
	w := newSecWorld(t, e)
	abPings := icmpEchoBetween(w.a.ip, w.b.ip)

	// The issue: 2.8 M frames with random source (and destination) MACs filled the
	// 1024-entry FDB and the switch flooded unicast: X received 80 of 100 pings between
	// two other pods.
	t.Run("random_source_MACs", func(t *testing.T) {
		o := w.run(t, w.randomMACFlood(e, 11))
		noSniffing(t, o, "X: A<->B pings", "A↔B pings")
		noLoss(t, o, "A→B")
		refusedAs(t, o, "spoofed-mac", 4*1024) // 4 times the FDB the issue filled
		for _, s := range []string{"A: flood", "B: flood", "host: flood"} {
			if n := o.seen[s]; n != 0 {
				t.Errorf("sniffer %q received %d of X's forged frames: refused frames must not be forwarded", s, n)
			}
		}
		w.fdbHasOnlyOwnMAC(t, o)
	})

	// The issue: frames with B's MAC as source made the switch send B's inbound traffic to
	// X (100 % loss for B); frames with the gateway's MAC made X receive 49 of 50 of a
	// neighbour's pings to the gateway, and the neighbour lost them all.
	for _, c := range w.forgedMACCases() {
		t.Run(c.name, func(t *testing.T) {
			o := w.run(t, w.forgedMACAttack(c))
			noSniffing(t, o, "X: victim pings", c.what)
			noLoss(t, o, "A→"+c.dst.String())
			refusedAs(t, o, "spoofed-mac", 1000)
			if n := o.seen["A: forged"]; n != 0 {
				t.Errorf("A received %d of X's frames forged with %s: refused frames must not be forwarded", n, c.forged)
			}
		})
	}

	// The issue: UDP with A's address as source (X's own MAC) reached B: 857 of 1000.
	t.Run("another_pods_IP", func(t *testing.T) {
		o, delivered := w.udpSpoof(t)
		if delivered != 0 {
			t.Errorf("B's UDP socket received %d of the %d datagrams X sent with A's address %s as source, want 0", delivered, o.send.sent, w.a.ip)
		}
		refusedAs(t, o, "spoofed-ip", 900)
	})

	// Valid frames (X's own MAC and address) to a MAC no port has go to the host port and
	// to no other pod: pod ports are never flooded with unknown unicast.
	t.Run("unknown_unicast", func(t *testing.T) {
		payload := make([]byte, 32)
		copy(payload, marker("unk"))
		unknown := net.HardwareAddr{0x02, 0x00, 0x5e, 0x10, 0x00, 0x99}
		f := udpFrame(unknown, w.x.mac, w.x.ip, net.IPv4(10, 60, 255, 254), 40000, 9, payload)
		o := w.run(t, attack{
			gen: func(int) []byte { return f }, rate: 5000, max: 1000, maxDur: 10 * time.Second,
			sniffers: []sniffSpec{
				{"A", w.a.ns, "eth0", udpMarked(nil, w.x.mac, "unk")},
				{"B", w.b.ns, "eth0", udpMarked(nil, w.x.mac, "unk")},
				{"host", e.host, "epvale0", udpMarked(nil, w.x.mac, "unk")},
			},
		})
		for _, s := range []string{"A", "B"} {
			if n := o.seen[s]; n != 0 {
				t.Errorf("pod %s received %d of X's frames to the unknown MAC %v: unknown unicast must go to the host port only", s, n, unknown)
			}
		}
		if n := o.seen["host"]; n+16 < int64(o.in) || o.in < 900 {
			t.Errorf("the host port received %d of X's %d valid frames to the unknown MAC %v (the switch received %d), want all: unknown unicast goes to the host port; X's drops %v",
				n, o.send.sent, unknown, o.in, o.drops)
		}
	})

	// ARP poisoning: X answers for B's address with its own MAC (a frame whose Ethernet
	// source is X's own, so only the ARP check can refuse it).
	t.Run("ARP_claiming_another_pods_IP", func(t *testing.T) {
		f := arpFrame(w.a.mac, w.x.mac, 2, w.x.mac, w.b.ip, w.a.mac, w.a.ip)
		o := w.run(t, attack{
			gen:  func(int) []byte { return f },
			rate: 20_000, max: floodMax, maxDur: 10 * time.Second,
			pingFrom: w.a, pingTo: w.b.ip,
			sniffers: []sniffSpec{
				{"X: A<->B pings", w.x.ns, "eth0", abPings},
			},
		})
		noSniffing(t, o, "X: A<->B pings", "A↔B pings")
		noLoss(t, o, "A→B")
		refusedAs(t, o, "spoofed-arp-nd", 1000)
		if m := neighMAC(t, w.a.ns, w.b.ip); !bytes.Equal(m, w.b.mac) {
			t.Errorf("A's neighbour entry for B %s is %v after X's ARP replies, want B's %v", w.b.ip, m, w.b.mac)
		}
	})

	// The issue: 3.2 M broadcast frames, no limit, the agent burnt 71 % of a core. The
	// default storm control lets 1000/s through (burst 100).
	t.Run("broadcast_flood", func(t *testing.T) {
		payload := make([]byte, 32)
		copy(payload, marker("bcast"))
		f := udpFrame(bcastMAC, w.x.mac, w.x.ip, net.IPv4bcast, 9, 9, payload)
		o := w.run(t, attack{
			gen:  func(int) []byte { return f },
			rate: floodRate, max: floodMax, maxDur: 10 * time.Second,
			pingFrom: w.a, pingTo: w.b.ip,
			sniffers: []sniffSpec{
				{"B: broadcasts", w.b.ns, "eth0", udpMarked(bcastMAC, w.x.mac, "bcast")},
			},
		})
		noLoss(t, o, "A→B")
		allowed := uint64(defaultStormBurst + defaultBroadcastRate*o.window.Seconds())
		got := o.seen["B: broadcasts"]
		t.Logf("broadcast flood: X sent %d frames in %v; the switch received %d, refused %d as storm; B received %d (limit burst %d + %d/s × window %v = %d); agent CPU %v in the window (%.0f %% of a core)",
			o.send.sent, o.send.dur.Round(time.Millisecond), o.in, o.drops["storm"], got, defaultStormBurst, defaultBroadcastRate,
			o.window.Round(time.Millisecond), allowed, o.cpu, 100*o.cpu.Seconds()/o.window.Seconds())
		if o.in < 10*allowed {
			t.Errorf("the switch received %d frames from X (X sent %d), want at least 10 × the %d the limit allows: the flood was not in force, the test proves nothing", o.in, o.send.sent, allowed)
		}
		if storm := o.drops["storm"]; storm+allowed+16 < o.in {
			t.Errorf("X's port refused %d frames as storm, want at least %d (the %d frames the switch received from X minus burst + rate × %v = %d): the broadcast limit is not in force; X's drops: %v",
				storm, o.in-min(o.in, allowed), o.in, o.window.Round(time.Millisecond), allowed, o.drops)
		}
		if uint64(got) > allowed+16 {
			t.Errorf("B received %d of X's broadcasts, want at most burst + rate × window = %d", got, allowed)
		}
		if got < defaultStormBurst/2 {
			t.Errorf("B received %d of X's broadcasts, want at least about the burst (%d): storm control must limit broadcasts, not block them", got, defaultStormBurst)
		}
		for k, n := range o.drops {
			// socket-full: frames the kernel dropped before the switch (the flood outruns
			// the port's socket), not the switch's refusal.
			if k != "storm" && k != "socket-full" && n > 16 {
				t.Errorf("X's valid broadcasts (own MAC and address) were dropped as %s: %d", k, n)
			}
		}
	})
}

// forgedMAC is an attack with another port's MAC as source: B's, or the gateway's.
type forgedMAC struct {
	name, tag string
	src       net.HardwareAddr // the forged source
	forged    string           // whose MAC it is
	dst       net.IP           // what A pings meanwhile
	what      string
}

func (w *secWorld) forgedMACCases() []forgedMAC {
	return []forgedMAC{
		{"another_pods_MAC", "podm", w.b.mac, "B's MAC", w.b.ip, "A↔B pings"},
		{"gateway_MAC", "gwm", w.gwMAC, "the gateway's MAC", w.gw, "A↔gateway pings"},
	}
}

// forgedMACAttack is X flooding frames to A with c's forged source while A pings c.dst,
// sniffed at X (the pings) and A (the forged frames).
func (w *secWorld) forgedMACAttack(c forgedMAC) attack {
	f := markerFrame(w.a.mac, c.src, c.tag)
	return attack{
		gen:  func(int) []byte { return f },
		rate: floodRate, max: floodMax, maxDur: 10 * time.Second,
		pingFrom: w.a, pingTo: c.dst,
		sniffers: []sniffSpec{
			{"X: victim pings", w.x.ns, "eth0", icmpEchoBetween(w.a.ip, c.dst)},
			{"A: forged", w.a.ns, "eth0", isMarker(c.tag)},
		},
	}
}

// randomMACFlood is X flooding frames with random source and destination MACs while A
// pings B, sniffed at X (the pings), A, B and the host port (the flood).
func (w *secWorld) randomMACFlood(e *env, seed uint64) attack {
	rng := rand.New(rand.NewPCG(seed, seed))
	f := markerFrame(bcastMAC, w.x.mac, "rand")
	return attack{
		gen: func(int) []byte {
			randomUnicast(f[0:6], rng.Uint64())
			randomUnicast(f[6:12], rng.Uint64())
			return f
		},
		rate: floodRate, max: floodMax, maxDur: 10 * time.Second,
		pingFrom: w.a, pingTo: w.b.ip,
		sniffers: []sniffSpec{
			{"X: A<->B pings", w.x.ns, "eth0", icmpEchoBetween(w.a.ip, w.b.ip)},
			{"A: flood", w.a.ns, "eth0", isMarker("rand")},
			{"B: flood", w.b.ns, "eth0", isMarker("rand")},
			{"host: flood", e.host, "epvale0", isMarker("rand")},
		},
	}
}

// udpSpoof has X send 1000 UDP datagrams with its own MAC and A's address as source to
// B's MAC, address and a port B listens on, and returns how many B's socket received.
func (w *secWorld) udpSpoof(t *testing.T) (*outcome, int64) {
	t.Helper()
	const port = 7777
	payload := make([]byte, 32)
	copy(payload, marker("udp"))
	u := listenUDP(t, w.b.ns, w.b.ip, port, marker("udp"))
	f := udpFrame(w.b.mac, w.x.mac, w.a.ip, w.b.ip, 40000, port, payload)
	o := w.run(t, attack{gen: func(int) []byte { return f }, rate: 5000, max: 1000, maxDur: 10 * time.Second})
	n := u.close()
	t.Logf("UDP from X as A (%s) to B: %d of %d delivered", w.a.ip, n, o.send.sent)
	return o, n
}

// fdbHasOnlyOwnMAC checks that the switch learned none of X's forged source MACs: the only
// entry on X's port is X's own (static) MAC, and the table holds a handful of entries.
func (w *secWorld) fdbHasOnlyOwnMAC(t *testing.T, o *outcome) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	fdb, err := w.e.agent.client.FDB(ctx, "vale0")
	if err != nil {
		t.Fatalf("agent API FDB: %v", err)
	}
	var onX []string
	for _, en := range fdb.Entries {
		if en.Port == o.xPort.Name && !strings.EqualFold(en.MAC, w.x.mac.String()) {
			onX = append(onX, en.MAC)
		}
	}
	if len(onX) != 0 {
		t.Errorf("FDB has %d entries on X's port %s besides X's own MAC %s (e.g. %v): pod ports must never be learned from",
			len(onX), o.xPort.Name, w.x.mac, onX[:min(len(onX), 5)])
	}
	if len(fdb.Entries) > 16 {
		t.Errorf("FDB has %d entries after the random-source flood, want the pods' and the host's few", len(fdb.Entries))
	}
}

// TestPortSecurityOptOut: with "antiSpoofing": false X's forged addresses get through (the
// opt-out is real), but the MAC attacks still neither divert nor reveal the victims'
// traffic: pod ports are never learned from, whatever the policy.
func TestPortSecurityOptOut(t *testing.T) {
	e := newSecEnv(t, map[string]any{"antiSpoofing": false})
	w := newSecWorld(t, e)
	noSpoofDrops := func(t *testing.T, o *outcome) {
		t.Helper()
		for _, k := range []string{"spoofed-mac", "spoofed-ip", "spoofed-arp-nd", "spoofed-ethertype"} {
			if n := o.drops[k]; n != 0 {
				t.Errorf("anti-spoofing is off, yet X's port counted %d frames as %s (drops %v)", n, k, o.drops)
			}
		}
	}

	t.Run("another_pods_IP", func(t *testing.T) {
		o, delivered := w.udpSpoof(t)
		noSpoofDrops(t, o)
		if delivered*10 < int64(o.send.sent)*9 {
			t.Errorf("anti-spoofing off: B's UDP socket received %d of the %d datagrams X sent as A, want at least 90 %% (is the opt-out ignored?)", delivered, o.send.sent)
		}
	})

	t.Run("random_source_MACs", func(t *testing.T) {
		o := w.run(t, w.randomMACFlood(e, 12))
		noSniffing(t, o, "X: A<->B pings", "A↔B pings")
		noLoss(t, o, "A→B")
		noSpoofDrops(t, o)
		// Unknown unicast goes to the host port, never to another pod.
		if n := o.seen["host: flood"]; n == 0 {
			t.Errorf("anti-spoofing off: none of X's %d frames with random MACs reached the host port (unknown unicast goes there)", o.send.sent)
		}
		for _, s := range []string{"A: flood", "B: flood"} {
			if n := o.seen[s]; n != 0 {
				t.Errorf("sniffer %q received %d of X's frames to unknown unicast MACs: unknown unicast must never be flooded to pod ports", s, n)
			}
		}
		w.fdbHasOnlyOwnMAC(t, o)
	})

	for _, c := range w.forgedMACCases() {
		t.Run(c.name, func(t *testing.T) {
			o := w.run(t, w.forgedMACAttack(c))
			noSniffing(t, o, "X: victim pings", c.what)
			noLoss(t, o, "A→"+c.dst.String())
			noSpoofDrops(t, o)
			// The forged frames themselves are forwarded (to A, whose MAC they are sent to).
			if n := o.seen["A: forged"]; n*2 < int64(o.in) {
				t.Errorf("anti-spoofing off: A received %d of X's %d forged frames (the switch received %d), want most: they are valid frames to A's MAC", n, o.send.sent, o.in)
			}
		})
	}
}

// TestAgentRestartKeepsGateway: a pod pings its gateway every 10 ms while the agent is
// stopped (SIGTERM, then SIGKILL) and started again. The host port's MAC is the same after
// the restart (derived from the node ID and the switch name), the pod's neighbour entry
// for the gateway still holds it, the agent announces the gateway (gratuitous ARP) when it
// is back, and the pings resume at once: the gap in replies is at most the agent's
// downtime plus 1 s.
func TestAgentRestartKeepsGateway(t *testing.T) {
	e := newEnv(t, envOpts{})
	l := e.conflist("1.1.0")
	ns := netnsutil.New(t)
	res := e.mustAdd(l, rt("restart-a", ns))
	gw := res.IPs[0].Gateway.To4()
	if err := ping(ns, gw.String()); err != nil {
		t.Fatal(err)
	}
	mac0 := tapMAC(t, e)
	if id, err := epair.NodeID(""); err == nil {
		if want := epair.GatewayMAC(id, "vale0"); !bytes.Equal(mac0, want) {
			t.Errorf("host port epvale0 has MAC %v, want %v derived from the node ID and the switch name", mac0, want)
		}
	}
	for _, c := range []struct {
		name string
		kill bool
	}{{"SIGTERM", false}, {"SIGKILL", true}} {
		t.Run(c.name, func(t *testing.T) {
			if m := neighMAC(t, ns, gw); !bytes.Equal(m, mac0) {
				t.Fatalf("before the restart: the pod's neighbour entry for the gateway is %v, the host port has %v", m, mac0)
			}
			garp := sniff(t, "pod: gateway announcement", ns, "eth0", func(f []byte) bool {
				return len(f) >= 42 && binary.BigEndian.Uint16(f[12:14]) == unix.ETH_P_ARP &&
					bytes.Equal(f[22:28], mac0) && net.IP(f[28:32]).Equal(gw) && net.IP(f[38:42]).Equal(gw)
			})
			pp := startPinger(t, ns, gw)
			time.Sleep(time.Second)
			tSig := time.Now()
			if c.kill {
				e.agent.kill9()
			} else {
				e.agent.stop(false)
			}
			e.agent.start()
			tUp := time.Now()
			down := tUp.Sub(tSig)
			time.Sleep(2 * time.Second)
			replies, unanswered := pp.stop(t)
			announced := garp.close()

			if mac := tapMAC(t, e); !bytes.Equal(mac, mac0) {
				t.Errorf("after the %s restart the host port epvale0 has MAC %v, before it had %v", c.name, mac, mac0)
			}
			if m := neighMAC(t, ns, gw); !bytes.Equal(m, mac0) {
				t.Errorf("after the %s restart the pod's neighbour entry for the gateway %s is %v, want the host port's %v", c.name, gw, m, mac0)
			}
			if announced == 0 {
				t.Errorf("after the %s restart no gratuitous ARP for the gateway %s from %v reached the pod within 2 s\nhost port: %s\nagent log (recovery):\n%s",
					c.name, gw, mac0, hostPortStats(e), grepLines(e.agent.logText(), "recover", "announce", "attach", "adopt"))
			}
			var before, after []time.Time
			for _, r := range replies {
				if r.Before(tSig) {
					before = append(before, r)
				} else {
					after = append(after, r)
				}
			}
			if len(before) == 0 {
				t.Fatalf("no reply from the gateway in the second before the %s (%d replies, %d unanswered)", c.name, len(replies), unanswered)
			}
			var resumed []time.Time
			for _, r := range after {
				if r.After(tUp) {
					resumed = append(resumed, r)
				}
			}
			if len(resumed) == 0 {
				last := replies[len(replies)-1]
				t.Fatalf("no reply from the gateway in the 2 s after the agent was back from %s (down %v; last reply %v after the signal)",
					c.name, down.Round(time.Millisecond), last.Sub(tSig).Round(time.Millisecond))
			}
			// The largest gap between consecutive replies from just before the signal on:
			// the last reply before the outage to the first one after it.
			var gap time.Duration
			var gapFrom time.Time
			for i := len(before); i < len(replies); i++ {
				if d := replies[i].Sub(replies[i-1]); d > gap {
					gap, gapFrom = d, replies[i-1]
				}
			}
			t.Logf("%s: agent down %v (signal to ready); gateway replies gap %v (from %v after the signal), %d replies, %d unanswered, %d gateway announcements",
				c.name, down.Round(time.Millisecond), gap.Round(time.Millisecond), gapFrom.Sub(tSig).Round(time.Millisecond), len(replies), unanswered, announced)
			if gap > down+time.Second {
				t.Errorf("%s restart: the pod's pings to the gateway went unanswered for %v, more than the agent's downtime %v + 1 s",
					c.name, gap.Round(time.Millisecond), down.Round(time.Millisecond))
			}
		})
	}
}

// pinger is `ping -D -O -i 0.01 -W 1` in a namespace, its output parsed at the end.
type pinger struct {
	cmd  *exec.Cmd
	out  bytes.Buffer
	once sync.Once
}

func startPinger(t testing.TB, ns *netnsutil.NS, dst net.IP) *pinger {
	t.Helper()
	p := &pinger{}
	p.cmd = exec.Command("ip", "netns", "exec", ns.Name, "ping", "-D", "-O", "-n", "-i", "0.01", "-W", "1", dst.String())
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("ping: %v", err)
	}
	t.Cleanup(func() { p.kill() })
	return p
}

func (p *pinger) kill() {
	p.once.Do(func() {
		p.cmd.Process.Signal(syscall.SIGINT)
		done := make(chan struct{})
		go func() { p.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			p.cmd.Process.Kill()
			<-done
		}
	})
}

var replyLine = regexp.MustCompile(`^\[(\d+)\.(\d+)\] \d+ bytes from .*icmp_seq=\d+`)

// stop ends ping and returns the times of its replies (in order) and the number of
// "no answer yet" lines.
func (p *pinger) stop(t testing.TB) (replies []time.Time, unanswered int) {
	t.Helper()
	p.kill()
	sc := bufio.NewScanner(bytes.NewReader(p.out.Bytes()))
	for sc.Scan() {
		line := sc.Text()
		if strings.Contains(line, "no answer yet") {
			unanswered++
			continue
		}
		m := replyLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		sec, _ := strconv.ParseInt(m[1], 10, 64)
		frac := m[2] + strings.Repeat("0", 9)
		nsec, _ := strconv.ParseInt(frac[:9], 10, 64)
		replies = append(replies, time.Unix(sec, nsec))
	}
	if len(replies) == 0 {
		t.Fatalf("ping: no replies parsed from its output:\n%s", p.out.String())
	}
	sort.Slice(replies, func(i, j int) bool { return replies[i].Before(replies[j]) })
	return replies, unanswered
}

// hostPortStats is the switch's host port as the agent API shows it, for failure messages.
func hostPortStats(e *env) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sl, err := e.agent.client.Switches(ctx)
	if err != nil {
		return err.Error()
	}
	var out []string
	for _, s := range sl.Items {
		for _, p := range s.Ports {
			out = append(out, fmt.Sprintf("%s (%s, %s): %+v", p.Name, p.Kind, p.Backend, p.Stats))
		}
	}
	return strings.Join(out, "; ")
}

// grepLines is the lines of text that contain any of words (case-insensitive).
func grepLines(text string, words ...string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		ll := strings.ToLower(l)
		for _, w := range words {
			if strings.Contains(ll, w) {
				out = append(out, l)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}
