package afpacket

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/epair-cni/epair/internal/cleanup"
	"github.com/epair-cni/epair/internal/portcore"
	"github.com/epair-cni/epair/internal/sys"
	"golang.org/x/sys/unix"
)

// Config sizes a Socket. Zero fields take the defaults.
type Config struct {
	BlockSize     uint32        // receive block size, a power-of-two multiple of the page size; default 32 KiB
	BlockCount    uint32        // receive blocks; default 16
	RetireTimeout time.Duration // receive block retire timer, ≥ 1ms; default 1ms
	TXFrameSize   uint32        // transmit slot size (header + frame), power of two ≥ 2048; default 2048
	TXFrameCount  uint32        // transmit slots; default 128
	// TXRecheck bounds how long WaitTX parks before re-reading the transmit ring while
	// transmit is backlogged; default 2ms.
	TXRecheck time.Duration
	// VnetHdr turns on PACKET_VNET_HDR: every frame Receive returns and Transmit takes
	// starts with a VnetHdrLen-byte struct virtio_net_hdr carrying the GSO and checksum
	// offload state, and frames up to MaxVnetFrame bytes (64 KB GSO super-frames) cross
	// the socket whole. The socket then has no TPACKET_V3 rings: frames are received
	// with recvmsg(2) (or through VnetRxRing) into a receive buffer of
	// BlockSize×BlockCount bytes (defaults
	// VnetBlockSize×VnetBlockCount; BlockSize at least MinVnetBlockSize) and sent
	// with write(2) (the kernel's packet_snd, which honours the header), so
	// RetireTimeout and the TX* fields are unused. VnetHdr implies Ringless.
	VnetHdr bool
	// VnetRxRing, with VnetHdr, receives through a TPACKET_V2 ring of VnetRxSlots
	// slots of VnetRingSlotSize bytes (see vnetring.go): short frames and looks for
	// frames cost no system call; frames longer than a slot are taken whole from the
	// receive queue (PACKET_COPY_THRESH), in order. Setting the ring up waits for an
	// RCU grace period (10–40 ms on a busy node). Transmit is as with VnetHdr alone.
	VnetRxRing bool
	// VnetRxSlots is the ring's slot count with VnetRxRing, a power of two in
	// 16..4096; default VnetRingSlots.
	VnetRxSlots uint32
	// Ringless opens the socket without rings: frames are received with recvmsg(2)
	// (PACKET_AUXDATA gives back VLAN tags the kernel took out of the frame) and sent
	// with write(2), one system call per frame. Such a socket opens in well under a
	// millisecond, where setting up the rings costs two RCU grace periods (10–40 ms on
	// a busy node); it moves fewer frames per second than the rings. The receive
	// buffer is BlockSize×BlockCount bytes; RetireTimeout and TXFrameCount are unused;
	// FrameSize is the same as with rings.
	Ringless bool
}

// DefaultConfig is the per-port budget stated in the package documentation.
var DefaultConfig = Config{BlockSize: 32 << 10, BlockCount: 16, RetireTimeout: time.Millisecond, TXFrameSize: 2048, TXFrameCount: 128, TXRecheck: 2 * time.Millisecond}

const (
	// txDataOff is TPACKET3_HDRLEN - sizeof(struct sockaddr_ll): where the kernel reads a
	// transmit frame (tpacket_parse_header without PACKET_TX_HAS_OFF).
	txDataOff = 48
	// Offsets in struct tpacket_block_desc (version, offset_to_priv, then tpacket_hdr_v1).
	blkStatusOff   = 8
	blkNumPktsOff  = 12
	blkFirstPktOff = 16
	// blkHdrLen bounds the block descriptor (tpacket_block_desc with tpacket_hdr_v1).
	blkHdrLen = 48
	// tpacket3HdrLen is sizeof(struct tpacket3_hdr).
	tpacket3HdrLen = 48
)

