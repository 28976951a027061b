package dataplane

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/epair-cni/epair/internal/cleanup"
	"github.com/epair-cni/epair/pkg/epair"
	"github.com/epair-cni/epair/pkg/linkport"
	"github.com/epair-cni/epair/pkg/netmap"
	"github.com/epair-cni/epair/pkg/vale"
)

// PortKind says what a port connects.
type PortKind string

// Port kinds.
const (
	KindPod  PortKind = "pod"  // a pod's host-end veth
	KindHost PortKind = "host" // the switch's TAP host port
)

// AttachRequest asks for a pod's host link to become a switch port.
type AttachRequest struct {
	// Switch is the switch name ("" for the first configured switch, or
	// the first remaining one once it was removed, see RemoveSwitch).
	Switch string
	// Owner identifies the attachment (the CNI "<containerID>/<ifname>");
	// the same owner and link make the request idempotent.
	Owner string
	// HostIfName and HostIfIndex name the host end of the pod's veth
	// (epair<n>a); at least one is required, and both must agree.
	HostIfName  string
	HostIfIndex int
	// Policy is the port's policy (nil: Config.DefaultPolicy).
	Policy *PortPolicy
	// PodMAC is the pod end's MAC (required): the switch installs it as
	// the port's static FDB entry (pod ports are never learned from), and
	// refuses it when another port of the switch has it already.
	PodMAC net.HardwareAddr
	// PodIPs are the pod's addresses: with PodMAC, what anti-spoofing lets
	// the pod send as. At least one is required unless the policy sets
	// AllowSpoofing (and a port attached without any cannot lose it later).
	PodIPs []netip.Addr
	// Pod names the pod behind the port ("namespace/name"), for status
	// and diagnostics; the dataplane does not interpret it.
	Pod string
}

// PortInfo describes a port.
type PortInfo struct {
	Name        string // "<switch>:<hostIfName>"
	Switch      string
	HostIfName  string
	HostIfIndex int
	Owner       string
	Pod         string // AttachRequest.Pod
	Kind        PortKind
	Index       int // index in the switch
	// Backend is the pod port's socket now: "af_xdp", "af_packet", or
	// "af_packet_ringless" (a FastStart port before its upgrade, or one that
	// AF_XDP cannot serve).
	Backend string
	// Fallback is why AF_XDP is not used (auto selection or a failed
	// upgrade).
	Fallback string
	Up       bool
	Policy   PortPolicy
	// Counters are the switch's: In = frames from the link, Out = frames
	// put on the port's output queue, Drops by reason (DropNoSpace here
	// means the output queue refused the frame).
	Counters vale.Counters
	// Queue is the output queue (pod ports).
	Queue QueueStats
	// Refused counts the frames from the pod that port security refused, by
	// reason (anti-spoofing and storm control); their total is Counters'
	// vale.DropRefused.
	Refused RefusedCounts
	// RxChains counts the frames longer than one netmap buffer (TSO/GRO
	// super-frames, on offload switches) the port received from its link.
	RxChains uint64
	// KernelDrops counts the frames the kernel dropped before the switch saw
	// them (the socket's receive ring or queue was full: the pod sent faster
	// than the switch drained its link), over every socket the port has had
	// (linkport.KernelDrops). They are not in Counters, which counts what the
	// switch saw; their drop reason is ReasonSocketFull. Pod ports only.
	KernelDrops uint64
	// Captures is the number of open captures of the port (Capture, until
	// its Close); 0 means no capture's tap is left on it.
	Captures int
	// PodMAC and PodIPs are the identity given at attach (pod ports).
	PodMAC net.HardwareAddr
	PodIPs []netip.Addr
	// FastPath is what the kernel fast path does for the port (Config.FastPath).
	FastPath FastPathInfo
}

// ReasonSocketFull names PortInfo.KernelDrops wherever drops are shown by
// reason (the agent API, valectl, NodeState, the metrics), next to the
// switch's reasons (vale.DropReason) and port security's (Refusal). Captures
// and traces never show such a frame: the switch never had it.
const ReasonSocketFull = "socket-full"

