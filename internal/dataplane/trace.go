package dataplane

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/epair-cni/epair/pkg/ifcore"
	"github.com/epair-cni/epair/pkg/vale"
)

// TraceRequest describes a frame to trace (Dataplane.Trace).
type TraceRequest struct {
	// Port is the port the frame comes from: "<switch>:<port>", a pod port or the host port.
	Port string
	// Frame, when set, is traced as it is (from its Ethernet header; an offload switch's
	// virtio-net header is added), and the fields below are ignored.
	Frame []byte
	// SrcMAC is the source MAC; by default the pod's (the gateway's for the host port).
	SrcMAC net.HardwareAddr
	// DstMAC is the destination MAC; by default what the sender would resolve DstIP to: the
	// pod holding it on the switch, the gateway for an address off the pod network, or a
	// broadcast ARP request (neighbour solicitation) when nobody holds it.
	DstMAC net.HardwareAddr
	// SrcIP defaults to the port's address of DstIP's family; DstIP is required unless DstMAC
	// is given (then the frame goes to the limited broadcast address 255.255.255.255, UDP by
	// default).
	SrcIP, DstIP netip.Addr
	// Proto is "icmp" (an echo request; the default), "tcp" (a SYN) or "udp".
	Proto            string
	SrcPort, DstPort uint16
}

// TraceStep is one decision on a traced frame's way.
type TraceStep struct {
	// Stage: "frame", "resolve", "ingress", "port-security", "fdb", "output", "host",
	// "fastpath" (the kernel fast path would move the frame instead of the switch).
	Stage string
	// Port is the port the step is about (output steps), "<switch>:<port>".
	Port string
	// Pod is the port's pod ("namespace/name"), when it has one.
	Pod string
	// Verdict: "ok", "refused", "dropped", "unicast", "flood", "delivered", "routed",
	// "local", "unreachable".
	Verdict string
	// Reason is the drop reason, in the drop counters' vocabulary ("spoofed-ip",
	// "queue-full", "no-destination", ...).
	Reason string
	// Detail says what the decision was made of.
	Detail string
}

// TraceResult is what the switch and the node would do with a traced frame.
type TraceResult struct {
	Port  string
	Steps []TraceStep
	// DeliveredTo lists the ports that would take the frame; when it is empty, Reason says
	// why the frame is dropped.
	DeliveredTo []string
	Reason      string
	// Frame is the traced frame (from its Ethernet header).
	Frame []byte
}

// Trace runs a frame from a port through the switch's forwarding code without forwarding
// it (vale.Switch.Trace: the checks, port security and FDB lookup of the real path, and
// what each destination's output queue or ring would do), then, for a frame that reaches
// the host port, asks the kernel how it would route it and says whether masquerading
// applies. Nothing is sent, learned or counted.
func (d *Dataplane) Trace(req TraceRequest) (TraceResult, error) {
	swName, portName, err := vale.ParseName(req.Port)
	if err != nil {
		return TraceResult{}, fmt.Errorf("trace %s: %w: %w", req.Port, ErrInvalid, err)
	}
	d.mu.Lock()
	s, ok := d.switches[swName]
	if !ok {
		d.mu.Unlock()
		return TraceResult{}, fmt.Errorf("trace %s: switch %s: %w", req.Port, swName, ErrNoSwitch)
	}
	src, isPod := d.ports[req.Port]
	if !isPod && portName != s.tapName {
		d.mu.Unlock()
		return TraceResult{}, fmt.Errorf("trace %s: %w", req.Port, ErrNoPort)
	}
	tr := &tracer{d: d, s: s, req: req, res: TraceResult{Port: req.Port}, src: src, pods: map[string]*Port{}}
	for _, p := range d.ports {
		if p.sw == s {
			tr.pods[p.hostIf] = p
		}
	}
	frame, err := tr.frame()
	d.mu.Unlock()
	if err != nil {
		return TraceResult{}, fmt.Errorf("trace %s: %w", req.Port, err)
	}
	tr.res.Frame = frame
	full := make([]byte, s.hdrLen+len(frame)) // a zero virtio-net header: no offload
	copy(full[s.hdrLen:], frame)
	vt, err := s.sw.Trace(portName, full)
	if err != nil {
		return TraceResult{}, fmt.Errorf("trace %s: %w", req.Port, err)
	}
	tr.switchSteps(vt)
	if err := tr.fastStep(frame); err != nil {
		return TraceResult{}, fmt.Errorf("trace %s: %w", req.Port, err)
	}
	return tr.res, nil
}