func (c Config) withDefaults() (Config, error) {
	d := DefaultConfig
	if c.VnetHdr {
		d.BlockSize, d.BlockCount = VnetBlockSize, VnetBlockCount
	}
	if c.BlockSize == 0 {
		c.BlockSize = d.BlockSize
	}
	if c.BlockCount == 0 {
		c.BlockCount = d.BlockCount
	}
	if c.RetireTimeout == 0 {
		c.RetireTimeout = d.RetireTimeout
	}
	if c.TXFrameSize == 0 {
		c.TXFrameSize = d.TXFrameSize
	}
	if c.TXFrameCount == 0 {
		c.TXFrameCount = d.TXFrameCount
	}
	if c.TXRecheck == 0 {
		c.TXRecheck = d.TXRecheck
	}
	if c.VnetRxRing && c.VnetRxSlots == 0 {
		c.VnetRxSlots = VnetRingSlots
	}
	page := uint32(unix.Getpagesize())
	switch {
	case c.BlockSize < page || c.BlockSize > 4<<20 || bits.OnesCount32(c.BlockSize) != 1:
		return c, fmt.Errorf("check config: BlockSize %d must be a power of two in %d..%d: %w", c.BlockSize, page, 4<<20, ErrBadConfig)
	case c.BlockCount < 2 || c.BlockCount > 1<<16:
		return c, fmt.Errorf("check config: BlockCount %d must be in 2..%d: %w", c.BlockCount, 1<<16, ErrBadConfig)
	case c.RetireTimeout < time.Millisecond || c.RetireTimeout > time.Second:
		return c, fmt.Errorf("check config: RetireTimeout %v must be in 1ms..1s: %w", c.RetireTimeout, ErrBadConfig)
	case c.TXFrameSize < 2048 || c.TXFrameSize > page || bits.OnesCount32(c.TXFrameSize) != 1:
		return c, fmt.Errorf("check config: TXFrameSize %d must be a power of two in 2048..%d: %w", c.TXFrameSize, page, ErrBadConfig)
	case c.TXFrameCount < 2 || c.TXFrameCount > 1<<16 || (c.TXFrameCount*c.TXFrameSize)%page != 0:
		return c, fmt.Errorf("check config: TXFrameCount %d must be in 2..%d and fill whole pages: %w", c.TXFrameCount, 1<<16, ErrBadConfig)
	case c.VnetHdr && c.BlockSize < MinVnetBlockSize:
		return c, fmt.Errorf("check config: BlockSize %d is below %d, too small for a GSO super-frame with VnetHdr: %w", c.BlockSize, MinVnetBlockSize, ErrBadConfig)
	case c.VnetRxRing && !c.VnetHdr:
		return c, fmt.Errorf("check config: VnetRxRing needs VnetHdr: %w", ErrBadConfig)
	case c.VnetRxRing && (c.VnetRxSlots < 16 || c.VnetRxSlots > 4096 || bits.OnesCount32(c.VnetRxSlots) != 1):
		return c, fmt.Errorf("check config: VnetRxSlots %d must be a power of two in 16..4096: %w", c.VnetRxSlots, ErrBadConfig)
	case c.TXRecheck < 0:
		return c, fmt.Errorf("check config: TXRecheck %v is negative: %w", c.TXRecheck, ErrBadConfig)
	}
	if c.VnetHdr {
		c.Ringless = true
	}
	return c, nil
}

// MaxFrame is the FrameSize of a socket opened with c.
func (c Config) MaxFrame() (int, error) {
	c, err := c.withDefaults()
	if err != nil {
		return 0, err
	}
	if c.VnetHdr {
		return MaxVnetFrame, nil
	}
	return int(c.TXFrameSize) - txDataOff, nil
}

// Stats are the socket's counters.
type Stats struct {
	RxPackets, RxBytes uint64
	RxTruncated        uint64 // frames cut to the caller's buffer or the ring's snap length
	RxErrors           uint64 // receive blocks with an inconsistent layout (rest of block dropped)
	TxPackets, TxBytes uint64
	TxDropped          uint64 // frames refused: empty or larger than a transmit slot
	TxRejected         uint64 // slots the kernel returned with TP_STATUS_WRONG_FORMAT
}

// KernelStats are the kernel's PACKET_STATISTICS (cumulative here; the kernel resets on read).
type KernelStats struct {
	Packets, Drops, FreezeQueueCount uint64
}