// Port is an attached pod port.
type Port struct {
	name, hostIf, owner string
	ifindex             int
	sw                  *swState
	ga                  *netmap.GenericAdapter
	oq                  *outq
	opened              linkport.Opened
	up                  *linkport.Upgradable // FastStart: the port until and after its upgrade
	vp                  *vale.Port

	id      podIdentity
	refused refusedCounters
	// captures counts the open captures of the port (Capture until its Close).
	captures atomic.Int32

	polMu  sync.Mutex
	policy PortPolicy

	// fastOn: the port's socket has the fast path's filter, so the port takes part in
	// it (fastSync); fast is what the fast path was last told of it.
	fastOn bool
	fast   fastState
}

func (p *Port) info(d *Dataplane) PortInfo {
	o := p.opened
	if p.up != nil {
		o = p.up.Current()
	}
	pi := PortInfo{
		Name: p.name, Switch: p.sw.cfg.Name, HostIfName: p.hostIf, HostIfIndex: p.ifindex,
		Owner: p.owner, Kind: KindPod, Index: int(p.vp.Index()), Backend: o.Backend.String(),
		Up: true, Counters: p.vp.Counters(), Queue: p.oq.stats(), Refused: p.refused.snapshot(), RxChains: p.ga.RxChains.Load(),
		PodMAC: p.id.mac, PodIPs: p.id.ips, Pod: p.id.pod, Captures: int(p.captures.Load()),
	}
	if o.Fallback != nil {
		pi.Fallback = o.Fallback.Error()
	}
	// One getsockopt per socket. Ports are listed under d.mu and closed only
	// after they are unlinked under it, so the read does not fail; if it did,
	// the count would be the last one read (FastStart) or 0.
	pi.KernelDrops, _ = linkport.KernelDrops(p.opened.Port)
	p.polMu.Lock()
	pi.Policy = p.policy
	p.polMu.Unlock()
	pi.FastPath = d.fastInfo(p)
	return pi
}

// AttachPort opens a pod's host link (AF_XDP by default, AF_PACKET as
// fallback or when configured), puts an output queue with the request's
// policy in front of it, attaches it to the switch and starts serving it.
// Attaching the same link for the same owner again returns the existing
// port; the link attached for another owner, or the owner with another
// link, is EBUSY.
//
// The expensive part (socket, UMEM, XDP program, adapter, output queue,
// bwrap) runs without the dataplane's lock: the link and the owner are
// claimed first (a concurrent attach or detach of the same link or owner
// waits for the claim), and the lock is taken again only to publish the
// port. Attaches of different links run in parallel.
func (d *Dataplane) AttachPort(ctx context.Context, req AttachRequest) (PortInfo, error) {
	pol, err := d.checkAttach(ctx, req)
	if err != nil {
		return PortInfo{}, err
	}
	// A closed dataplane has no namespace to look the link up in (the lookup would fall
	// back to the calling thread's and could find a namesake there).
	d.mu.Lock()
	closed := d.closed
	d.mu.Unlock()
	if closed {
		return PortInfo{}, fmt.Errorf("attach port for %s: %w", req.Owner, ErrClosed)
	}
	link, err := d.resolveLink(req.HostIfName, req.HostIfIndex)
	if err != nil {
		return PortInfo{}, fmt.Errorf("attach port for %s: %w", req.Owner, err)
	}
	return d.attach(ctx, req.Switch, req.Owner, link, pol, identityOf(req))
}

