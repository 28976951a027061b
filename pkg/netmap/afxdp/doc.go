// Package afxdp is the project's own AF_XDP binding: one Socket per (interface, queue) that
// owns a UMEM, the four rings shared with the kernel, an XSKMAP and the XDP program that
// redirects the queue's frames into the socket.
//
// # Model
//
// The UMEM is one anonymous mapping of FrameCount frames of FrameSize bytes, registered with
// XDP_UMEM_REG. Frames [0, FrameCount/2) belong to receive, frames [FrameCount/2, FrameCount)
// to transmit; a frame is always in exactly one place:
//
//	receive:  fill ring → kernel → RX ring → caller (between PeekRX and ReleaseRX) → fill ring
//	transmit: txFree stack → caller copies a frame in → TX ring → kernel → completion ring → txFree
//
// The four rings are mmap'ed single-producer/single-consumer queues. For each ring, one index
// is written only by the kernel and the other only by this package; both are read and written
// with atomics once per batch, and the package keeps cached copies (cachedProd/cachedCons) so
// that a batch costs one atomic load of the other side's index at most, and one atomic store
// to publish. Fill and TX are producer rings (we produce), RX and completion are consumer
// rings. The receive side (RX + fill) and the transmit side (TX + completion + txFree) share
// no state, so one goroutine may receive while another transmits; each side is
// single-goroutine.
//
// The socket is bound in copy mode (XDP_COPY, the only mode veth offers) with
// XDP_USE_NEED_WAKEUP: the kernel is kicked (sendto for TX, recvfrom for fill) only when the
// ring's NEED_WAKEUP flag asks for it. The XDP program is built with cilium/ebpf's asm
// package at run time (no compiler): it looks up ctx->rx_queue_index in the XSKMAP with
// bpf_redirect_map and passes the frame to the stack when no socket is bound to that queue. It
// is attached through a BPF link (driver mode, falling back to generic mode), so closing the
// link detaches it; Close then closes the map, the program and the socket and unmaps the rings
// and the UMEM, leaving nothing behind.
//
// Waiting is event-driven: the socket descriptor is registered with the Go runtime netpoller
// (edge-triggered epoll). WaitRX parks until the kernel signals sk_data_ready for the RX ring;
// WaitTX parks until a transmitted skb is freed (sk_write_space, raised from the completion
// path), with a short bounded re-check period (TXRecheck) as a safety net while — and only
// while — transmit is backlogged. An idle socket costs no CPU.
//
// # Memory budget
//
// Defaults: FrameSize 2048, FrameCount 256 (128 receive, 128 transmit), rings of 128 entries.
// That is 512 KiB of pinned UMEM plus ~10 KiB of ring memory per port: 250 ports fit in about
// 128 MiB. Receive frames carry at most FrameSize-256 bytes (XDP_PACKET_HEADROOM), 1792 with
// the defaults, enough for a 1500-byte MTU; larger frames are dropped by the kernel and
// counted in KernelStats.RxDropped.
//
// # Queues
//
// A socket serves one receive queue. veth steers a frame to the receive queue numbered like
// the peer's transmit queue, so the epair cloner creates single-queue veths; Open refuses an
// interface with more than one receive queue (auto-selection then falls back to AF_PACKET).
//
// Nothing on the per-packet path allocates, logs or formats.
package afxdp