// ErrBadConfig is wrapped (together with EINVAL) by every error about a rejected Config.
var ErrBadConfig = fmt.Errorf("bad config: %w", syscall.EINVAL)

// ErrClosed is returned by operations on a closed socket.
var ErrClosed = fmt.Errorf("afpacket socket closed: %w", syscall.EBADF)

// Socket is an AF_PACKET TPACKET_V3 socket bound to one interface. Its embedded Core
// provides Close, Name, WaitRX, WaitTX and the netmap.GenericBackend glue.
type Socket struct {
	portcore.Core
	ifname  string
	ifindex int
	pfd     *sys.PollFD
	mem     []byte

	// Receive side, owned by the receiving goroutine.
	rx        []byte // the receive ring (BlockCount blocks)
	blockSize uint32
	blocks    uint32
	blk       atomic.Uint32 // current block; written by Receive, read by the RX waiter
	pkt       uint32        // frames of the current block already consumed
	pktOff    uint32        // offset of the next frame within the block

	// Transmit side, owned by the transmitting goroutine.
	tx       []byte                   // the transmit ring
	ringless bool                     // no rings: RX by recvmsg(2), TX by write(2)
	vnet     bool                     // PACKET_VNET_HDR (implies ringless): frames carry a virtio_net_hdr
	hdrLen   int                      // VnetHdrLen with vnet, else 0
	rxCmsg   [64]byte                 // PACKET_AUXDATA control buffer (receiving goroutine, ring-less)
	txPoll   [1]unix.PollFd           // the TX waiter's poll(2) set (ring-less: no ring to look at)
	txIov    [maxTxFrags]unix.Iovec   // TxFrags' writev vector, transmitRingless' iovecs (transmitting goroutine)
	txMsgs   [txBatchMax]unix.Mmsghdr // transmitRingless' sendmmsg vector (transmitting goroutine)
	rxPoll   [1]unix.PollFd           // the RX waiter's poll(2) set (ring-less: no ring)
	rxIov    [maxTxFrags]unix.Iovec   // RxScatter's recvmsg vector (receiving goroutine)
	rxBIov   [rxBatchMax]unix.Iovec   // receiveVnet's iovecs, one per message (receiving goroutine)
	rxMsgs   [rxBatchMax]unix.Mmsghdr // receiveVnet's recvmmsg vector (receiving goroutine)
	// The offload receive ring (VnetRxRing; nil without): vcur is the current slot,
	// written by the receiving goroutine, read by the RX waiter.
	vring   []byte
	vslots  uint32
	vcur    atomic.Uint32
	txSlot  uint32 // slot size
	txSlots uint32
	txHead  uint32 // next slot to fill
	// txPending (slots handed to the kernel and not seen back) and txTail (the oldest of
	// them) are written by the transmitting goroutine and read by the TX waiter.
	txPending atomic.Uint32
	txTail    atomic.Uint32

	rxPackets, rxBytes, rxTrunc       atomic.Uint64
	rxErrors                          atomic.Uint64
	txPackets, txBytes, txDrop, txRej atomic.Uint64
	kmu                               sync.Mutex
	kstats                            KernelStats
	cfg                               Config // as opened, with the defaults
}

// Open creates a TPACKET_V3 AF_PACKET socket on ifname in the calling thread's namespace
// (TPACKET_V2 with VnetRxRing). On error nothing is left behind.
func Open(ifname string, cfg Config) (*Socket, error) {
	p, err := Prepare(cfg)
	if err != nil {
		return nil, fmt.Errorf("open afpacket on %s: %w", ifname, err)
	}
	return p.Bind(ifname)
}

// Prepared is a socket set up for its Config (options, rings, mappings) but bound to no
// interface yet: what waits in Open (a ring's RCU grace period) is done, and Bind only
// looks the interface up and hooks the socket into its receive path. It belongs to the
// network namespace it was prepared in. Bind or Close it exactly once.
type Prepared struct {
	s    *Socket
	undo func() error // closes the descriptor and unmaps, unless Bind handed it on
}