// checkAttach validates a request and returns the port's policy.
func (d *Dataplane) checkAttach(ctx context.Context, req AttachRequest) (PortPolicy, error) {
	if err := ctx.Err(); err != nil {
		return PortPolicy{}, fmt.Errorf("attach port: %w", err)
	}
	if req.Owner == "" {
		return PortPolicy{}, fmt.Errorf("attach port: owner: must not be empty: %w", ErrInvalid)
	}
	if req.HostIfName == "" && req.HostIfIndex <= 0 {
		return PortPolicy{}, fmt.Errorf("attach port for %s: hostIfName or hostIfIndex is required: %w", req.Owner, ErrInvalid)
	}
	if len(req.HostIfName) > 15 {
		return PortPolicy{}, fmt.Errorf("attach port for %s: hostIfName %q longer than 15 bytes: %w", req.Owner, req.HostIfName, ErrInvalid)
	}
	pol := d.cfg.DefaultPolicy
	if req.Policy != nil {
		pol = *req.Policy
	}
	if err := pol.Validate(); err != nil {
		return PortPolicy{}, fmt.Errorf("attach port for %s: %w", req.Owner, err)
	}
	if len(req.PodMAC) != 6 || req.PodMAC[0]&1 != 0 || zero(req.PodMAC) {
		return PortPolicy{}, fmt.Errorf("attach port for %s: podMAC %q: want the pod's 6-byte unicast address (the switch pins it; pod ports are never learned from): %w", req.Owner, req.PodMAC.String(), ErrInvalid)
	}
	for i, a := range req.PodIPs {
		if !a.IsValid() || a.IsUnspecified() || a.IsMulticast() {
			return PortPolicy{}, fmt.Errorf("attach port for %s: podIPs[%d] %v: want a unicast address: %w", req.Owner, i, a, ErrInvalid)
		}
	}
	if !pol.AllowSpoofing && !identityOf(req).valid() {
		return PortPolicy{}, fmt.Errorf("attach port for %s: podIPs: anti-spoofing needs at least one of the pod's addresses (or a policy that allows spoofing): %w", req.Owner, ErrInvalid)
	}
	return pol, nil
}

func identityOf(req AttachRequest) podIdentity {
	id := podIdentity{mac: append(net.HardwareAddr(nil), req.PodMAC...), pod: req.Pod}
	for _, a := range req.PodIPs {
		id.ips = append(id.ips, a.Unmap())
	}
	return id
}

// resolveLink finds the host link by name and/or index.
func (d *Dataplane) resolveLink(name string, index int) (netlink.Link, error) {
	var l netlink.Link
	var err error
	if name != "" {
		l, err = d.nl.LinkByName(name)
	} else {
		l, err = d.nl.LinkByIndex(index)
	}
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil, fmt.Errorf("find link %q (index %d): %w", name, index, ErrNoPort)
		}
		return nil, fmt.Errorf("find link %q (index %d): %w", name, index, err)
	}
	if index > 0 && l.Attrs().Index != index {
		return nil, fmt.Errorf("link %s has index %d, not %d: %w", l.Attrs().Name, l.Attrs().Index, index, ErrInvalid)
	}
	return l, nil
}

// claim marks a link and an owner ("" for none) of switch s as being
// attached or detached; the returned release drops the claim and wakes its
// waiters. Close waits for every claim to be released before it tears
// down, RemoveSwitch for every claim on its switch. d.mu held, d.closed
// false, s published (or just unpublished by RemoveSwitch, which claims
// the links of the ports it takes down before it waits).
func (d *Dataplane) claimLocked(s *swState, ifname, owner string) (release func()) {
	ch := make(chan struct{})
	d.busyLink[ifname] = ch
	if owner != "" {
		d.busyOwner[owner] = ch
	}
	d.ops.Add(1)
	s.ops.Add(1)
	return func() {
		d.mu.Lock()
		delete(d.busyLink, ifname)
		if owner != "" && d.busyOwner[owner] == ch {
			delete(d.busyOwner, owner)
		}
		d.mu.Unlock()
		close(ch)
		s.ops.Done()
		d.ops.Done()
	}
}

