package linkport

import (
	"fmt"
	"syscall"

	"github.com/epair-cni/epair/pkg/netmap/afpacket"
	"github.com/epair-cni/epair/pkg/netmap/afxdp"
)

// KernelDropper is a Port that counts its kernel drops itself (an *Upgradable, over every
// socket it has had).
type KernelDropper interface {
	KernelDrops() (uint64, error)
}

// KernelDrops returns how many frames the kernel dropped on receive for p, since p was
// opened, before p's reader (the switch) could see them: the socket's receive ring or
// queue was full. They never reach the switch, so the switch's counters, captures and
// traces cannot show them. It reads the kernel's counters (one getsockopt, no allocation
// unless it fails), cheap enough for every port at every stats read, and never on the
// packet path. The counters are, per backend:
//
//   - AF_PACKET, with or without rings, with or without virtio-net headers
//     (PACKET_STATISTICS): tp_drops, the frames packet_rcv/tpacket_rcv dropped because
//     the receive buffer (SO_RCVBUF, ring-less) or the ring (no free block, TPACKET_V3)
//     was full, or a copy failed for lack of memory. tp_packets counts them too and is
//     not added; tp_freeze_q_cnt counts ring freezes, not frames.
//   - AF_XDP (XDP_STATISTICS): rx_dropped + rx_ring_full. rx_dropped counts the frames
//     the socket could not take for want of a buffer (the fill ring was empty, which in
//     copy mode, the only one veth offers, is the RX ring full by another name: its
//     frames are all queued there) or because they were larger than a UMEM frame;
//     rx_ring_full (the kernel's rx_queue_full) the frames for which the RX ring had no
//     free descriptor. The kernel counts each dropped frame in exactly one of the two.
//     rx_fill_ring_empty_descs is not added: every copy-mode drop for want of a buffer
//     is counted there as well as in rx_dropped (measured on Linux 6.18: both 2873
//     after 3001 frames into an unread socket), and in zero-copy mode it counts failed
//     buffer allocations of the driver, not frames. rx_invalid_descs and the TX
//     counters are not receive drops.
//   - An *Upgradable: the sum over every socket it has had (see Upgradable.KernelDrops).
//
// A port of another type returns an error wrapping EOPNOTSUPP.
func KernelDrops(p Port) (uint64, error) {
	switch s := p.(type) {
	case *afpacket.Socket:
		ks, err := s.KernelStats()
		return ks.Drops, err
	case *afxdp.Socket:
		ks, err := s.KernelStats()
		return xdpDrops(ks), err
	case KernelDropper:
		return s.KernelDrops()
	}
	return 0, fmt.Errorf("kernel drops of %s: %T keeps no kernel counters: %w", p.Name(), p, syscall.EOPNOTSUPP)
}

// xdpDrops is what an AF_XDP socket's statistics count as frames lost before the reader
// (see KernelDrops).
func xdpDrops(ks afxdp.KernelStats) uint64 { return ks.Rx_dropped + ks.Rx_ring_full }
