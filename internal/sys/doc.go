// Package sys holds the unsafe and golang.org/x/sys/unix helpers that the kernel-facing
// backends (pkg/netmap/afxdp, pkg/netmap/afpacket, pkg/hostport) share, so that `unsafe` lives
// in one small, reviewed place:
//
//   - typed setsockopt/getsockopt for the structures x/sys/unix has no wrapper for
//     (XDP_UMEM_REG, XDP_MMAP_OFFSETS, XDP_STATISTICS, PACKET_RX_RING/TX_RING with
//     tpacket_req3, PACKET_STATISTICS for TPACKET_V3);
//   - views of mmap'ed kernel memory: a *atomic.Uint32 at an offset (ring producer/consumer
//     indices shared with the kernel) and typed slices over descriptor arrays;
//   - PollFD, a non-blocking descriptor registered with the Go runtime poller, so that a port
//     waiting for frames parks its goroutine in the netpoller (epoll, edge-triggered) and an
//     idle port costs no CPU. Close wakes every waiter with os.ErrClosed.
//
// Nothing here allocates on a per-packet path.
package sys