// waitClaim waits, with d.mu released, until a claim is released or ctx
// ends; d.mu is held again on return.
func (d *Dataplane) waitClaim(ctx context.Context, ch chan struct{}) error {
	d.mu.Unlock()
	defer d.mu.Lock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// attach makes link a port of switch swName for owner, in four steps: claim the link and
// the owner (claimAttach; the same request in flight or done is an idempotent success),
// assemble the port around the link (assemblePort: socket, generic adapter, output queue),
// put it on the switch complete (plugPort: its queue and mirror in place, its MAC pinned,
// admitted to port security), and publish it. A failed step undoes the earlier ones.
func (d *Dataplane) attach(ctx context.Context, swName, owner string, link netlink.Link, pol PortPolicy, id podIdentity) (_ PortInfo, err error) {
	s, existing, release, err := d.claimAttach(ctx, swName, owner, link)
	if err != nil || existing != nil {
		return existing.orZero(), err
	}
	defer release()
	d.up.touch()

	cl := cleanup.Make(nil)
	defer func() {
		if err != nil {
			_ = cl.Clean()
		}
	}()
	ifname := link.Attrs().Name
	p := &Port{name: vale.JoinName(s.cfg.Name, ifname), hostIf: ifname, owner: owner, ifindex: link.Attrs().Index, sw: s, policy: pol, id: id}
	if err := d.assemblePort(p, &cl); err != nil {
		return PortInfo{}, fmt.Errorf("attach port %s: %w", p.name, err)
	}
	if err := d.plugPort(p, &cl); err != nil {
		return PortInfo{}, fmt.Errorf("attach port %s for %s: %w", p.name, owner, err)
	}
	if h := testAttachHook; h != nil {
		h(ifname)
	}
	info, err := d.publish(p, &cl)
	if err == nil {
		d.fastLater(p)
	}
	return info, err
}

// orZero is the PortInfo or, for nil, the zero one.
func (pi *PortInfo) orZero() PortInfo {
	if pi == nil {
		return PortInfo{}
	}
	return *pi
}

// claimAttach claims link and owner on switch swName for an attach: it returns the switch
// and the claim's release, or the port's info when the same attach is already done
// (waiting for one in flight first), or an error when the link or the owner has another
// port, the switch is unknown or the dataplane closed.
func (d *Dataplane) claimAttach(ctx context.Context, swName, owner string, link netlink.Link) (_ *swState, existing *PortInfo, release func(), err error) {
	ifname, ifindex := link.Attrs().Name, link.Attrs().Index
	d.mu.Lock()
	defer d.mu.Unlock()
	for {
		if d.closed {
			return nil, nil, nil, fmt.Errorf("attach port for %s: %w", owner, ErrClosed)
		}
		s, err := d.switchFor(swName)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("attach port for %s: %w", owner, err)
		}
		name := vale.JoinName(s.cfg.Name, ifname)
		if p, ok := d.byLink[ifname]; ok {
			if p.owner == owner && p.sw == s && p.ifindex == ifindex {
				pi := p.info(d) // idempotent
				return nil, &pi, nil, nil
			}
			return nil, nil, nil, fmt.Errorf("attach port %s for %s: already attached as %s for %s: %w", name, owner, p.name, p.owner, ErrBusy)
		}
		if p, ok := d.byOwner[owner]; ok {
			return nil, nil, nil, fmt.Errorf("attach port %s for %s: the owner already has port %s: %w", name, owner, p.name, ErrBusy)
		}
		ch, ok := d.busyLink[ifname]
		if !ok {
			ch, ok = d.busyOwner[owner]
		}
		if ok {
			// Being attached or detached: wait, then look again (the same
			// request in flight ends as an idempotent success).
			if err := d.waitClaim(ctx, ch); err != nil {
				return nil, nil, nil, fmt.Errorf("attach port %s for %s: wait for the link: %w", name, owner, err)
			}
			continue
		}
		if ifname == s.tapName {
			return nil, nil, nil, fmt.Errorf("attach port %s: that is the host port: %w", name, ErrInvalid)
		}
		if _, _, err := vale.ParseName(name); err != nil {
			return nil, nil, nil, fmt.Errorf("attach port for %s: %w", owner, err)
		}
		return s, nil, d.claimLocked(s, ifname, owner), nil
	}
}