// Prepare creates an unbound socket for cfg in the calling thread's namespace. Created
// with protocol 0, it is hooked into no receive path until Bind. On error nothing is
// left behind.
func Prepare(cfg Config) (*Prepared, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	// Protocol 0 until bind: a socket created with ETH_P_ALL is hooked into every
	// interface's receive path at once, and bind would then unhook it again, waiting
	// for an RCU grace period; created with 0 it is hooked only by bind, on ifname.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("create socket: %w", err)
	}
	s := &Socket{ringless: cfg.Ringless, vnet: cfg.VnetHdr, cfg: cfg}
	if s.vnet {
		s.hdrLen = VnetHdrLen
	}
	s.pfd, err = sys.NewPollFD(fd, "afpacket")
	if err != nil {
		return nil, err
	}
	c := cleanup.Make(s.pfd.Close)
	defer c.Clean()
	version, versionName := unix.TPACKET_V3, "PACKET_VERSION=TPACKET_V3"
	if cfg.VnetRxRing {
		version, versionName = unix.TPACKET_V2, "PACKET_VERSION=TPACKET_V2"
	}
	for _, o := range []struct {
		opt, val int
		name     string
	}{
		{unix.PACKET_VERSION, version, versionName},
		{unix.PACKET_QDISC_BYPASS, 1, "PACKET_QDISC_BYPASS"},
		{unix.PACKET_IGNORE_OUTGOING, 1, "PACKET_IGNORE_OUTGOING"},
	} {
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, o.opt, o.val); err != nil {
			return nil, fmt.Errorf("set %s: %w", o.name, err)
		}
	}
	if cfg.VnetHdr {
		// Before the rings: the kernel refuses PACKET_VNET_HDR once they exist.
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1); err != nil {
			return nil, fmt.Errorf("set PACKET_VNET_HDR: %w", err)
		}
		// Room for a few super-frames in flight (write(2) blocks on the socket's send
		// buffer, not on ring slots); SO_SNDBUFFORCE needs CAP_NET_ADMIN, so fall back.
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, vnetSndBuf); err != nil {
			_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, vnetSndBuf)
		}
	}
	if cfg.Ringless {
		s.txPoll[0] = unix.PollFd{Fd: int32(fd), Events: unix.POLLOUT}
		if !cfg.VnetHdr {
			// VLAN tags the kernel moved out of the frame come back as PACKET_AUXDATA.
			if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_AUXDATA, 1); err != nil {
				return nil, fmt.Errorf("set PACKET_AUXDATA: %w", err)
			}
		}
	}
	rxReq := unix.TpacketReq3{
		Block_size: cfg.BlockSize, Block_nr: cfg.BlockCount, Frame_size: 2048,
		Frame_nr:       cfg.BlockSize / 2048 * cfg.BlockCount,
		Retire_blk_tov: uint32(cfg.RetireTimeout / time.Millisecond),
	}
	rxLen := 0
	if cfg.Ringless {
		// No receive ring: recvmsg(2) per frame into a receive buffer of the ring's size.
		rcv := int(min(uint64(cfg.BlockSize)*uint64(cfg.BlockCount), 1<<30))
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcv); err != nil {
			_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, rcv)
		}
		s.rxPoll[0] = unix.PollFd{Fd: int32(fd), Events: unix.POLLIN}
		if cfg.VnetRxRing {
			if err := s.setupVnetRing(fd, cfg.VnetRxSlots); err != nil {
				return nil, err
			}
			vr := s.vring
			c.Add(func() error { return unix.Munmap(vr) })
		}
	} else {
		if err := sys.SetTpacketReq3(fd, unix.PACKET_RX_RING, &rxReq); err != nil {
			return nil, fmt.Errorf("set up %d×%d-byte RX ring: %w", cfg.BlockCount, cfg.BlockSize, err)
		}
		rxLen = int(cfg.BlockSize * cfg.BlockCount)
	}
	page := uint32(unix.Getpagesize())
	txBlock := max(page, cfg.TXFrameSize)
	txReq := unix.TpacketReq3{
		Block_size: txBlock, Block_nr: cfg.TXFrameCount * cfg.TXFrameSize / txBlock,
		Frame_size: cfg.TXFrameSize, Frame_nr: cfg.TXFrameCount,
	}
	txLen := 0
	if !cfg.Ringless {
		if err := sys.SetTpacketReq3(fd, unix.PACKET_TX_RING, &txReq); err != nil {
			return nil, fmt.Errorf("set up %d-slot TX ring: %w", cfg.TXFrameCount, err)
		}
		txLen = int(cfg.TXFrameCount * cfg.TXFrameSize)
	}
	if rxLen+txLen > 0 {
		s.mem, err = unix.Mmap(fd, 0, rxLen+txLen, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
		if err != nil {
			return nil, fmt.Errorf("map rings: %w", err)
		}
		mem := s.mem
		c.Add(func() error { return unix.Munmap(mem) })
		s.rx, s.tx = s.mem[:rxLen:rxLen], s.mem[rxLen:]
	}
	s.blockSize, s.blocks = cfg.BlockSize, cfg.BlockCount
	s.txSlot, s.txSlots = cfg.TXFrameSize, cfg.TXFrameCount
	return &Prepared{s: s, undo: c.Release()}, nil
}

