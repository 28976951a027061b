// Package linkport opens a Linux link as a frame port and is the one place that chooses the
// backend: AF_XDP (pkg/netmap/afxdp) when it can bind, AF_PACKET TPACKET_V3
// (pkg/netmap/afpacket) otherwise, or either one when forced.
//
// It exists as its own package because the choice needs both backends, and neither backend
// should import the other; pkg/netmap (the ring model) stays free of syscalls. Both backends
// implement Port, which is netmap.GenericBackend (what netmap.NewGenericAdapter wraps) plus
// the direct batch calls used by tests and tools.
//
// Auto-selection falls back when AF_XDP is unavailable for this link: kernel without
// AF_XDP/XDP, missing privileges for BPF, an interface with several receive queues, or a
// driver that refuses the XDP program. The reason is returned in Opened.Fallback so the agent
// can report it.
//
// Options.Offload opens the link in offload mode: AF_PACKET with PACKET_VNET_HDR, so frames
// carry a virtio_net_hdr and the pod's TSO/GRO super-frames and partial checksums cross whole
// (to be wrapped by a chain-mode netmap.GenericAdapter and attached to a VALE switch with
// VnetHdrLen OffloadHdrLen, together with a hostport.Config{VnetHdr: true} TAP). Such a
// socket receives through a TPACKET_V2 ring of small slots (afpacket.Config.VnetRxRing), so
// short frames and looks for frames cost no system call. Setting a ring up waits for an
// RCU grace period (10–40 ms on a busy node); a RingPool keeps sockets prepared ahead,
// ring and all, and Open binds one in microseconds (Options.Rings). Where the ring cannot
// be set up, the port opens without it (Backend Ringless, with the reason in Fallback).
//
// KernelDrops reads what the kernel dropped on a port's receive side before its reader (the
// switch) saw the frames, because the socket's ring or queue was full: AF_PACKET's tp_drops,
// AF_XDP's rx_dropped + rx_ring_full (not rx_fill_ring_empty_descs, which counts the same
// copy-mode drops a second time); an Upgradable sums every socket it has had and keeps a
// closed socket's count, so the total never goes backwards across its upgrade. One
// getsockopt per socket, no allocation: it is read per stats scrape, never per frame.
package linkport