// assemblePort opens p's link (in the dataplane's namespace) and builds what the switch
// will use: the generic adapter over the link's socket and the output queue that
// transmits on it.
func (d *Dataplane) assemblePort(p *Port, cl *cleanup.Cleanup) error {
	s := p.sw
	lo := d.cfg.Link
	lo.Backend = d.cfg.Backend
	lo.FastStart = !d.cfg.DirectOpen
	lo.Offload = s.cfg.Offload
	lo.Rings = d.rings.Load()
	if s.bufSize > 2048 && lo.XDP.FrameSize == 0 {
		lo.XDP.FrameSize = 4096
	}
	if lo.XDP.FrameCount == 0 {
		lo.XDP.FrameCount = DefaultXDPFrames
	}
	if err := d.inNS(func() error {
		if err := silenceHostEnd(p.ifindex); err != nil {
			return err
		}
		var err error
		p.opened, err = linkport.Open(p.hostIf, lo)
		if err == nil {
			if err = d.fastFilter(p); err != nil {
				_ = p.opened.Port.Close()
			}
		}
		return err
	}); err != nil {
		return fmt.Errorf("open link: %w", err)
	}
	p.up, _ = p.opened.Port.(*linkport.Upgradable)
	be := p.opened.Port
	var err error
	spin, yield := d.cfg.rxSpin()
	p.ga, err = netmap.NewGenericAdapter(p.hostIf, be, netmap.GenericConfig{
		Slots: uint32(d.cfg.RingSlots), BufSize: s.bufSize, Native: p.opened.Backend == linkport.XDP,
		RxSpin: spin, Yield: yield,
	})
	if err != nil {
		_ = p.opened.Port.Close()
		return err
	}
	p.ga.Get() // ours, dropped last: the output queue transmits on the backend
	cl.Add(func() error { p.ga.Put(); return nil })
	p.oq, err = newOutq(d.ifn, p.hostIf, be, s.queueShape(), p.policy, s.classes)
	if err != nil {
		return err
	}
	cl.Add(p.oq.close)
	return nil
}

// plugPort attaches p to its switch complete: its output queue is its Deliverer from the
// first frame on (so the switch never writes the adapter's TX rings and the queue is the
// link's only transmitter) and its mirror is in place; then its class is set, its MAC
// pinned as a static FDB entry, and it is admitted to port security. Until the admission
// the guard drops the port's frames, so nothing it sends is forwarded unchecked; the switch
// made it known-only at attach (vale.Config.KnownOnly), and the static entry keeps its MAC
// from any other port.
func (d *Dataplane) plugPort(p *Port, cl *cleanup.Cleanup) error {
	s, pol := p.sw, p.policy
	if err := s.checkMirror(p.hostIf, pol); err != nil {
		return err
	}
	if err := d.reg.AttachAdapterWith(p.name, p.ga, false, vale.PortOptions{Deliverer: p.oq, Mirror: pol.Mirror.vale()}); err != nil {
		return err
	}
	cl.Add(func() error { return d.reg.Detach(p.name) })
	vp, ok := s.sw.Port(p.hostIf)
	if !ok {
		return fmt.Errorf("gone after attach: %w", ErrNoPort)
	}
	p.vp = vp
	s.classes.set(vp.Index(), pol)
	cl.Add(func() error { s.classes.set(vp.Index(), PortPolicy{}); return nil })
	if err := s.sw.AddStatic(p.id.mac, p.hostIf); err != nil {
		if errors.Is(err, vale.ErrExists) {
			return fmt.Errorf("podMAC %s: %s: %w", p.id.mac, d.macHolder(s, p.id.mac), ErrBusy)
		}
		return fmt.Errorf("pin podMAC %s: %w", p.id.mac, err)
	}
	p.admit(pol)
	cl.Add(func() error { s.guard.set(vp.Index(), nil); return nil })
	return nil
}