// fastStep adds the fast path's step when it would move the frame (a pod port on the
// fast path): the kernel then hands it to the destination pod, and the switch, whose
// steps say what it would do with the frame, never sees it.
func (t *tracer) fastStep(frame []byte) error {
	p := t.src
	if p == nil || !p.fastOn {
		return nil
	}
	var moves bool
	if err := t.d.inNS(func() (err error) {
		moves, err = t.d.fast.Moves(frame, p.ifindex)
		return err
	}); err != nil || !moves {
		return err
	}
	st := TraceStep{Stage: "fastpath", Verdict: "delivered",
		Detail: "the kernel fast path moves it from the pod's link straight to the destination pod's (tc redirect); the switch does not see it"}
	if len(t.res.DeliveredTo) == 1 {
		st.Port = t.res.DeliveredTo[0]
		if q := t.pods[strings.TrimPrefix(st.Port, t.s.cfg.Name+":")]; q != nil {
			st.Pod = q.id.pod
		}
		if st.Port == vale.JoinName(t.s.cfg.Name, t.s.tapName) {
			st.Detail = "the kernel fast path moves it from the pod's link into the node's stack, through the host port's interface (tc redirect); the switch does not see it"
		}
	}
	t.step(st)
	return nil
}

type tracer struct {
	d    *Dataplane
	s    *swState
	req  TraceRequest
	res  TraceResult
	src  *Port            // nil for the host port
	pods map[string]*Port // the switch's pod ports by port name (host link name)
	ip   netip.Addr       // the IP source and destination, when the frame has them
	dst  netip.Addr
}

func (t *tracer) step(st TraceStep) { t.res.Steps = append(t.res.Steps, st) }

// frame builds the traced frame. d.mu held.
func (t *tracer) frame() ([]byte, error) {
	r := t.req
	if len(r.Frame) > 0 {
		t.step(TraceStep{Stage: "frame", Verdict: "ok", Detail: fmt.Sprintf("%d bytes as given", len(r.Frame))})
		return slices.Clone(r.Frame), nil
	}
	srcMAC := r.SrcMAC
	if srcMAC == nil {
		if t.src != nil {
			srcMAC = t.src.id.mac
		} else {
			srcMAC = t.s.tapMAC
		}
	}
	if len(srcMAC) != 6 {
		return nil, fmt.Errorf("source MAC: the port has none, give one: %w", ErrInvalid)
	}
	dst := r.DstIP.Unmap()
	if !dst.IsValid() {
		if r.DstMAC == nil {
			return nil, fmt.Errorf("destination: give an IP address or a MAC: %w", ErrInvalid)
		}
		// A MAC alone: the limited broadcast address, as a pod's broadcast would carry.
		dst = netip.AddrFrom4([4]byte{255, 255, 255, 255})
		if r.Proto == "" {
			t.req.Proto, r.Proto = "udp", "udp"
		}
	}
	srcIP := r.SrcIP.Unmap()
	if !srcIP.IsValid() {
		srcIP = t.ownAddr(dst.Is4())
		if !srcIP.IsValid() {
			return nil, fmt.Errorf("source IP: the port has no IPv%d address, give one: %w", map[bool]int{true: 4, false: 6}[dst.Is4()], ErrInvalid)
		}
	}
	if srcIP.Is4() != dst.Is4() {
		return nil, fmt.Errorf("source %s and destination %s are of different families: %w", srcIP, dst, ErrInvalid)
	}
	t.ip, t.dst = srcIP, dst
	dstMAC := r.DstMAC
	if dstMAC == nil {
		var arp bool
		dstMAC, arp = t.resolve(dst)
		if arp {
			return t.neighbourRequest(srcMAC, srcIP, dst)
		}
	}
	return t.ipFrame(srcMAC, dstMAC, srcIP, dst)
}

