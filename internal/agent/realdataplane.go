package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/epair-cni/epair/internal/appport"
	"github.com/epair-cni/epair/internal/dataplane"
	"github.com/epair-cni/epair/internal/ipam"
	"github.com/epair-cni/epair/pkg/agentapi"
	"github.com/epair-cni/epair/pkg/epair"
	"github.com/epair-cni/epair/pkg/linkport"
	"github.com/epair-cni/epair/pkg/vale"
)

// DataplaneConfig translates the agent's configuration into internal/dataplane's: one switch
// per configured switch (dataplaneSwitch).
func DataplaneConfig(c *Config) (dataplane.Config, error) {
	dc := dataplane.DefaultConfig()
	nodeID, err := epair.NodeID(c.NodeID)
	if err != nil {
		return dc, fmt.Errorf("dataplane config: %w", err)
	}
	// Every switch is an offload switch: its pod links are AF_PACKET sockets with virtio-net
	// headers whatever the (deprecated) backend says.
	dc.Backend = linkport.Auto
	if c.Backend == "packet" {
		dc.Backend = linkport.Packet
	}
	dc.DirectOpen = c.DirectOpen
	dc.Masquerade = c.Masquerade
	dc.Link.XDP.FrameCount = uint32(c.XDPFrames)
	if dc.Link.XDP.FrameCount == 0 {
		dc.Link.XDP.FrameCount = DefaultXDPFrames
	}
	dc.RxSpin = time.Duration(c.RxSpin)
	dc.FastPath = c.FastPath == nil || *c.FastPath
	dc.RingSlots = c.RingSlots
	if dc.RingSlots == 0 {
		dc.RingSlots = DefaultRingSlots
	}
	for _, s := range c.Switches {
		sc, err := dataplaneSwitch(nodeID, s)
		if err != nil {
			return dc, fmt.Errorf("dataplane config: %w", err)
		}
		dc.Switches = append(dc.Switches, sc)
	}
	dc.PeerMode, dc.VXLANPort, dc.VXLANID = c.PeerMode, c.VXLANPort, c.VXLANID
	if dc.Peers, err = c.peers(); err != nil {
		return dc, fmt.Errorf("dataplane config: %w", err)
	}
	return dc, nil
}

// dataplaneSwitch is switch s for internal/dataplane: its VALE limits, and a TAP host port
// that carries every range's gateway (with the range's prefix length) and routes its
// subnet, with the node's stable gateway MAC.
func dataplaneSwitch(nodeID string, s SwitchConfig) (dataplane.SwitchConfig, error) {
	ranges, err := ipam.ParseRanges(s.Ranges)
	if err != nil {
		return dataplane.SwitchConfig{}, fmt.Errorf("switch %s: %w", s.Name, err)
	}
	sc := dataplane.SwitchConfig{Name: s.Name, MTU: s.MTU, Offload: true,
		BatchSize: s.BatchSize, MaxPorts: s.MaxPorts, FDBSize: s.FDBSize, Aging: time.Duration(s.FDBAging)}
	sc.HostPort.Name = s.HostPort
	sc.HostPort.MAC = epair.GatewayMAC(nodeID, s.Name)
	for _, r := range ranges {
		if r.Gateway.IsValid() {
			sc.HostPort.Gateways = append(sc.HostPort.Gateways, netipPrefix(r.Gateway, r.Subnet.Bits()))
		}
		sc.HostPort.PodCIDRs = append(sc.HostPort.PodCIDRs, r.Subnet)
	}
	return sc, nil
}

// NewDataplane builds internal/dataplane for c in the calling thread's network namespace;
// it is RunOptions.NewDataplane of the standalone agent.
func NewDataplane(c *Config, log *slog.Logger) (Dataplane, error) {
	dc, err := DataplaneConfig(c)
	if err != nil {
		return nil, err
	}
	dc.RingPoolError = func(err error) {
		log.Warn("pod ports will set their receive rings up in their ADDs", "err", err)
	}
	if c.FastPath == nil { // on where the kernel can
		dc.FastPathError = func(err error) {
			log.Warn("no kernel fast path: the frames between pods cross the switch", "err", err)
		}
	}
	d, err := dataplane.New(dc)
	if err != nil {
		return nil, fmt.Errorf("start dataplane: %w", err)
	}
	if c.NetmapSocket != "" {
		if _, err := d.ServeNetmap(c.NetmapSocket, appport.Options{Log: log.With("component", "netmap")}); err != nil {
			return nil, errors.Join(fmt.Errorf("start dataplane: %w", err), d.Close(dataplane.CloseOptions{}))
		}
		log.Info("serving netmap ports to applications", "socket", c.NetmapSocket)
	}
	rd, err := newRealDataplane(c, d)
	if rd != nil {
		rd.log = log
	}
	return rd, err
}

// realDataplane adapts *dataplane.Dataplane to Dataplane.
type realDataplane struct {
	d      *dataplane.Dataplane
	nodeID string
	log    *slog.Logger
}