// publish makes the assembled port p visible (Ports, DetachPort, the link watcher, the
// upgrader), unless the dataplane closed or the switch was removed meanwhile
// (RemoveSwitch waits for the attach's claim before it destroys the switch, so the undo
// still finds it).
func (d *Dataplane) publish(p *Port, cl *cleanup.Cleanup) (PortInfo, error) {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return PortInfo{}, fmt.Errorf("attach port %s for %s: %w", p.name, p.owner, ErrClosed)
	}
	if d.switches[p.sw.cfg.Name] != p.sw {
		d.mu.Unlock()
		return PortInfo{}, fmt.Errorf("attach port %s for %s: switch %q removed during the attach: %w", p.name, p.owner, p.sw.cfg.Name, ErrNoSwitch)
	}
	cl.Release()
	d.ports[p.name] = p
	d.byLink[p.hostIf] = p
	d.byOwner[p.owner] = p
	info := p.info(d)
	d.mu.Unlock()
	if p.up != nil {
		d.up.enqueue(p)
	}
	return info, nil
}

// testAttachHook, when set by a test, runs in attach after the port is
// set up and before it is published (without d.mu).
var testAttachHook func(ifname string)

// Adopt re-attaches a running pod's host link after an agent restart
// without touching the link: it checks that the link's alias records owner
// (as pkg/epair writes it) and attaches it like AttachPort.
func (d *Dataplane) Adopt(ctx context.Context, req AttachRequest) (PortInfo, error) {
	link, err := d.resolveLink(req.HostIfName, req.HostIfIndex)
	if err != nil {
		return PortInfo{}, fmt.Errorf("adopt port for %s: %w", req.Owner, err)
	}
	alias := link.Attrs().Alias
	if req.Owner == "" || !strings.HasPrefix(alias, epair.AliasPrefix) || strings.TrimPrefix(alias, epair.AliasPrefix) != req.Owner {
		return PortInfo{}, fmt.Errorf("adopt port %s for %q: alias %q: %w", link.Attrs().Name, req.Owner, alias, ErrNotOwned)
	}
	req.HostIfName, req.HostIfIndex = link.Attrs().Name, link.Attrs().Index
	pol, err := d.checkAttach(ctx, req)
	if err != nil {
		return PortInfo{}, err
	}
	return d.attach(ctx, req.Switch, req.Owner, link, pol, identityOf(req))
}

// DetachPort detaches a pod port by name ("<switch>:<hostIfName>") or by
// host link name: when it returns, the switch no longer forwards from or
// to the port and its output queue is gone. The socket then closes in the
// background (which removes the XDP program); until it has, a new attach
// of the link or of the owner waits for it, and Close waits for it.
// Detaching a port that is not attached succeeds. An attach or detach of
// the same link in flight is waited for first.
func (d *Dataplane) DetachPort(ctx context.Context, name string) error {
	ifname := name
	if _, pn, err := vale.ParseName(name); err == nil {
		ifname = pn
	}
	return d.detachWhere(ctx, "detach port "+name, ifname, func() (*Port, bool) {
		p, ok := d.ports[name]
		if !ok {
			p, ok = d.byLink[name]
		}
		return p, ok
	})
}

// DetachOwner detaches the port of an owner, if any.
func (d *Dataplane) DetachOwner(ctx context.Context, owner string) error {
	d.mu.Lock()
	for {
		if d.closed {
			d.mu.Unlock()
			return nil
		}
		ch, busy := d.busyOwner[owner]
		if !busy {
			break
		}
		if err := d.waitClaim(ctx, ch); err != nil {
			d.mu.Unlock()
			return fmt.Errorf("detach port of %s: wait for it: %w", owner, err)
		}
	}
	p, ok := d.byOwner[owner]
	d.mu.Unlock()
	if !ok {
		return nil
	}
	return d.detachWhere(ctx, "detach port of "+owner, p.hostIf, func() (*Port, bool) {
		p, ok := d.byOwner[owner]
		return p, ok
	})
}