// ownAddr is the source port's address of a family (the gateway's for the host port).
func (t *tracer) ownAddr(v4 bool) netip.Addr {
	if t.src != nil {
		for _, a := range t.src.id.ips {
			if a.Unmap().Is4() == v4 {
				return a.Unmap()
			}
		}
		return netip.Addr{}
	}
	for _, g := range t.s.cfg.HostPort.Gateways {
		if g.Addr().Is4() == v4 {
			return g.Addr()
		}
	}
	return netip.Addr{}
}

// resolve is what the sender's neighbour resolution finds for dst: the MAC of the pod or
// gateway holding it on the switch's network, the gateway's for an address off it; arp
// when nobody on the network holds it (the sender's request goes unanswered).
func (t *tracer) resolve(dst netip.Addr) (mac net.HardwareAddr, arp bool) {
	for _, g := range t.s.cfg.HostPort.Gateways {
		if g.Addr() == dst {
			t.step(TraceStep{Stage: "resolve", Verdict: "ok", Detail: fmt.Sprintf("%s is the gateway (host port %s) at %s", dst, t.s.tapName, t.s.tapMAC)})
			return t.s.tapMAC, false
		}
	}
	onNet := false
	for _, g := range t.s.cfg.HostPort.Gateways {
		onNet = onNet || g.Masked().Contains(dst)
	}
	if !onNet {
		gw := t.ownGateway(dst.Is4())
		t.step(TraceStep{Stage: "resolve", Verdict: "ok", Detail: fmt.Sprintf("%s is off the pod network: next hop the gateway %s (host port %s) at %s", dst, gw, t.s.tapName, t.s.tapMAC)})
		return t.s.tapMAC, false
	}
	for _, p := range t.pods {
		if slices.ContainsFunc(p.id.ips, func(a netip.Addr) bool { return a.Unmap() == dst }) {
			t.step(TraceStep{Stage: "resolve", Verdict: "ok", Port: p.name, Pod: p.id.pod, Detail: fmt.Sprintf("%s is the address of %s at %s", dst, podOr(p), p.id.mac)})
			return p.id.mac, false
		}
	}
	t.step(TraceStep{Stage: "resolve", Verdict: "unreachable", Detail: fmt.Sprintf("no port of switch %s has %s: the sender's neighbour request is broadcast and goes unanswered; tracing that request", t.s.cfg.Name, dst)})
	return nil, true
}

func (t *tracer) ownGateway(v4 bool) netip.Addr {
	for _, g := range t.s.cfg.HostPort.Gateways {
		if g.Addr().Is4() == v4 {
			return g.Addr()
		}
	}
	return netip.Addr{}
}

func podOr(p *Port) string {
	if p.id.pod != "" {
		return "pod " + p.id.pod + " (port " + p.name + ")"
	}
	return "port " + p.name
}

// neighbourRequest is the ARP request (IPv4) or neighbour solicitation (IPv6) for dst.
func (t *tracer) neighbourRequest(srcMAC net.HardwareAddr, src, dst netip.Addr) ([]byte, error) {
	var b []byte
	var err error
	if dst.Is4() {
		eth := &layers.Ethernet{SrcMAC: srcMAC, DstMAC: layers.EthernetBroadcast, EthernetType: layers.EthernetTypeARP}
		arp := &layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
			Operation: layers.ARPRequest, SourceHwAddress: srcMAC, SourceProtAddress: src.AsSlice(), DstHwAddress: make([]byte, 6), DstProtAddress: dst.AsSlice()}
		b, err = serialize(eth, arp)
	} else {
		d16 := dst.As16()
		sn := netip.AddrFrom16([16]byte{0xff, 0x02, 11: 1, 12: 0xff, 13: d16[13], 14: d16[14], 15: d16[15]})
		sm := sn.As16()
		eth := &layers.Ethernet{SrcMAC: srcMAC, DstMAC: net.HardwareAddr{0x33, 0x33, sm[12], sm[13], sm[14], sm[15]}, EthernetType: layers.EthernetTypeIPv6}
		ip6 := &layers.IPv6{Version: 6, NextHeader: layers.IPProtocolICMPv6, HopLimit: 255, SrcIP: src.AsSlice(), DstIP: sn.AsSlice()}
		icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypeNeighborSolicitation, 0)}
		_ = icmp.SetNetworkLayerForChecksum(ip6)
		ns := &layers.ICMPv6NeighborSolicitation{TargetAddress: dst.AsSlice(), Options: layers.ICMPv6Options{{Type: layers.ICMPv6OptSourceAddress, Data: srcMAC}}}
		b, err = serialize(eth, ip6, icmp, ns)
	}
	if err == nil {
		t.step(TraceStep{Stage: "frame", Verdict: "ok", Detail: fmt.Sprintf("%s > broadcast, who has %s, tell %s: %d bytes", srcMAC, dst, src, len(b))})
	}
	return b, err
}

