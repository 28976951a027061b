package dataplane

import (
	"errors"
	"fmt"
	"sync"

	"github.com/epair-cni/epair/pkg/hostport"
	"github.com/epair-cni/epair/pkg/linkport"
	"github.com/epair-cni/epair/pkg/netmap"
	"github.com/epair-cni/epair/pkg/netmap/afpacket"
	"github.com/epair-cni/epair/pkg/vale"
)

// OffloadConfig configures an OffloadSwitch.
type OffloadConfig struct {
	// Switch names the switch and its host port (Name, MTU, BatchSize,
	// MaxPorts, FDBSize, Aging and HostPort.Name/MAC/Gateways are used;
	// PodCIDRs routes and masquerading are not set up).
	Switch SwitchConfig
	// RingSlots is the slot count of each port's netmap rings (0:
	// DefaultRingSlots). A 64 KB super-frame takes 33 slots of 2 KiB.
	RingSlots int
	// Link sizes the AF_PACKET sockets (Backend, XDP and Offload are
	// ignored: offload ports are AF_PACKET with PACKET_VNET_HDR).
	Link linkport.Options
}

// OffloadPortStats are the counters of one offload port.
type OffloadPortStats struct {
	Name string
	// RxChains and TxChains count frames longer than one netmap buffer
	// (super-frames) the port received from and sent to its link.
	RxChains, TxChains uint64
	// TxDropped counts frames the adapter dropped (too long).
	TxDropped uint64
	// KernelDrops counts frames the kernel dropped because the socket's
	// receive ring was full (PACKET_STATISTICS; 0 for the host port).
	KernelDrops uint64
}

// OffloadSwitch is the opt-in offload dataplane: one VALE switch whose
// ports all carry the 10-byte virtio-net header (vale.Config.VnetHdrLen),
// pod links opened as AF_PACKET + PACKET_VNET_HDR (linkport Offload), and a
// TAP host port with IFF_VNET_HDR. The pods keep TSO and checksum offload
// on (pkg/epair KeepTxChecksum): their 64 KB TCP super-frames and partial
// checksums cross the switch as NS_MOREFRAG slot chains and are segmented or
// checksummed by the kernel only where a real device needs it.
//
// It is separate from Dataplane because the per-port ifcore output queues
// (policies, rate limits) hold one buffer per frame and are sized for MTU
// frames; ports here are delivered to by the switch directly (no output
// queue, no PortPolicy). It works in the calling thread's network
// namespace; Close detaches every port and removes the TAP.
type OffloadSwitch struct {
	cfg   OffloadConfig
	nm    *netmap.Netmap
	reg   *vale.Registry
	mu    sync.Mutex
	ports map[string]*netmap.GenericAdapter // by link (or TAP) name
	tap   string
	done  bool
}

// NewOffloadSwitch creates the switch and its offload host port.
func NewOffloadSwitch(cfg OffloadConfig) (_ *OffloadSwitch, err error) {
	if cfg.RingSlots == 0 {
		cfg.RingSlots = DefaultRingSlots
	}
	if cfg.RingSlots < 64 || cfg.RingSlots > 8192 || cfg.RingSlots&(cfg.RingSlots-1) != 0 {
		return nil, fmt.Errorf("create offload switch: ring slots %d: want a power of two in [64, 8192]: %w", cfg.RingSlots, ErrInvalid)
	}
	sc := &cfg.Switch
	if err := sc.Validate(); err != nil {
		return nil, fmt.Errorf("create offload switch: %w", err)
	}
	vc, err := sc.valeConfig()
	if err != nil {
		return nil, fmt.Errorf("create offload switch %s: %w", sc.Name, err)
	}
	vc.VnetHdrLen = linkport.OffloadHdrLen
	vc.MaxFrame = vale.MaxFrameHi
	o := &OffloadSwitch{cfg: cfg, nm: netmap.New(netmap.Config{}), ports: map[string]*netmap.GenericAdapter{}}
	if o.reg, err = vale.New(o.nm, vale.DefaultOptions()); err != nil {
		return nil, fmt.Errorf("create offload switch %s: %w", sc.Name, err)
	}
	defer func() {
		if err != nil {
			_ = o.Close()
		}
	}()
	if _, err := o.reg.CreateSwitch(sc.Name, vc); err != nil {
		return nil, fmt.Errorf("create offload switch %s: %w", sc.Name, err)
	}
	o.tap = sc.HostPort.tapName(sc.Name)
	tap, err := hostport.Open(hostport.Config{
		Name: o.tap, MTU: sc.mtu(), MAC: sc.HostPort.MAC, Addrs: sc.HostPort.Gateways,
		TXQueueLen: 4096, VnetHdr: true,
	})
	if err != nil {
		return nil, fmt.Errorf("create offload switch %s: open host port: %w", sc.Name, err)
	}
	if err := o.attach(o.tap, tap); err != nil {
		return nil, fmt.Errorf("create offload switch %s: host port: %w", sc.Name, err)
	}
	return o, nil
}