func newRealDataplane(c *Config, d *dataplane.Dataplane) (*realDataplane, error) {
	id, err := epair.NodeID(c.NodeID)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("start dataplane: %w", err), d.Close(dataplane.CloseOptions{}))
	}
	return &realDataplane{d: d, nodeID: id, log: slog.New(slog.DiscardHandler)}, nil
}

// switchPolicy is the policy of a pod port on switch s that no other policy applies to:
// the output queue's defaults, with the switch's port security.
func switchPolicy(s *SwitchConfig) dataplane.PortPolicy {
	pol := dataplane.PortPolicy{AllowSpoofing: !s.antiSpoofing()}
	if s.BroadcastRate != nil {
		pol.BroadcastRate = *s.BroadcastRate
	}
	if s.MulticastRate != nil {
		pol.MulticastRate = *s.MulticastRate
	}
	return pol
}

// request is the dataplane's attach request for req.
func request(req PortRequest) dataplane.AttachRequest {
	pol := req.Policy
	return dataplane.AttachRequest{Switch: req.Switch, Owner: req.Owner, HostIfName: req.HostIfName,
		HostIfIndex: req.HostIfIndex, PodMAC: podMAC(req.PodMAC), PodIPs: req.PodIPs, Policy: &pol, Pod: req.Pod}
}

// ServeAppPorts implements Dataplane.
func (r *realDataplane) ServeAppPorts(_, hostIfName, netns, ifName string, ports []dataplane.AppPort) error {
	return dpError(r.d.ServePodNetmap(hostIfName, netns, ifName, ports, appport.Options{Log: r.log.With("component", "netmap", "link", hostIfName)}))
}

// AnnounceGateways implements Dataplane.
func (r *realDataplane) AnnounceGateways() error { return r.d.AnnounceGateways() }

var _ Dataplane = (*realDataplane)(nil)

func (r *realDataplane) AttachPort(ctx context.Context, req PortRequest) (agentapi.PortInfo, error) {
	pi, err := r.d.AttachPort(ctx, request(req))
	if err != nil {
		return agentapi.PortInfo{}, dpError(err)
	}
	return portInfo(pi), nil
}

func (r *realDataplane) AdoptPort(ctx context.Context, req PortRequest) (agentapi.PortInfo, error) {
	pi, err := r.d.Adopt(ctx, request(req))
	if err != nil {
		return agentapi.PortInfo{}, dpError(err)
	}
	return portInfo(pi), nil
}

func (r *realDataplane) DetachPort(sw, hostIfName string) error {
	return r.d.DetachPort(context.Background(), vale.JoinName(sw, hostIfName))
}

func (r *realDataplane) SetPortPolicy(sw, hostIfName string, pol dataplane.PortPolicy) error {
	return r.d.SetPortPolicy(vale.JoinName(sw, hostIfName), pol)
}

func (r *realDataplane) AddSwitch(s SwitchConfig) error {
	sc, err := dataplaneSwitch(r.nodeID, s)
	if err != nil {
		return err
	}
	return r.d.AddSwitch(sc)
}

func (r *realDataplane) RemoveSwitch(ctx context.Context, name string) error {
	return r.d.RemoveSwitch(ctx, name)
}

func (r *realDataplane) Capture(port string, o dataplane.CaptureOptions) (*dataplane.Capture, error) {
	return r.d.Capture(port, o)
}

func (r *realDataplane) Trace(req dataplane.TraceRequest) (dataplane.TraceResult, error) {
	return r.d.Trace(req)
}

func (r *realDataplane) Peers() []dataplane.PeerState { return r.d.Peers() }

func (r *realDataplane) TunnelStats() (dataplane.TunnelStats, bool) { return r.d.TunnelStats() }

func (r *realDataplane) SetPeers(ctx context.Context, peers []dataplane.Peer) ([]dataplane.PeerState, error) {
	return r.d.SetPeers(ctx, peers)
}

func (r *realDataplane) Port(sw, hostIfName string) (agentapi.PortInfo, bool) {
	pi, err := r.d.Port(vale.JoinName(sw, hostIfName))
	if err != nil {
		return agentapi.PortInfo{}, false
	}
	return portInfo(pi), true
}

func (r *realDataplane) Switches(context.Context) (*agentapi.SwitchList, error) {
	out := &agentapi.SwitchList{Items: []agentapi.SwitchInfo{}}
	for _, s := range r.d.Switches() {
		si := agentapi.SwitchInfo{Name: s.Name, MTU: s.Config.MTU, Offload: s.Config.Offload, Stats: counters(s.Counters), Ports: []agentapi.PortInfo{}}
		for _, p := range s.Ports {
			api := portInfo(p)
			if p.Kind == dataplane.KindHost {
				api.Backend = "tap"
			}
			si.Ports = append(si.Ports, api)
		}
		out.Items = append(out.Items, si)
	}
	return out, nil
}