// detachWhere waits for any claim on ifname, finds the port with find
// (d.mu held), unlinks and claims it, and tears it down without d.mu.
func (d *Dataplane) detachWhere(ctx context.Context, what, ifname string, find func() (*Port, bool)) error {
	d.mu.Lock()
	for {
		if d.closed {
			d.mu.Unlock()
			return nil
		}
		ch, busy := d.busyLink[ifname]
		if !busy {
			break
		}
		if err := d.waitClaim(ctx, ch); err != nil {
			d.mu.Unlock()
			return fmt.Errorf("%s: wait for the link: %w", what, err)
		}
	}
	p, ok := find()
	if !ok {
		d.mu.Unlock()
		return nil
	}
	if p.hostIf != ifname {
		// Found through another key (an owner): claim the port's link too.
		if ch, busy := d.busyLink[p.hostIf]; busy {
			if err := d.waitClaim(ctx, ch); err != nil {
				d.mu.Unlock()
				return fmt.Errorf("%s: wait for the link: %w", what, err)
			}
			d.mu.Unlock()
			return d.detachWhere(ctx, what, p.hostIf, find)
		}
	}
	d.unlinkLocked(p)
	release := d.claimLocked(p.sw, p.hostIf, p.owner)
	d.mu.Unlock()
	d.up.touch()
	nmErr := d.stopPodNetmap(p.hostIf)
	err := errors.Join(nmErr, p.unplug(d))
	// Closing the socket (detaching the XDP program, unmapping the rings:
	// RCU grace periods, ~20 ms) is all that is left, and nothing reaches
	// the port any more: it finishes in the background under the claim,
	// so a new attach of the link or owner waits for it, and Close waits
	// for it too.
	go func() {
		defer release()
		p.ga.Put()
	}()
	return err
}

func (d *Dataplane) unlinkLocked(p *Port) {
	delete(d.ports, p.name)
	delete(d.byLink, p.hostIf)
	delete(d.byOwner, p.owner)
}

// teardown undoes attach for an unlinked port: unplug, then close the
// backend (which releases the XDP program).
func (p *Port) teardown(d *Dataplane) error {
	err := p.unplug(d)
	p.ga.Put()
	return err
}

// unplug takes an unlinked port out of the switch: the switch stops
// forwarding from and to the port (waiting for passes in flight), then the
// queue stops and detaches (waiting for if_start in flight on the
// workers). Only the backend is left open (p.ga's last reference). It runs
// without d.mu, under the port's claim, so a new attach of the same link
// waits until the old socket is gone while other ports attach and detach
// in parallel. The port's priority class is cleared before its switch
// index is freed, so it never clobbers the class of a port that reuses it.
func (p *Port) unplug(d *Dataplane) error {
	// Out of the fast path first, so that the frames from and to the port go through
	// the switch while it still has the port.
	errs := []error{d.fastRemove(p)}
	p.sw.classes.set(p.vp.Index(), PortPolicy{})
	p.sw.guard.set(p.vp.Index(), nil)
	if err := d.reg.Detach(p.name); err != nil && !errors.Is(err, vale.ErrNoPort) {
		errs = append(errs, err)
	}
	errs = append(errs, p.oq.close())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("detach port %s: %w", p.name, err)
	}
	return nil
}

// SetPortPolicy changes a live port's output queue (length, discipline,
// rate, priority) without restarting it. Queued frames are kept (moved to
// a new discipline in order).
func (d *Dataplane) SetPortPolicy(name string, pol PortPolicy) error {
	if err := pol.Validate(); err != nil {
		return fmt.Errorf("set policy of %s: %w", name, err)
	}
	d.mu.Lock()
	p, ok := d.ports[name]
	if !ok {
		p, ok = d.byLink[name]
	}
	d.mu.Unlock()
	if !ok {
		return fmt.Errorf("set policy of %s: %w", name, ErrNoPort)
	}
	if !pol.AllowSpoofing && !p.id.valid() {
		return fmt.Errorf("set policy of %s: anti-spoofing needs the pod's addresses, and the port was attached without them (with a policy that allowed spoofing): %w", name, ErrInvalid)
	}
	if err := p.sw.checkMirror(p.hostIf, pol); err != nil {
		return fmt.Errorf("set policy of %s: %w", name, err)
	}
	d.mu.Lock()
	pn := d.podNetmaps[p.hostIf]
	d.mu.Unlock()
	if err := p.setPolicy(name, pol, pn); err != nil {
		return err
	}
	if err := d.fastSync(p); err != nil {
		return fmt.Errorf("set policy of %s: %w", name, err)
	}
	return nil
}