// Bind binds the prepared socket to ifname (looked up in the namespace it was prepared
// in) and returns it ready. p is used up either way: on error it is closed, and nothing
// is left behind.
func (p *Prepared) Bind(ifname string) (*Socket, error) {
	s, undo := p.s, p.undo
	if s == nil {
		return nil, fmt.Errorf("open afpacket on %s: prepared socket already used: %w", ifname, ErrClosed)
	}
	p.s, p.undo = nil, nil
	c := cleanup.Make(undo)
	defer c.Clean()
	fd := s.pfd.FD()
	ifindex, err := sys.IfIndex(fd, ifname)
	if err != nil {
		return nil, fmt.Errorf("open afpacket on %s: find interface: %w", ifname, err)
	}
	s.ifname, s.ifindex = ifname, ifindex
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifindex}); err != nil {
		return nil, fmt.Errorf("open afpacket on %s: bind: %w", ifname, err)
	}
	cfg := s.cfg
	pc := portcore.Config{
		Name: ifname, PFD: s.pfd, ErrClosed: ErrClosed, Undo: c.Release(),
		RxReady: s.blockReady, TxReady: s.txRoom,
		Kicked: true, Kick: s.kick, Recheck: cfg.TXRecheck, TxWaitWhat: "wait for TX slots",
	}
	if cfg.Ringless {
		pc.RxReady, pc.Kick = s.ringlessReadable, nil
	}
	if s.vring != nil {
		pc.RxReady = s.vringReady
	}
	s.Init(s, pc)
	return s, nil
}

