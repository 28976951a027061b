package linkport

import (
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/epair-cni/epair/pkg/netmap"
	"github.com/epair-cni/epair/pkg/netmap/afpacket"
	"github.com/epair-cni/epair/pkg/netmap/afxdp"
)

// Backend names a frame-port implementation.
type Backend int

const (
	// Auto tries AF_XDP and falls back to AF_PACKET.
	Auto Backend = iota
	// XDP forces AF_XDP.
	XDP
	// Packet forces AF_PACKET (TPACKET_V3 rings).
	Packet
	// Ringless forces AF_PACKET without rings (afpacket.Config.Ringless): the
	// fastest to open, the slowest to run.
	Ringless
)

func (b Backend) String() string {
	switch b {
	case Auto:
		return "auto"
	case XDP:
		return "af_xdp"
	case Packet:
		return "af_packet"
	case Ringless:
		return "af_packet_ringless"
	}
	return fmt.Sprintf("Backend(%d)", int(b))
}

// ParseBackend parses "auto", "af_xdp" (or "xdp"), "af_packet" (or "packet") and
// "af_packet_ringless" (or "ringless").
func ParseBackend(s string) (Backend, error) {
	switch s {
	case "", "auto":
		return Auto, nil
	case "af_xdp", "xdp", "afxdp":
		return XDP, nil
	case "af_packet", "packet", "afpacket":
		return Packet, nil
	case "af_packet_ringless", "ringless":
		return Ringless, nil
	}
	return Auto, fmt.Errorf("parse backend %q: want auto, af_xdp, af_packet or af_packet_ringless: %w", s, syscall.EINVAL)
}

// Port is what both backends offer.
type Port interface {
	netmap.GenericBackend
	// Receive copies up to len(bufs) frames out; it never blocks.
	Receive(bufs [][]byte, lens []int) (int, error)
	// Transmit copies frames in and returns how many it consumed; it never blocks.
	Transmit(frames [][]byte) (int, error)
	// WaitRX and WaitTX park in the netpoller (timeout ≤ 0: no deadline).
	WaitRX(timeout time.Duration) error
	WaitTX(timeout time.Duration) error
	// Name is the interface name.
	Name() string
}

var (
	_ Port = (*afxdp.Socket)(nil)
	_ Port = (*afpacket.Socket)(nil)
)

// Options select and size the backend.
type Options struct {
	Backend Backend
	XDP     afxdp.Config
	Packet  afpacket.Config
	// Offload opens the port in offload mode: AF_PACKET with
	// PACKET_VNET_HDR (Packet.VnetHdr is set), so every frame carries a
	// virtio_net_hdr and TSO/GRO super-frames up to 64 KB cross whole
	// (FrameSize is afpacket.MaxVnetFrame). Auto and Packet then mean
	// AF_PACKET receiving through a TPACKET_V2 ring (Packet.VnetRxRing; Backend
	// Packet), or, where the ring cannot be set up, without one (Backend
	// Ringless, Fallback says why); Ringless forces the socket without the
	// ring; XDP is refused (AF_XDP carries no offload metadata here).
	Offload bool
	// Rings, with Offload, supplies sockets whose receive rings are set up
	// already (nil: Open sets the ring up itself).
	Rings *RingPool
	// FastStart, with Backend Auto or XDP, opens the port on a ring-less
	// AF_PACKET socket (well under a millisecond, where attaching AF_XDP costs
	// 10–40 ms, serialised under the kernel's RTNL lock) and returns it as an
	// *Upgradable, whose Upgrade moves it to AF_XDP without stopping traffic
	// (or leaves it ring-less where AF_XDP cannot serve the link). Ignored
	// with Packet (there is no loss- and duplicate-free handoff between two
	// packet sockets), Ringless and Offload.
	FastStart bool
}

// OffloadHdrLen is the per-frame header length of an offload port
// (struct virtio_net_hdr): what a VALE switch of offload ports needs as
// its vale.Config.VnetHdrLen.
const OffloadHdrLen = afpacket.VnetHdrLen

// Opened is the result of Open.
type Opened struct {
	Port Port
	// Backend is what was actually opened: XDP, Packet or Ringless (with
	// FastStart: Ringless, and Port is an *Upgradable).
	Backend Backend
	// Fallback is why AF_XDP was not used when Backend was Auto, or, with
	// Offload, why the receive ring was not (nil otherwise).
	Fallback error
}