// setPolicy is SetPortPolicy's change of the port's queue, class, security, application
// ports and mirror, under p.polMu.
func (p *Port) setPolicy(name string, pol PortPolicy, pn *podNetmap) error {
	p.polMu.Lock()
	defer p.polMu.Unlock()
	if err := p.oq.setPolicy(p.policy, pol); err != nil {
		return fmt.Errorf("set policy of %s: %w", name, err)
	}
	p.sw.classes.set(p.vp.Index(), pol)
	p.admit(pol)
	if pn != nil {
		if err := pn.setPolicy(pol); err != nil {
			return fmt.Errorf("set policy of %s: application ports: %w", name, err)
		}
	}
	if err := p.sw.sw.SetMirror(p.hostIf, pol.Mirror.vale()); err != nil {
		return fmt.Errorf("set policy of %s: %w", name, err)
	}
	p.policy = pol
	return nil
}

// checkMirror refuses a mirror to the port itself or to the host port.
func (s *swState) checkMirror(ifname string, pol PortPolicy) error {
	if m := pol.Mirror; m.on() && (m.Monitor == ifname || m.Monitor == s.tapName) {
		return fmt.Errorf("mirror monitor %q: the port itself or the host port: %w", m.Monitor, ErrInvalid)
	}
	return nil
}

// admit (re)installs the port's security for pol in the switch's lookup
// (it takes effect from the next batch).
func (p *Port) admit(pol PortPolicy) {
	p.sw.guard.set(p.vp.Index(), newPodSec(p.id, pol, &p.refused))
}

// macHolder names the port whose static FDB entry is mac, for an error.
func (d *Dataplane) macHolder(s *swState, mac net.HardwareAddr) string {
	ents, err := d.FDB(s.cfg.Name)
	if err == nil {
		for _, e := range ents {
			if e.Static && bytes.Equal(e.MAC, mac) {
				return "the address of port " + e.Port
			}
		}
	}
	return "the address of another port"
}

// IPv4 per-interface settings (linux/ip.h's IPV4_DEVCONF_*, and IFLA_INET_CONF).
const (
	iflaInetConf      = 1
	devconfForwarding = 1
	devconfArpIgnore  = 19
)

// silenceHostEnd keeps the node's IPv4 stack out of a pod's host link: the switch owns what
// the pod sends, but until a FastStart port moves to AF_XDP (and for any frame XDP passes)
// the pod's frames also reach the stack on the host end. There the kernel would answer the
// pod's ARP for its gateway with the host end's own MAC (it answers for any of its addresses
// on any interface): the pod then sends past the switch, and loses its gateway once the port
// is on AF_XDP. It would also forward the pod's packets itself. arp_ignore 8 (no ARP
// replies) and forwarding 0 (nothing forwarded from the link) stop both. They are set over
// netlink (RTM_SETLINK, IFLA_AF_SPEC/AF_INET/IFLA_INET_CONF), which CAP_NET_ADMIN allows:
// in a container /proc/sys is read-only. (IPv6 needs nothing: the kernel answers a
// neighbour solicitation only for an address of the receiving link.) It runs in the
// dataplane's namespace.
func silenceHostEnd(ifindex int) error {
	req := nl.NewNetlinkRequest(unix.RTM_SETLINK, unix.NLM_F_ACK)
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(ifindex)
	req.AddData(msg)
	spec := nl.NewRtAttr(unix.IFLA_AF_SPEC, nil)
	conf := spec.AddRtAttr(unix.AF_INET, nil).AddRtAttr(iflaInetConf, nil)
	conf.AddRtAttr(devconfArpIgnore, nl.Uint32Attr(8))
	conf.AddRtAttr(devconfForwarding, nl.Uint32Attr(0))
	req.AddData(spec)
	if _, err := req.Execute(unix.NETLINK_ROUTE, 0); err != nil {
		return fmt.Errorf("silence host end (ifindex %d): set arp_ignore 8, forwarding 0: %w", ifindex, err)
	}
	return nil
}