func (r *realDataplane) FDB(_ context.Context, sw string) (*agentapi.FDB, error) {
	ents, err := r.d.FDB(sw)
	if err != nil {
		return nil, dpError(err)
	}
	f := &agentapi.FDB{Switch: sw, Entries: make([]agentapi.FDBEntry, 0, len(ents))}
	for _, e := range ents {
		f.Entries = append(f.Entries, agentapi.FDBEntry{MAC: e.MAC.String(), Port: e.Port, Static: e.Static, AgeSeconds: e.Age.Seconds()})
	}
	return f, nil
}

func (r *realDataplane) Close(uninstall bool) error {
	return r.d.Close(dataplane.CloseOptions{Uninstall: uninstall})
}

func portInfo(p dataplane.PortInfo) agentapi.PortInfo {
	st := totals(p.Counters)
	st.Drops = dropsByReason(p.Counters, &p.Refused)
	if p.KernelDrops != 0 {
		// Lost before the switch (the port's socket was full): a reason of their own, and
		// part of the port's total like every other, so Dropped stays the sum of Drops.
		if st.Drops == nil {
			st.Drops = map[string]uint64{}
		}
		st.Drops[dataplane.ReasonSocketFull] = p.KernelDrops
		st.Dropped += p.KernelDrops
	}
	pi := agentapi.PortInfo{Name: p.Name, Kind: string(p.Kind), HostIfName: p.HostIfName, HostIfIndex: p.HostIfIndex,
		Backend: p.Backend, Owner: p.Owner, Pod: p.Pod, Active: p.Up, Stats: st, Captures: p.Captures}
	if f := p.FastPath; f.Source || f.Dest || f.InFrames != 0 || f.OutFrames != 0 || f.Error != "" {
		pi.FastPath = &agentapi.FastPathInfo{Source: f.Source, Dest: f.Dest, InFrames: f.InFrames, InBytes: f.InBytes, OutFrames: f.OutFrames, OutBytes: f.OutBytes, Error: f.Error}
	}
	if p.Kind == dataplane.KindPod {
		q := p.Queue
		pi.Queue = &agentapi.QueueInfo{Len: q.Len, MaxLen: q.MaxLen, TxFrames: q.TxFrames, TxBytes: q.TxBytes, Evicted: q.Evicted}
	}
	return pi
}

// counters are a switch's counters for the agent API.
func counters(c vale.Counters) agentapi.Counters {
	st := totals(c)
	st.Drops = dropsByReason(c, nil)
	return st
}

func totals(c vale.Counters) agentapi.Counters {
	return agentapi.Counters{InFrames: c.InFrames, InBytes: c.InBytes, OutFrames: c.OutFrames, OutBytes: c.OutBytes, Dropped: c.Dropped()}
}

// dropsByReason is c's drops by reason (nil when none). With a port's refusals, the
// switch's "refused" drops are split into port security's reasons (spoofed-mac,
// spoofed-ip, spoofed-arp-nd, spoofed-ethertype, storm); the sum stays the switch's total.
func dropsByReason(c vale.Counters, refused *dataplane.RefusedCounts) map[string]uint64 {
	var out map[string]uint64
	add := func(reason string, n uint64) {
		if n != 0 {
			if out == nil {
				out = map[string]uint64{}
			}
			out[reason] += n
		}
	}
	for i, n := range c.Drops {
		if refused == nil || vale.DropReason(i) != vale.DropRefused {
			add(vale.DropReason(i).String(), n)
		}
	}
	if refused != nil {
		for i, n := range refused {
			add(dataplane.Refusal(i).String(), n)
		}
	}
	return out
}

// dpError maps the dataplane's sentinels to agent API codes.
func dpError(err error) error {
	switch {
	case errors.Is(err, dataplane.ErrNoSwitch), errors.Is(err, dataplane.ErrNoPort):
		return &agentapi.Error{ErrorBody: agentapi.ErrorBody{Code: agentapi.CodeInvalidRequest, Field: "hostIfName", Message: "hostIfName: " + err.Error()}}
	case errors.Is(err, dataplane.ErrNotOwned):
		return &agentapi.Error{ErrorBody: agentapi.ErrorBody{Code: agentapi.CodeInvalidRequest, Field: "hostIfName", Message: "hostIfName: " + err.Error()}}
	case errors.Is(err, dataplane.ErrBusy):
		return agentapi.NewError(agentapi.CodeConflict, err.Error())
	case errors.Is(err, dataplane.ErrInvalid):
		return agentapi.NewError(agentapi.CodeInvalidRequest, err.Error())
	case errors.Is(err, dataplane.ErrClosed):
		return agentapi.NewError(agentapi.CodeNotReady, err.Error())
	}
	return err
}

// podMAC parses an attachment's recorded MAC (nil when empty or malformed: the dataplane
// then refuses the port, whose MAC it must pin).
func podMAC(s string) net.HardwareAddr {
	if s == "" {
		return nil
	}
	m, err := net.ParseMAC(s)
	if err != nil || len(m) != 6 {
		return nil
	}
	return m
}