// openOffload is Open with Options.Offload: an AF_PACKET socket with PACKET_VNET_HDR that
// receives through a TPACKET_V2 ring (Backend Packet), from opts.Rings when it has one;
// where the ring cannot be set up, one without (Backend Ringless, Fallback says why).
func openOffload(ifname string, opts Options) (Opened, error) {
	pc := opts.Packet
	pc.VnetHdr, pc.VnetRxRing = true, opts.Backend != Ringless
	if !pc.VnetRxRing {
		s, err := afpacket.Open(ifname, pc)
		if err != nil {
			return Opened{}, fmt.Errorf("open port %s: %w", ifname, err)
		}
		return Opened{Port: s, Backend: Ringless}, nil
	}
	if pr := opts.Rings.take(pc); pr != nil {
		s, err := pr.Bind(ifname)
		if err != nil {
			return Opened{}, fmt.Errorf("open port %s: %w", ifname, err)
		}
		return Opened{Port: s, Backend: Packet}, nil
	}
	s, rerr := afpacket.Open(ifname, pc)
	if rerr == nil {
		return Opened{Port: s, Backend: Packet}, nil
	}
	pc.VnetRxRing = false
	s, err := afpacket.Open(ifname, pc)
	if err != nil {
		return Opened{}, fmt.Errorf("open port %s: %w", ifname, err)
	}
	return Opened{Port: s, Backend: Ringless, Fallback: fmt.Errorf("offload receive ring: %w", rerr)}, nil
}

// Open opens ifname (in the calling thread's network namespace) with the selected backend.
func Open(ifname string, opts Options) (Opened, error) {
	if opts.Offload {
		if opts.Backend == XDP {
			return Opened{}, fmt.Errorf("open port %s: offload mode needs af_packet, not af_xdp: %w", ifname, syscall.EINVAL)
		}
		if opts.Backend != Auto && opts.Backend != Packet && opts.Backend != Ringless {
			return Opened{}, fmt.Errorf("open port %s: unknown backend %d: %w", ifname, int(opts.Backend), syscall.EINVAL)
		}
		return openOffload(ifname, opts)
	}
	if opts.FastStart && (opts.Backend == Auto || opts.Backend == XDP) {
		u, err := openFast(ifname, opts)
		if err != nil {
			return Opened{}, err
		}
		return Opened{Port: u, Backend: Ringless}, nil
	}
	switch opts.Backend {
	case Ringless:
		pc := opts.Packet
		pc.Ringless = true
		s, err := afpacket.Open(ifname, pc)
		if err != nil {
			return Opened{}, fmt.Errorf("open port %s: %w", ifname, err)
		}
		return Opened{Port: s, Backend: Ringless}, nil
	case XDP:
		s, err := afxdp.Open(ifname, opts.XDP)
		if err != nil {
			return Opened{}, fmt.Errorf("open port %s: %w", ifname, err)
		}
		return Opened{Port: s, Backend: XDP}, nil
	case Packet:
		s, err := afpacket.Open(ifname, opts.Packet)
		if err != nil {
			return Opened{}, fmt.Errorf("open port %s: %w", ifname, err)
		}
		return Opened{Port: s, Backend: Packet}, nil
	case Auto:
		s, xerr := afxdp.Open(ifname, opts.XDP)
		if xerr == nil {
			return Opened{Port: s, Backend: XDP}, nil
		}
		if errors.Is(xerr, afxdp.ErrBadConfig) { // a caller mistake, not a reason to fall back
			return Opened{}, fmt.Errorf("open port %s: %w", ifname, xerr)
		}
		p, perr := afpacket.Open(ifname, opts.Packet)
		if perr != nil {
			return Opened{}, fmt.Errorf("open port %s: AF_XDP: %w; AF_PACKET: %w", ifname, xerr, perr)
		}
		return Opened{Port: p, Backend: Packet, Fallback: xerr}, nil
	}
	return Opened{}, fmt.Errorf("open port %s: unknown backend %d: %w", ifname, int(opts.Backend), syscall.EINVAL)
}