// Close releases a prepared socket that was not bound; it is idempotent.
func (p *Prepared) Close() error {
	undo := p.undo
	p.s, p.undo = nil, nil
	if undo == nil {
		return nil
	}
	return undo()
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// Stats returns the socket's counters.
func (s *Socket) Stats() Stats {
	return Stats{
		RxPackets: s.rxPackets.Load(), RxBytes: s.rxBytes.Load(), RxTruncated: s.rxTrunc.Load(), RxErrors: s.rxErrors.Load(),
		TxPackets: s.txPackets.Load(), TxBytes: s.txBytes.Load(), TxDropped: s.txDrop.Load(), TxRejected: s.txRej.Load(),
	}
}

// KernelStats reads PACKET_STATISTICS and returns the totals since Open.
func (s *Socket) KernelStats() (KernelStats, error) {
	if err := s.Enter(); err != nil {
		return KernelStats{}, err
	}
	defer s.Exit()
	st, err := sys.TpacketStatsV3(s.pfd.FD())
	if err != nil {
		return KernelStats{}, fmt.Errorf("read packet statistics of %s: %w", s.ifname, err)
	}
	s.kmu.Lock()
	defer s.kmu.Unlock()
	s.kstats.Packets += uint64(st.Packets)
	s.kstats.Drops += uint64(st.Drops)
	s.kstats.FreezeQueueCount += uint64(st.Freeze_q_cnt)
	return s.kstats, nil
}

// ---- receive side ----

func (s *Socket) blockStatus(b uint32) *atomic.Uint32 {
	return sys.Uint32At(s.rx, uint64(b*s.blockSize)+blkStatusOff)
}

func (s *Socket) blockReady() bool {
	return s.blockStatus(s.blk.Load()).Load()&unix.TP_STATUS_USER != 0
}

// Receive copies up to len(bufs) received frames into bufs and their lengths into lens. It
// never blocks; 0 means no retired block is pending. A frame longer than its buffer is
// truncated and counted in RxTruncated.
func (s *Socket) Receive(bufs [][]byte, lens []int) (int, error) {
	if err := s.Enter(); err != nil {
		return 0, err
	}
	defer s.Exit()
	if s.ringless {
		return s.receiveRingless(bufs, lens)
	}
	want := min(len(bufs), len(lens))
	n := 0
	var bytes uint64
	for n < want {
		b := s.blk.Load()
		st := s.blockStatus(b)
		if st.Load()&unix.TP_STATUS_USER == 0 {
			break
		}
		base := b * s.blockSize
		blk := s.rx[base : base+s.blockSize]
		num := binary.NativeEndian.Uint32(blk[blkNumPktsOff:])
		if s.pkt == 0 {
			s.pktOff = binary.NativeEndian.Uint32(blk[blkFirstPktOff:])
		}
		for s.pkt < num && n < want {
			// The layout comes from the kernel; it is still checked, so that a
			// corrupt block costs a counted error, never a panic or a stray read.
			if uint64(s.pktOff)+tpacket3HdrLen > uint64(len(blk)) || s.pktOff < blkHdrLen {
				s.rxErrors.Add(1)
				s.pkt = num // drop the rest of the block
				break
			}
			h := sys.PointerAt[unix.Tpacket3Hdr](blk, uint64(s.pktOff))
			lens[n] = s.copyFrame(bufs[n], blk, h)
			bytes += uint64(lens[n])
			n++
			s.pkt++
			if s.pkt < num && h.Next_offset < tpacket3HdrLen {
				s.rxErrors.Add(1)
				s.pkt = num
				break
			}
			s.pktOff += h.Next_offset
		}
		if s.pkt == num {
			// Whole block consumed: give it back and move on.
			st.Store(unix.TP_STATUS_KERNEL)
			s.blk.Store((b + 1) % s.blocks)
			s.pkt, s.pktOff = 0, 0
		}
	}
	if n > 0 {
		s.rxPackets.Add(uint64(n))
		s.rxBytes.Add(bytes)
	}
	return n, nil
}

// copyFrame copies one frame, re-inserting a VLAN tag the kernel moved to tp_vlan_tci.
func (s *Socket) copyFrame(dst, blk []byte, h *unix.Tpacket3Hdr) int {
	start := s.pktOff + uint32(h.Mac)
	if uint64(start)+uint64(h.Snaplen) > uint64(len(blk)) {
		s.rxTrunc.Add(1)
		return 0
	}
	data := blk[start : start+h.Snaplen]
	if h.Snaplen < h.Len {
		s.rxTrunc.Add(1)
	}
	if h.Status&unix.TP_STATUS_VLAN_VALID == 0 || len(data) < 12 {
		m := copy(dst, data)
		if m < len(data) {
			s.rxTrunc.Add(1)
		}
		return m
	}
	tpid := uint16(unix.ETH_P_8021Q)
	if h.Status&unix.TP_STATUS_VLAN_TPID_VALID != 0 && h.Hv1.Vlan_tpid != 0 {
		tpid = h.Hv1.Vlan_tpid
	}
	if len(dst) < len(data)+4 {
		s.rxTrunc.Add(1)
		return copy(dst, data)
	}
	copy(dst, data[:12])
	binary.BigEndian.PutUint16(dst[12:], tpid)
	binary.BigEndian.PutUint16(dst[14:], uint16(h.Hv1.Vlan_tci))
	return 16 + copy(dst[16:], data[12:])
}

// ---- transmit side ----

func (s *Socket) slotStatus(i uint32) *atomic.Uint32 {
	// tp_status is at offset 20 of tpacket3_hdr.
	return sys.Uint32At(s.tx, uint64(i*s.txSlot)+20)
}

// slotBusy reports whether the kernel still owns slot i.
func (s *Socket) slotBusy(i uint32) bool {
	st := s.slotStatus(i).Load()
	return st == unix.TP_STATUS_SEND_REQUEST || st&unix.TP_STATUS_SENDING != 0
}

// txRoom reports (reading atomics only) whether a slot is free or about to be reaped.
func (s *Socket) txRoom() bool {
	if s.ringless {
		return s.ringlessWritable()
	}
	p := s.txPending.Load()
	return p < s.txSlots || !s.slotBusy(s.txTail.Load())
}

// reap walks the slots handed to the kernel, oldest first, and frees those it has finished.
func (s *Socket) reap() uint32 {
	var n uint32
	tail, pending := s.txTail.Load(), s.txPending.Load()
	for pending > 0 && !s.slotBusy(tail) {
		if s.slotStatus(tail).Load()&unix.TP_STATUS_WRONG_FORMAT != 0 {
			s.txRej.Add(1)
			s.slotStatus(tail).Store(unix.TP_STATUS_AVAILABLE)
		}
		tail = (tail + 1) % s.txSlots
		pending--
		n++
	}
	if n > 0 {
		s.txTail.Store(tail)
		s.txPending.Add(^(n - 1))
	}
	return n
}

// Transmit copies frames into free transmit slots and kicks the kernel once. It never blocks
// and returns how many frames from the head of frames it consumed (queued, or dropped and
// counted in TxDropped when empty or larger than a slot). Fewer than len(frames) means every
// slot is in flight: call WaitTX.
func (s *Socket) Transmit(frames [][]byte) (int, error) {
	if err := s.Enter(); err != nil {
		return 0, err
	}
	defer s.Exit()
	if s.ringless {
		return s.transmitRingless(frames), nil
	}
	if s.txSlots-s.txPending.Load() < uint32(len(frames)) {
		s.reap()
	}
	pending := s.txPending.Load()
	maxData := int(s.txSlot) - txDataOff
	var consumed, queued int
	var bytes uint64
	for _, f := range frames {
		if len(f) == 0 || len(f) > maxData {
			s.txDrop.Add(1)
			consumed++
			continue
		}
		if pending == s.txSlots {
			break
		}
		off := s.txHead * s.txSlot
		slot := s.tx[off : off+s.txSlot]
		h := sys.PointerAt[unix.Tpacket3Hdr](slot, 0)
		h.Next_offset = 0
		h.Len = uint32(len(f))
		h.Snaplen = uint32(len(f))
		copy(slot[txDataOff:], f)
		s.slotStatus(s.txHead).Store(unix.TP_STATUS_SEND_REQUEST)
		s.txHead = (s.txHead + 1) % s.txSlots
		pending++
		bytes += uint64(len(f))
		queued++
		consumed++
	}
	if queued == 0 {
		return consumed, nil
	}
	s.txPending.Add(uint32(queued))
	s.txPackets.Add(uint64(queued))
	s.txBytes.Add(bytes)
	return consumed, s.kick()
}

func (s *Socket) kick() error {
	err := unix.Sendto(s.pfd.FD(), nil, unix.MSG_DONTWAIT, nil)
	switch {
	case err == nil, errors.Is(err, unix.EAGAIN), errors.Is(err, unix.ENOBUFS):
		return nil
	default:
		return fmt.Errorf("kick TX of %s: %w", s.ifname, err)
	}
}

// TXPending reports how many transmit slots are in flight.
func (s *Socket) TXPending() int { return int(s.txPending.Load()) }

// AttachFilter attaches the eBPF socket filter progFD (SO_ATTACH_BPF, a
// BPF_PROG_TYPE_SOCKET_FILTER program) to the socket: the frames it returns 0 for
// never reach the socket (nor its ring), and the others are kept whole or cut to the
// length it returns. The socket holds its own reference to the program.
func (s *Socket) AttachFilter(progFD int) error {
	if err := unix.SetsockoptInt(s.pfd.FD(), unix.SOL_SOCKET, unix.SO_ATTACH_BPF, progFD); err != nil {
		return fmt.Errorf("af_packet %s: attach socket filter: %w", s.ifname, err)
	}
	return nil
}