// ipFrame is an ICMP echo request, a TCP SYN or a UDP datagram from src to dst.
func (t *tracer) ipFrame(srcMAC, dstMAC net.HardwareAddr, src, dst netip.Addr) ([]byte, error) {
	r := t.req
	eth := &layers.Ethernet{SrcMAC: srcMAC, DstMAC: dstMAC}
	var netl gopacket.NetworkLayer
	var ls []gopacket.SerializableLayer
	proto := r.Proto
	if proto == "" {
		proto = "icmp"
	}
	var ipProto layers.IPProtocol
	switch proto {
	case "icmp":
		ipProto = layers.IPProtocolICMPv4
		if dst.Is6() {
			ipProto = layers.IPProtocolICMPv6
		}
	case "tcp":
		ipProto = layers.IPProtocolTCP
	case "udp":
		ipProto = layers.IPProtocolUDP
	default:
		return nil, fmt.Errorf("protocol %q: want icmp, tcp or udp: %w", r.Proto, ErrInvalid)
	}
	if (r.SrcPort != 0 || r.DstPort != 0) && proto == "icmp" {
		return nil, fmt.Errorf("ports are for tcp and udp, not icmp: %w", ErrInvalid)
	}
	if dst.Is4() {
		eth.EthernetType = layers.EthernetTypeIPv4
		ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: ipProto, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
		netl = ip
		ls = append(ls, eth, ip)
	} else {
		eth.EthernetType = layers.EthernetTypeIPv6
		ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: ipProto, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
		netl = ip
		ls = append(ls, eth, ip)
	}
	sport, dport := r.SrcPort, r.DstPort
	if sport == 0 {
		sport = 40000
	}
	desc := ""
	switch proto {
	case "icmp":
		if dst.Is4() {
			ls = append(ls, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0), Id: 1, Seq: 1})
		} else {
			icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypeEchoRequest, 0)}
			_ = icmp.SetNetworkLayerForChecksum(netl)
			ls = append(ls, icmp, &layers.ICMPv6Echo{Identifier: 1, SeqNumber: 1})
		}
		desc = "ICMP echo request"
	case "tcp":
		tcp := &layers.TCP{SrcPort: layers.TCPPort(sport), DstPort: layers.TCPPort(dport), SYN: true, Window: 64240, Seq: 1}
		_ = tcp.SetNetworkLayerForChecksum(netl)
		ls = append(ls, tcp)
		desc = fmt.Sprintf("TCP SYN %d > %d", sport, dport)
	case "udp":
		udp := &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)}
		_ = udp.SetNetworkLayerForChecksum(netl)
		ls = append(ls, udp)
		desc = fmt.Sprintf("UDP %d > %d", sport, dport)
	}
	ls = append(ls, gopacket.Payload(make([]byte, 32)))
	b, err := serialize(ls...)
	if err == nil {
		t.step(TraceStep{Stage: "frame", Verdict: "ok", Detail: fmt.Sprintf("%s > %s, %s > %s %s, %d bytes", srcMAC, dstMAC, src, dst, desc, len(b))})
	}
	return b, err
}

