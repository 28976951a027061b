// Package afpacket is the Linux frame port of offload switches (Config.VnetHdr, below) and
// the fallback of plain ones: an AF_PACKET socket with an mmap'ed
// TPACKET_V3 receive ring and a transmit ring (PACKET_QDISC_BYPASS), offering the same batch
// calls as pkg/netmap/afxdp (Receive, Transmit, WaitRX, WaitTX, Close) and passing the same
// conformance suite (internal/testutil/netnsutil/porttest).
//
// # Model
//
// One mapping holds the receive ring followed by the transmit ring.
//
// Receive (TPACKET_V3) is a ring of blocks. The kernel fills the current block with frames
// and hands it to userspace by setting its block_status to TP_STATUS_USER when the block is
// full or when the retire timer (RetireTimeout) fires with frames in it; only then does it
// raise sk_data_ready. Receive walks the user-owned blocks in order, frame by frame (a cursor
// remembers where a partial batch stopped), and returns a block to the kernel by storing
// TP_STATUS_KERNEL once all its frames are copied out. block_status is the only shared word;
// it is read and written atomically. The V3 trade-off is latency: a lone frame waits up to
// RetireTimeout (1 ms by default) before the socket becomes readable; a busy port gets full
// blocks and one wake-up per block. VLAN tags that the kernel strips into tp_vlan_tci are put
// back into the frame.
//
// Transmit is a ring of fixed-size frames with a tpacket3_hdr each. Transmit copies a frame
// to offset TPACKET_ALIGN(sizeof(tpacket3_hdr)), sets tp_len, stores
// TP_STATUS_SEND_REQUEST, and kicks the kernel once per batch with send(MSG_DONTWAIT). With
// PACKET_QDISC_BYPASS the kernel hands frames straight to the driver. A slot is reusable once
// the kernel stores TP_STATUS_AVAILABLE (sent) or TP_STATUS_WRONG_FORMAT (refused, counted).
//
// The socket ignores its own outgoing traffic (PACKET_IGNORE_OUTGOING), so a port sees only
// frames arriving on the interface. Unlike AF_XDP, AF_PACKET does not steal frames: they also
// go up the host stack, which on an address-less epair host end drops them.
//
// # Offload mode (Config.VnetHdr)
//
// With PACKET_VNET_HDR every frame is preceded by a 10-byte struct virtio_net_hdr (VnetHdr)
// carrying the skb's GSO type and size and its partial-checksum offsets, so 64 KB TSO/GRO
// super-frames cross whole in both directions, and the kernel segments and checksums them
// only where a device needs it. The socket then has no TPACKET_V3 rings: a V3 block is
// handed over only when full or after its retire timer (1 ms at least), which delays every
// TCP ACK by up to a millisecond and throttled TCP to half the rate; a 64 KB frame also
// does not fit a page-sized TX slot. Frames are received with recvmsg(2) (RxScatter lets the
// kernel copy one frame straight into a netmap slot chain) or in batches of up to 16 with
// recvmmsg(2) (Receive, one buffer per frame), from a receive buffer of BlockSize×BlockCount
// bytes (8 MiB by default), and sent
// with write/writev(2) (TxFrags: straight from the chain's slots), waiting for room with
// poll(2). VLAN tags the kernel moved to skb metadata are not re-inserted in this mode.
// Peers of such a socket must speak the same header: see pkg/vale's Config.VnetHdrLen.
//
// With Config.VnetRxRing the socket receives through a TPACKET_V2 ring of small slots
// (VnetRingSlots of VnetRingSlotSize bytes by default, 256 KiB): TPACKET_V2 hands each
// frame over at once, and PACKET_VNET_HDR puts the virtio_net_hdr in the slot before the
// frame. A frame that fits its slot is received, and the port looked at for frames,
// without a system call; a longer one (a super-frame, a full-size frame) is cut in its
// slot and, by PACKET_COPY_THRESH, queued whole on the receive buffer under the same lock
// (TP_STATUS_COPY), so walking the slots in order and taking those frames from the queue
// (a run of them with one recvmmsg) keeps the order. A cut frame without the flag found
// the queue full and is dropped (RxTruncated); a frame that finds no free slot is the
// kernel's drop (KernelStats). Setting the ring up waits for an RCU grace period:
// Prepare does that ahead of the interface, Bind hooks the socket in later in
// microseconds (pkg/linkport's RingPool keeps prepared sockets).
//
// # Ring-less mode (Config.Ringless)
//
// The same socket without rings and without the header: recvmsg(2) per frame straight into
// the caller's buffer (PACKET_AUXDATA returns the VLAN tag the kernel took out of the frame,
// which Receive puts back) and write(2) per frame. It is slower than the rings (about two
// thirds of their rate in BenchmarkTransmitReceiveRingless) but opens in well under a
// millisecond: setting up a ring waits for an RCU grace period (the kernel's packet_set_ring
// calls synchronize_net), as does closing any AF_PACKET socket, which is 10–40 ms on a busy
// node. pkg/linkport starts pod ports on such a socket and moves them to AF_XDP in the
// background. In every mode the socket is created with protocol 0 and hooked into the
// receive path only by bind, on its interface: created with ETH_P_ALL it would see every
// interface's traffic until bind, and bind would unhook it with another grace period.
//
// Waiting is event-driven through the Go netpoller (see internal/sys.PollFD): WaitRX parks
// until a block is retired to userspace (with VnetRxRing: until a slot holds a frame); WaitTX until a transmitted skb is freed
// (sk_write_space), re-checking every TXRecheck only while transmit is backlogged.
//
// # Memory budget
//
// Defaults: receive 16 blocks of 32 KiB (512 KiB), transmit 128 frames of 2 KiB (256 KiB):
// 768 KiB per port, about 190 MiB for 250 ports. In offload mode with VnetRxRing: the
// 256 KiB receive ring (kernel memory, all of it mapped into the process at once, so it
// counts in its resident size: 64 MiB for 250 ports), and up to the receive buffer's 8 MiB
// while frames wait.
//
// Nothing on the per-packet path allocates, logs or formats.
package afpacket
