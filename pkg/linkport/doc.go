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
// VnetHdrLen OffloadHdrLen, together with a hostport.Config{VnetHdr: true} TAP).
package linkport