func serialize(ls ...gopacket.SerializableLayer) ([]byte, error) {
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		return nil, fmt.Errorf("build the frame: %w", err)
	}
	return buf.Bytes(), nil
}

// switchSteps turns the switch's trace into steps, then follows a frame the host port
// takes into the kernel.
func (t *tracer) switchSteps(vt vale.Trace) {
	sw := t.s.cfg.Name
	full := func(port string) string { return sw + ":" + port }
	if vt.Drop == vale.DropBadFrame.String() || vt.Drop == vale.DropTooLong.String() {
		t.step(TraceStep{Stage: "ingress", Verdict: "dropped", Reason: vt.Drop, Detail: fmt.Sprintf("the switch takes frames of %d to %d bytes", 14, t.s.sw.Config().MaxFrame-t.s.hdrLen)})
		t.res.Reason = vt.Drop
		return
	}
	t.step(TraceStep{Stage: "ingress", Verdict: "ok", Detail: fmt.Sprintf("%d bytes, within the switch's %d", len(t.res.Frame), t.s.sw.Config().MaxFrame-t.s.hdrLen)})
	t.securityStep(vt)
	if vt.Dst == vale.DstRefused {
		t.res.Reason = refusalOf(vt.Reason)
		return
	}
	switch vt.Dst {
	case vale.DstBroadcast:
		t.step(TraceStep{Stage: "fdb", Verdict: "flood", Detail: "a group address (broadcast or multicast): flooded to every other port"})
	case vale.DstUnknown:
		t.step(TraceStep{Stage: "fdb", Verdict: "flood", Detail: "unknown unicast (not in the FDB): flooded to the ports that are not known-only; pod ports are, so only the host port gets it"})
	case vale.DstDrop:
		t.step(TraceStep{Stage: "fdb", Verdict: "dropped", Reason: vale.DropNoDest.String(), Detail: "the port is not admitted to the switch (being attached or detached)"})
	default:
		d := fmt.Sprintf("%s is on port %s", net.HardwareAddr(t.res.Frame[0:6]), full(vt.DstPort))
		if vt.Drop == vale.DropNoDest.String() {
			t.step(TraceStep{Stage: "fdb", Verdict: "dropped", Reason: vt.Drop, Port: full(vt.DstPort), Detail: d + ", the port the frame came from: not sent back"})
		} else {
			t.step(TraceStep{Stage: "fdb", Verdict: "unicast", Port: full(vt.DstPort), Pod: t.podOf(vt.DstPort), Detail: d})
		}
	}
	if vt.Drop != "" {
		t.res.Reason = vt.Drop
		return
	}
	hostTook := false
	reasons := map[string]bool{}
	for _, o := range vt.Out {
		st := TraceStep{Stage: "output", Port: full(o.Port), Pod: t.podOf(o.Port), Verdict: "delivered", Detail: o.Detail}
		if o.Port == t.s.tapName {
			st.Detail = "host port (no output queue): " + o.Detail
		}
		if !o.Accepted {
			st.Verdict, st.Reason = "dropped", o.Drop
			reasons[o.Drop] = true
		} else {
			t.res.DeliveredTo = append(t.res.DeliveredTo, full(o.Port))
			hostTook = hostTook || o.Port == t.s.tapName
		}
		t.step(st)
	}
	if len(t.res.DeliveredTo) == 0 {
		rs := make([]string, 0, len(reasons))
		for r := range reasons {
			rs = append(rs, r)
		}
		slices.Sort(rs)
		t.res.Reason = strings.Join(rs, ",")
		if len(vt.Out) == 0 {
			t.res.Reason = vale.DropNoDest.String()
		}
	}
	if hostTook && t.dst.IsValid() && t.res.Frame[0]&1 == 0 {
		t.hostStep()
	}
}

func (t *tracer) podOf(port string) string {
	if p := t.pods[port]; p != nil {
		return p.id.pod
	}
	return ""
}

func refusalOf(code uint8) string {
	if code == 0 {
		return vale.DropRefused.String()
	}
	return Refusal(code - 1).String()
}