// attach wraps be in a chain-mode generic adapter and attaches it; on
// error be is closed.
func (o *OffloadSwitch) attach(name string, be netmap.GenericBackend) error {
	ad, err := netmap.NewGenericAdapter(name, be, netmap.GenericConfig{Slots: uint32(o.cfg.RingSlots)})
	if err != nil {
		_ = be.Close()
		return err
	}
	if err := o.reg.AttachAdapter(vale.JoinName(o.cfg.Switch.Name, name), ad, false); err != nil {
		ad.Dtor()
		return err
	}
	o.ports[name] = ad
	return nil
}

// AttachLink opens the pod host link ifname as an offload port and
// attaches it.
func (o *OffloadSwitch) AttachLink(ifname string) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.done {
		return fmt.Errorf("attach %s to offload switch: %w", ifname, ErrClosed)
	}
	if _, ok := o.ports[ifname]; ok {
		return fmt.Errorf("attach %s to offload switch: already attached: %w", ifname, ErrBusy)
	}
	lo := o.cfg.Link
	lo.Backend, lo.Offload = linkport.Packet, true
	op, err := linkport.Open(ifname, lo)
	if err != nil {
		return fmt.Errorf("attach %s to offload switch: %w", ifname, err)
	}
	if err := o.attach(ifname, op.Port); err != nil {
		return fmt.Errorf("attach %s to offload switch: %w", ifname, err)
	}
	return nil
}

// DetachLink detaches the link's port and closes its socket.
func (o *OffloadSwitch) DetachLink(ifname string) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, ok := o.ports[ifname]; !ok || ifname == o.tap {
		return fmt.Errorf("detach %s from offload switch: %w", ifname, ErrNoPort)
	}
	delete(o.ports, ifname)
	if err := o.reg.Detach(vale.JoinName(o.cfg.Switch.Name, ifname)); err != nil {
		return fmt.Errorf("detach %s from offload switch: %w", ifname, err)
	}
	return nil
}

// Stats returns every port's counters (the host port's included).
func (o *OffloadSwitch) Stats() []OffloadPortStats {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make([]OffloadPortStats, 0, len(o.ports))
	for n, ad := range o.ports {
		st := OffloadPortStats{Name: n, RxChains: ad.RxChains.Load(), TxChains: ad.TxChains.Load(), TxDropped: ad.TxDropped.Load()}
		if s, ok := ad.Backend().(*afpacket.Socket); ok {
			if ks, err := s.KernelStats(); err == nil {
				st.KernelDrops = ks.Drops
			}
		}
		out = append(out, st)
	}
	return out
}

// Counters returns the switch's counters.
func (o *OffloadSwitch) Counters() (vale.Counters, error) {
	sw, err := o.reg.Switch(o.cfg.Switch.Name)
	if err != nil {
		return vale.Counters{}, fmt.Errorf("read offload switch counters: %w", err)
	}
	return sw.Counters(), nil
}

// Close detaches every port (closing the sockets and the TAP) and destroys
// the switch. It is idempotent.
func (o *OffloadSwitch) Close() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.done {
		return nil
	}
	o.done = true
	var errs []error
	for n := range o.ports {
		if err := o.reg.Detach(vale.JoinName(o.cfg.Switch.Name, n)); err != nil {
			errs = append(errs, err)
		}
	}
	clear(o.ports)
	if err := o.reg.DestroySwitch(o.cfg.Switch.Name); err != nil && !errors.Is(err, vale.ErrNoSwitch) {
		errs = append(errs, err)
	}
	if err := o.reg.Close(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
