package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"

	"github.com/epair-cni/epair/internal/dataplane"
	"github.com/epair-cni/epair/pkg/agentapi"
	"github.com/epair-cni/epair/pkg/linkport"
	"github.com/epair-cni/epair/pkg/vale"
)

// DataplaneConfig translates the agent's configuration into internal/dataplane's: one switch
// per configured switch, whose TAP host port carries every range's gateway (with the
// range's prefix length) and routes its subnet.
func DataplaneConfig(c *Config) (dataplane.Config, error) {
	dc := dataplane.DefaultConfig()
	b, err := linkport.ParseBackend(c.Backend)
	if err != nil {
		return dc, fmt.Errorf("dataplane config: backend: %w", err)
	}
	dc.Backend = b
	dc.DirectOpen = c.DirectOpen
	dc.Masquerade = c.Masquerade
	dc.Link.XDP.FrameCount = uint32(c.XDPFrames)
	if dc.Link.XDP.FrameCount == 0 {
		dc.Link.XDP.FrameCount = DefaultXDPFrames
	}
	dc.RingSlots = c.RingSlots
	if dc.RingSlots == 0 {
		dc.RingSlots = DefaultRingSlots
	}
	for i, s := range c.Switches {
		sc := dataplane.SwitchConfig{Name: s.Name, MTU: s.MTU, Offload: s.Offload}
		sc.HostPort.Name = s.HostPort
		for _, r := range c.switchRanges(i) {
			if r.Gateway.IsValid() {
				sc.HostPort.Gateways = append(sc.HostPort.Gateways, netipPrefix(r.Gateway, r.Subnet.Bits()))
			}
			sc.HostPort.PodCIDRs = append(sc.HostPort.PodCIDRs, r.Subnet)
		}
		dc.Switches = append(dc.Switches, sc)
	}
	return dc, nil
}

// NewDataplane builds internal/dataplane for c in the calling thread's network namespace;
// it is RunOptions.NewDataplane of the standalone agent.
func NewDataplane(c *Config, log *slog.Logger) (Dataplane, error) {
	dc, err := DataplaneConfig(c)
	if err != nil {
		return nil, err
	}
	d, err := dataplane.New(dc)
	if err != nil {
		return nil, fmt.Errorf("start dataplane: %w", err)
	}
	return &realDataplane{d: d}, nil
}

// realDataplane adapts *dataplane.Dataplane to Dataplane.
type realDataplane struct{ d *dataplane.Dataplane }

var _ Dataplane = (*realDataplane)(nil)

func (r *realDataplane) AttachPort(ctx context.Context, req PortRequest) (agentapi.PortInfo, error) {
	pi, err := r.d.AttachPort(ctx, dataplane.AttachRequest{Switch: req.Switch, Owner: req.Owner,
		HostIfName: req.HostIfName, HostIfIndex: req.HostIfIndex, PodMAC: podMAC(req.PodMAC), PodIPs: req.PodIPs})
	if err != nil {
		return agentapi.PortInfo{}, dpError(err)
	}
	return portInfo(pi), nil
}

func (r *realDataplane) AdoptPort(ctx context.Context, req PortRequest) (agentapi.PortInfo, error) {
	pi, err := r.d.Adopt(ctx, dataplane.AttachRequest{Switch: req.Switch, Owner: req.Owner,
		HostIfName: req.HostIfName, HostIfIndex: req.HostIfIndex, PodMAC: podMAC(req.PodMAC), PodIPs: req.PodIPs})
	if err != nil {
		return agentapi.PortInfo{}, dpError(err)
	}
	return portInfo(pi), nil
}

func (r *realDataplane) DetachPort(sw, hostIfName string) error {
	return r.d.DetachPort(context.Background(), vale.JoinName(sw, hostIfName))
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
	// Anti-spoofing drops are in the switch's no_destination count: report them as
	// "spoofed" instead (the total is unchanged).
	c := p.Counters
	spoofed := min(p.SpoofDrops, c.Drops[vale.DropNoDest])
	c.Drops[vale.DropNoDest] -= spoofed
	st := counters(c)
	if spoofed != 0 {
		if st.Drops == nil {
			st.Drops = map[string]uint64{}
		}
		st.Drops["spoofed"] = spoofed
		st.Dropped += spoofed
	}
	return agentapi.PortInfo{Name: p.Name, Kind: string(p.Kind), HostIfName: p.HostIfName, HostIfIndex: p.HostIfIndex,
		Backend: p.Backend, Owner: p.Owner, Active: p.Up, Stats: st}
}

func counters(c vale.Counters) agentapi.Counters {
	out := agentapi.Counters{InFrames: c.InFrames, InBytes: c.InBytes, OutFrames: c.OutFrames, OutBytes: c.OutBytes, Dropped: c.Dropped()}
	for i, n := range c.Drops {
		if n != 0 {
			if out.Drops == nil {
				out.Drops = map[string]uint64{}
			}
			out.Drops[vale.DropReason(i).String()] = n
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

// podMAC parses an attachment's recorded MAC (nil when empty or malformed: the port then
// has no identity, and a policy with antiSpoofing is refused for it).
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