// securityStep says what the source port's security decided.
func (t *tracer) securityStep(vt vale.Trace) {
	ps := t.s.guard.admitted(t.srcIndex())
	switch {
	case vt.Dst == vale.DstRefused:
		r := refusalOf(vt.Reason)
		d := "anti-spoofing: " + refusalDetail(r, t)
		if r == RefusedStorm.String() {
			d = "storm control: over the port's broadcast or multicast rate; the frame is refused"
		}
		t.step(TraceStep{Stage: "port-security", Verdict: "refused", Reason: r, Detail: d})
	case ps == nil:
		t.step(TraceStep{Stage: "port-security", Verdict: "dropped", Reason: vale.DropNoDest.String(), Detail: "the port is not admitted"})
	case t.src == nil:
		t.step(TraceStep{Stage: "port-security", Verdict: "ok", Detail: "the host port is trusted (and learned from)"})
	case ps.spoof == nil && !ps.storm:
		t.step(TraceStep{Stage: "port-security", Verdict: "ok", Detail: "the port's policy allows spoofing and sets no storm limit"})
	default:
		var d []string
		if ps.spoof != nil {
			d = append(d, "anti-spoofing: the source addresses are the pod's")
		} else {
			d = append(d, "anti-spoofing off (policy)")
		}
		if ps.storm && t.res.Frame[0]&1 != 0 {
			d = append(d, "storm control: within the port's rate")
		}
		t.step(TraceStep{Stage: "port-security", Verdict: "ok", Detail: strings.Join(d, "; ")})
	}
}

func refusalDetail(r string, t *tracer) string {
	var who string
	if t.src != nil {
		var ips []string
		for _, a := range t.src.id.ips {
			ips = append(ips, a.String())
		}
		who = fmt.Sprintf(" (the pod is %s, %s)", t.src.id.mac, strings.Join(ips, ", "))
	}
	switch r {
	case RefusedMAC.String():
		return "the source MAC is not the pod's" + who
	case RefusedIP.String():
		return "the source IP is not one of the pod's" + who
	case RefusedClaim.String():
		return "the ARP or neighbour discovery message claims an address that is not the pod's" + who
	case RefusedEtherType.String():
		return "the ethertype is neither IPv4, ARP nor IPv6"
	}
	return r
}

func (t *tracer) srcIndex() uint16 {
	if t.src != nil {
		return uint16(t.src.vp.Index())
	}
	return uint16(t.s.tapIndex)
}

// hostStep asks the kernel how it routes the frame the host port took, as it would on
// receiving it from the TAP, and says whether the masquerade rules apply.
func (t *tracer) hostStep() {
	var routes []netlink.Route
	err := t.d.inNS(func() error {
		var err error
		routes, err = t.d.nl.RouteGetWithOptions(t.dst.AsSlice(), &netlink.RouteGetOptions{Iif: t.s.tapName, SrcAddr: t.ip.AsSlice()})
		return err
	})
	if err != nil || len(routes) == 0 {
		t.step(TraceStep{Stage: "host", Verdict: "unreachable", Detail: fmt.Sprintf("the kernel does not route %s from %s in via %s: %v", t.dst, t.ip, t.s.tapName, err)})
		return
	}
	r := routes[0]
	if r.Type == unix.RTN_LOCAL {
		t.step(TraceStep{Stage: "host", Verdict: "local", Detail: fmt.Sprintf("%s is an address of the node: delivered to the node's own stack", t.dst)})
		return
	}
	dev := fmt.Sprintf("ifindex %d", r.LinkIndex)
	if l, err := t.d.nl.LinkByIndex(r.LinkIndex); err == nil {
		dev = l.Attrs().Name
	}
	via := ""
	if r.Gw != nil {
		via = " via " + r.Gw.String()
	}
	d := fmt.Sprintf("the kernel routes %s > %s%s out of %s", t.ip, t.dst, via, dev)
	taps := map[string]bool{}
	t.d.mu.Lock()
	for _, s := range t.d.switches {
		taps[s.tapName] = true
	}
	t.d.mu.Unlock()
	switch {
	case taps[dev]:
		d += ": back into a pod network through its host port (not masqueraded; a DNATed service flow would be, the hairpin rule)"
	case t.d.nft != nil && t.inPodNet():
		d += fmt.Sprintf(": leaves the pod network, masqueraded to the node's address (nftables table inet %s)", t.d.cfg.NFTTable)
	default:
		d += ": not masqueraded"
	}
	t.step(TraceStep{Stage: "host", Verdict: "routed", Detail: d})
}

