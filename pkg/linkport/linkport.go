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
	// Packet forces AF_PACKET.
	Packet
)

func (b Backend) String() string {
	switch b {
	case Auto:
		return "auto"
	case XDP:
		return "af_xdp"
	case Packet:
		return "af_packet"
	}
	return fmt.Sprintf("Backend(%d)", int(b))
}

// ParseBackend parses "auto", "af_xdp" (or "xdp") and "af_packet" (or "packet").
func ParseBackend(s string) (Backend, error) {
	switch s {
	case "", "auto":
		return Auto, nil
	case "af_xdp", "xdp", "afxdp":
		return XDP, nil
	case "af_packet", "packet", "afpacket":
		return Packet, nil
	}
	return Auto, fmt.Errorf("parse backend %q: want auto, af_xdp or af_packet: %w", s, syscall.EINVAL)
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
	// (FrameSize is afpacket.MaxVnetFrame). Auto then means AF_PACKET
	// (AF_XDP carries no offload metadata here); XDP is refused.
	Offload bool
}

// OffloadHdrLen is the per-frame header length of an offload port
// (struct virtio_net_hdr): what a VALE switch of offload ports needs as
// its vale.Config.VnetHdrLen.
const OffloadHdrLen = afpacket.VnetHdrLen

// Opened is the result of Open.
type Opened struct {
	Port    Port
	Backend Backend // XDP or Packet: what was actually opened
	// Fallback is why AF_XDP was not used when Backend was Auto (nil otherwise).
	Fallback error
}

// Open opens ifname (in the calling thread's network namespace) with the selected backend.
func Open(ifname string, opts Options) (Opened, error) {
	if opts.Offload {
		if opts.Backend == XDP {
			return Opened{}, fmt.Errorf("open port %s: offload mode needs af_packet, not af_xdp: %w", ifname, syscall.EINVAL)
		}
		if opts.Backend != Auto && opts.Backend != Packet {
			return Opened{}, fmt.Errorf("open port %s: unknown backend %d: %w", ifname, int(opts.Backend), syscall.EINVAL)
		}
		opts.Backend = Packet
		opts.Packet.VnetHdr = true
	}
	switch opts.Backend {
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