func (t *tracer) inPodNet() bool {
	for _, g := range t.s.cfg.HostPort.Gateways {
		if g.Masked().Contains(t.ip) {
			return true
		}
	}
	return false
}

// TraceDeliver implements vale.TraceDeliverer: Deliver's decisions for the frame (a buffer,
// the discipline's admission with the queue's state and rate) without queueing it.
func (q *outq) TraceDeliver(d *vale.Delivery) vale.DeliverTrace {
	if q.closed.Load() {
		return vale.DeliverTrace{Drop: vale.DropNoSpace.String(), Detail: "the output queue is closing"}
	}
	f := d.Frame(0)
	cls, prio := q.classes.get(d.Source())
	var detail []string
	if q.big != nil && int(f.Len) > q.bufs.size {
		if !q.big.available() {
			return vale.DeliverTrace{Drop: vale.DropNoSpace.String(), Detail: "output queue: no super-frame buffer free"}
		}
	} else if !q.bufs.available() {
		return vale.DeliverTrace{Drop: vale.DropNoSpace.String(), Detail: "output queue: no frame buffer free"}
	}
	p := &ifcore.Packet{Len: int(f.Len), Class: cls}
	if prio {
		p.Flags = ifcore.PktPrio
	}
	if h := min(q.hdrLen, len(f.Data)); len(f.Data) > h {
		if f.Data[h]&1 != 0 {
			p.Flags |= ifcore.PktMcast
		}
		p.Hash = flowHash(f.Data[h:])
	}
	a := q.sq.Admit(p)
	cl := fmt.Sprintf("class %d", cls)
	if prio {
		cl += " (priority FIFO)"
	}
	detail = append(detail, fmt.Sprintf("output queue (%s): %s, %d/%d frames, %d/%d bytes queued", a.Discipline, cl, a.State.Len, a.State.MaxLen, a.State.Bytes, a.State.MaxBytes))
	if rs := a.Rate; rs != nil {
		r := fmt.Sprintf("rate %s", rateString(rs.Rate))
		if rs.Rate.BitsPerSec > 0 {
			r += fmt.Sprintf(", %.0f byte tokens", rs.ByteTokens)
		}
		if rs.Rate.PktsPerSec > 0 {
			r += fmt.Sprintf(", %.1f packet tokens", rs.PktTokens)
		}
		if rs.Wait > 0 {
			r += fmt.Sprintf(", the head waits %v for tokens", rs.Wait)
		}
		detail = append(detail, r)
	}
	if q.sq.IsOActive() {
		detail = append(detail, "the link's TX queue is full (waiting for room)")
	}
	switch {
	case a.Dead:
		return vale.DeliverTrace{Drop: vale.DropNoSpace.String(), Detail: strings.Join(append(detail, "the interface is detached"), "; ")}
	case !a.OK:
		return vale.DeliverTrace{Drop: vale.DropNoSpace.String(), Detail: strings.Join(append(detail, "full: refused"), "; ")}
	case a.Evict:
		detail = append(detail, "full: queued by evicting a queued frame of lower priority")
	default:
		detail = append(detail, "queued")
	}
	return vale.DeliverTrace{Accepted: true, Detail: strings.Join(detail, "; ")}
}

func rateString(r ifcore.Rate) string {
	var p []string
	if r.BitsPerSec > 0 {
		p = append(p, fmt.Sprintf("%d bit/s", r.BitsPerSec))
	}
	if r.PktsPerSec > 0 {
		p = append(p, fmt.Sprintf("%d packets/s", r.PktsPerSec))
	}
	return strings.Join(p, " and ")
}

// available reports whether get would return a buffer now.
func (b *bufPool) available() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.free) > 0 || len(b.bufs) < b.max
}

var _ vale.TraceDeliverer = (*outq)(nil)
