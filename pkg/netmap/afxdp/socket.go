package afxdp

import (
	"errors"
	"fmt"
	"math/bits"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/epair-cni/epair/internal/cleanup"
	"github.com/epair-cni/epair/internal/portcore"
	"github.com/epair-cni/epair/internal/sys"
	"golang.org/x/sys/unix"
)

// AttachMode selects how the XDP program is attached.
type AttachMode int

const (
	// AttachAuto tries driver (native) mode, then generic (skb) mode.
	AttachAuto AttachMode = iota
	// AttachDriver requires native XDP (veth supports it).
	AttachDriver
	// AttachGeneric uses generic (skb) XDP.
	AttachGeneric
)

// Config sizes and binds a Socket. Zero fields take the documented defaults.
type Config struct {
	QueueID    uint32     // receive queue to bind; default 0
	FrameSize  uint32     // 2048 or 4096; default 2048
	FrameCount uint32     // UMEM frames, a power of two ≥ 16; default 256 (half RX, half TX)
	RingSize   uint32     // entries in each of the four rings, a power of two; default FrameCount/2
	Attach     AttachMode // default AttachAuto
	// TXRecheck bounds how long WaitTX parks before re-reading the completion ring while
	// transmit is backlogged; default 2ms. It never applies to an idle socket.
	TXRecheck time.Duration
}

// DefaultConfig is the per-port budget stated in the package documentation.
var DefaultConfig = Config{FrameSize: 2048, FrameCount: 256, RingSize: 128, TXRecheck: 2 * time.Millisecond}

func (c Config) withDefaults() (Config, error) {
	if c.FrameSize == 0 {
		c.FrameSize = DefaultConfig.FrameSize
	}
	if c.FrameCount == 0 {
		c.FrameCount = DefaultConfig.FrameCount
	}
	if c.RingSize == 0 {
		c.RingSize = c.FrameCount / 2
	}
	if c.TXRecheck == 0 {
		c.TXRecheck = DefaultConfig.TXRecheck
	}
	switch {
	case c.FrameSize != 2048 && c.FrameSize != 4096:
		return c, fmt.Errorf("check config: FrameSize %d must be 2048 or 4096: %w", c.FrameSize, ErrBadConfig)
	case c.FrameCount < 16 || c.FrameCount > 1<<20 || bits.OnesCount32(c.FrameCount) != 1:
		return c, fmt.Errorf("check config: FrameCount %d must be a power of two in 16..%d: %w", c.FrameCount, 1<<20, ErrBadConfig)
	case c.RingSize < c.FrameCount/2 || c.RingSize > 1<<20 || bits.OnesCount32(c.RingSize) != 1:
		return c, fmt.Errorf("check config: RingSize %d must be a power of two ≥ FrameCount/2 (%d): %w", c.RingSize, c.FrameCount/2, ErrBadConfig)
	case c.Attach < AttachAuto || c.Attach > AttachGeneric:
		return c, fmt.Errorf("check config: unknown Attach mode %d: %w", c.Attach, ErrBadConfig)
	case c.TXRecheck < 0:
		return c, fmt.Errorf("check config: TXRecheck %v is negative: %w", c.TXRecheck, ErrBadConfig)
	}
	return c, nil
}

// MaxFrame is the FrameSize of a socket opened with c (the UMEM frame minus the XDP
// headroom).
func (c Config) MaxFrame() (int, error) {
	c, err := c.withDefaults()
	if err != nil {
		return 0, err
	}
	return int(c.FrameSize) - unix.XDP_PACKET_HEADROOM, nil
}

// Stats are the socket's counters. Rx/Tx count frames handed to/accepted from the caller.
type Stats struct {
	RxPackets, RxBytes uint64
	TxPackets, TxBytes uint64
	TxDropped          uint64 // frames refused because they do not fit a UMEM frame
	Wakeups            uint64 // kernel kicks (sendto/recvfrom) issued because of NEED_WAKEUP
}

// KernelStats are the kernel's XDP_STATISTICS for the socket.
type KernelStats = unix.XDPStatistics

// ErrBadConfig is wrapped (together with EINVAL) by every error about a rejected Config.
var ErrBadConfig = fmt.Errorf("bad config: %w", syscall.EINVAL)

// ErrClosed is returned by operations on a closed socket.
var ErrClosed = fmt.Errorf("afxdp socket closed: %w", syscall.EBADF)

// Socket is an AF_XDP socket bound to one queue of one interface, with its UMEM, rings and
// XDP redirect program. Its embedded Core provides Close, Name, WaitRX, WaitTX and the
// netmap.GenericBackend glue: Close wakes waiters with ErrClosed, waits for the calls in
// flight, detaches the XDP program, closes the map and program and unmaps the rings and
// UMEM (users of the zero-copy PeekRX/Frame/ReleaseRX calls must stop before it); WaitRX
// parks until the RX ring is non-empty; WaitTX kicks the kernel so that queued frames make
// progress and parks until a transmit frame is free again (or completions wait to be
// reaped).
type Socket struct {
	portcore.Core
	ifname    string
	ifindex   int
	queue     uint32
	frameSize uint32
	rxFrames  uint32 // frames [0, rxFrames) receive, [rxFrames, 2*rxFrames) transmit

	pfd    *sys.PollFD
	umem   []byte
	maps   [4][]byte // fill, completion, rx, tx mappings
	prog   *ebpf.Program
	xsks   *ebpf.Map
	xdp    link.Link
	progID ebpf.ProgramID
	mapID  ebpf.MapID

	// Receive side, owned by the receiving goroutine.
	fill   prodRing
	fillQ  []uint64
	rx     consRing
	rxQ    []unix.XDPDesc
	peeked uint32 // RX descriptors handed out by PeekRX and not yet released

	// Transmit side, owned by the transmitting goroutine.
	tx     prodRing
	txQ    []unix.XDPDesc
	comp   consRing
	compQ  []uint64
	txFree []uint64 // free transmit frame addresses (a stack)
	// txFreeN mirrors len(txFree) for the TX waiter, which may run on another goroutine
	// than Transmit and therefore reads only atomics.
	txFreeN atomic.Int32

	rxPackets, rxBytes atomic.Uint64
	txPackets, txBytes atomic.Uint64
	txDropped, wakeups atomic.Uint64
}

// Open creates an AF_XDP socket on queue cfg.QueueID of ifname in the calling thread's
// network namespace, registers its UMEM, maps the rings, binds in copy mode with
// need_wakeup, and attaches an XDP program redirecting that queue into it. On error nothing
// is left behind.
func Open(ifname string, cfg Config) (*Socket, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	fd, err := unix.Socket(unix.AF_XDP, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open afxdp on %s: create socket: %w", ifname, err)
	}
	ifindex, err := sys.IfIndex(-1, ifname) // AF_XDP sockets take no ioctls
	if err == nil {
		if n, qerr := rxQueues(ifname); qerr == nil && n > 1 {
			err = fmt.Errorf("it has %d receive queues, a socket serves one (create the veth with a single queue): %w", n, syscall.EOPNOTSUPP)
		}
	}
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("open afxdp on %s: %w", ifname, err)
	}
	s := &Socket{
		ifname: ifname, ifindex: ifindex, queue: cfg.QueueID, frameSize: cfg.FrameSize,
		rxFrames: cfg.FrameCount / 2,
	}
	s.pfd, err = sys.NewPollFD(fd, "afxdp:"+ifname)
	if err != nil {
		return nil, fmt.Errorf("open afxdp on %s: %w", ifname, err)
	}
	c := cleanup.Make(s.pfd.Close)
	defer c.Clean()

	umemLen := int(cfg.FrameCount) * int(cfg.FrameSize)
	s.umem, err = unix.Mmap(-1, 0, umemLen, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE)
	if err != nil {
		return nil, fmt.Errorf("open afxdp on %s: map %d-byte UMEM: %w", ifname, umemLen, err)
	}
	umem := s.umem
	c.Add(func() error { return unix.Munmap(umem) })
	reg := unix.XDPUmemReg{Addr: uint64(sys.Addr(s.umem)), Len: uint64(umemLen), Size: cfg.FrameSize}
	if err := sys.SetUmemReg(fd, &reg); err != nil {
		return nil, fmt.Errorf("open afxdp on %s: register UMEM: %w", ifname, err)
	}
	for _, o := range []struct {
		opt  int
		name string
	}{{unix.XDP_UMEM_FILL_RING, "fill"}, {unix.XDP_UMEM_COMPLETION_RING, "completion"}, {unix.XDP_RX_RING, "RX"}, {unix.XDP_TX_RING, "TX"}} {
		if err := unix.SetsockoptInt(fd, unix.SOL_XDP, o.opt, int(cfg.RingSize)); err != nil {
			return nil, fmt.Errorf("open afxdp on %s: size %s ring to %d: %w", ifname, o.name, cfg.RingSize, err)
		}
	}
	off, err := sys.MmapOffsets(fd)
	if err != nil {
		return nil, fmt.Errorf("open afxdp on %s: read ring offsets: %w", ifname, err)
	}
	n := cfg.RingSize
	mapRing := func(i int, name string, pgoff int64, ro unix.XDPRingOffset, entry uint64) error {
		size := int(ro.Desc + uint64(n)*entry)
		m, err := unix.Mmap(fd, pgoff, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
		if err != nil {
			return fmt.Errorf("open afxdp on %s: map %s ring: %w", ifname, name, err)
		}
		s.maps[i] = m
		c.Add(func() error { return unix.Munmap(m) })
		return nil
	}
	if err := mapRing(0, "fill", unix.XDP_UMEM_PGOFF_FILL_RING, off.Fr, 8); err != nil {
		return nil, err
	}
	if err := mapRing(1, "completion", unix.XDP_UMEM_PGOFF_COMPLETION_RING, off.Cr, 8); err != nil {
		return nil, err
	}
	if err := mapRing(2, "RX", unix.XDP_PGOFF_RX_RING, off.Rx, 16); err != nil {
		return nil, err
	}
	if err := mapRing(3, "TX", unix.XDP_PGOFF_TX_RING, off.Tx, 16); err != nil {
		return nil, err
	}
	s.fill = prodRing{producer: sys.Uint32At(s.maps[0], off.Fr.Producer), consumer: sys.Uint32At(s.maps[0], off.Fr.Consumer), flags: sys.Uint32At(s.maps[0], off.Fr.Flags), mask: n - 1, size: n}
	s.fillQ = sys.Uint64sAt(s.maps[0], off.Fr.Desc, n)
	s.comp = consRing{producer: sys.Uint32At(s.maps[1], off.Cr.Producer), consumer: sys.Uint32At(s.maps[1], off.Cr.Consumer), flags: sys.Uint32At(s.maps[1], off.Cr.Flags), mask: n - 1, size: n}
	s.compQ = sys.Uint64sAt(s.maps[1], off.Cr.Desc, n)
	s.rx = consRing{producer: sys.Uint32At(s.maps[2], off.Rx.Producer), consumer: sys.Uint32At(s.maps[2], off.Rx.Consumer), flags: sys.Uint32At(s.maps[2], off.Rx.Flags), mask: n - 1, size: n}
	s.rxQ = sys.DescsAt(s.maps[2], off.Rx.Desc, n)
	s.tx = prodRing{producer: sys.Uint32At(s.maps[3], off.Tx.Producer), consumer: sys.Uint32At(s.maps[3], off.Tx.Consumer), flags: sys.Uint32At(s.maps[3], off.Tx.Flags), mask: n - 1, size: n}
	s.txQ = sys.DescsAt(s.maps[3], off.Tx.Desc, n)
	s.fill.cachedCons = s.fill.consumer.Load() + n
	s.tx.cachedCons = s.tx.consumer.Load() + n

	// Hand every receive frame to the kernel before binding; transmit frames start free.
	for i := range s.rxFrames {
		s.fillQ[s.fill.cachedProd&s.fill.mask] = uint64(i) * uint64(s.frameSize)
		s.fill.cachedProd++
	}
	s.fill.publish()
	s.txFree = make([]uint64, 0, s.rxFrames)
	for i := range s.rxFrames {
		s.txFree = append(s.txFree, uint64(s.rxFrames+i)*uint64(s.frameSize))
	}

	sa := &unix.SockaddrXDP{Flags: unix.XDP_COPY | unix.XDP_USE_NEED_WAKEUP, Ifindex: uint32(ifindex), QueueID: cfg.QueueID}
	if err := bind(fd, sa); err != nil {
		return nil, fmt.Errorf("open afxdp on %s: bind queue %d in copy mode: %w", ifname, cfg.QueueID, err)
	}
	if err := s.attach(cfg, fd); err != nil {
		return nil, fmt.Errorf("open afxdp on %s: %w", ifname, err)
	}
	c.Add(s.detach)

	s.txFreeN.Store(int32(len(s.txFree)))
	// The readiness conditions read only atomics shared with the kernel or the other side.
	s.Init(s, portcore.Config{
		Name: ifname, PFD: s.pfd, ErrClosed: ErrClosed, Undo: c.Release(),
		RxReady: func() bool { return s.rx.producer.Load() != s.rx.consumer.Load() },
		TxReady: func() bool { return s.txFreeN.Load() > 0 || s.comp.producer.Load() != s.comp.consumer.Load() },
		Kicked:  true, Kick: s.kickTX, Recheck: cfg.TXRecheck, TxWaitWhat: "wait for TX completions",
	})
	return s, nil
}

// bind binds the socket, retrying EBUSY for a while: the kernel releases a closed socket's
// hold on the queue from a work item (xp_release_deferred), so reopening a port right after
// closing it can find the queue still busy.
func bind(fd int, sa *unix.SockaddrXDP) error {
	deadline := time.Now().Add(2 * time.Second)
	for {
		err := unix.Bind(fd, sa)
		if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// attach builds the XSKMAP and the redirect program and attaches it to the interface.
func (s *Socket) attach(cfg Config, fd int) error {
	m, err := ebpf.NewMap(&ebpf.MapSpec{
		Name: "epair_xsks", Type: ebpf.XSKMap, KeySize: 4, ValueSize: 4, MaxEntries: cfg.QueueID + 1,
	})
	if err != nil {
		return fmt.Errorf("create XSKMAP: %w", err)
	}
	if err := m.Put(cfg.QueueID, uint32(fd)); err != nil {
		m.Close()
		return fmt.Errorf("insert socket in XSKMAP at queue %d: %w", cfg.QueueID, err)
	}
	p, err := newRedirectProgram(m)
	if err != nil {
		m.Close()
		return err
	}
	modes := []link.XDPAttachFlags{link.XDPDriverMode, link.XDPGenericMode}
	switch cfg.Attach {
	case AttachDriver:
		modes = modes[:1]
	case AttachGeneric:
		modes = modes[1:]
	}
	var l link.Link
	for _, mode := range modes {
		l, err = link.AttachXDP(link.XDPOptions{Program: p, Interface: s.ifindex, Flags: mode})
		if err == nil {
			break
		}
	}
	if err != nil {
		p.Close()
		m.Close()
		return fmt.Errorf("attach XDP program: %w", err)
	}
	s.prog, s.xsks, s.xdp = p, m, l
	if info, err := p.Info(); err == nil {
		s.progID, _ = info.ID()
	}
	if info, err := m.Info(); err == nil {
		s.mapID, _ = info.ID()
	}
	return nil
}

func (s *Socket) detach() error {
	return errors.Join(s.xdp.Close(), s.prog.Close(), s.xsks.Close())
}

// Ifindex returns the bound interface's index (in the namespace the socket was opened in).
func (s *Socket) Ifindex() int { return s.ifindex }

// ProgramID returns the kernel ID of the XDP program the socket attached (for leak checks).
func (s *Socket) ProgramID() ebpf.ProgramID { return s.progID }

// MapID returns the kernel ID of the socket's XSKMAP (for leak checks).
func (s *Socket) MapID() ebpf.MapID { return s.mapID }

// UMEMFrameSize returns the size of a UMEM frame (FrameSize returns the largest frame).
func (s *Socket) UMEMFrameSize() int { return int(s.frameSize) }

// Stats returns the socket's counters.
func (s *Socket) Stats() Stats {
	return Stats{
		RxPackets: s.rxPackets.Load(), RxBytes: s.rxBytes.Load(),
		TxPackets: s.txPackets.Load(), TxBytes: s.txBytes.Load(),
		TxDropped: s.txDropped.Load(), Wakeups: s.wakeups.Load(),
	}
}

// KernelStats reads the kernel's drop counters for the socket.
func (s *Socket) KernelStats() (KernelStats, error) {
	if err := s.Enter(); err != nil {
		return KernelStats{}, err
	}
	defer s.Exit()
	st, err := sys.XDPStats(s.pfd.FD())
	if err != nil {
		return st, fmt.Errorf("read XDP statistics of %s: %w", s.ifname, err)
	}
	return st, nil
}

// ---- receive side ----

// PeekRX returns up to max received descriptors without copying: the frames stay valid
// (Frame(desc)) until ReleaseRX. It never blocks; zero means the RX ring is empty. The
// zero-copy calls (PeekRX, RXDesc, Frame, ReleaseRX) are not guarded against Close: their
// caller must stop using them before closing the socket. Receive is the guarded, copying
// form.
func (s *Socket) PeekRX(max int) (first uint32, n int) {
	avail := s.rx.avail() - s.peeked
	if uint32(max) < avail {
		avail = uint32(max)
	}
	first = s.rx.cachedCons + s.peeked
	s.peeked += avail
	return first, int(avail)
}

// RXDesc returns the descriptor at index i of a PeekRX batch.
func (s *Socket) RXDesc(i uint32) unix.XDPDesc { return s.rxQ[i&s.rx.mask] }

// Frame returns the UMEM bytes a descriptor points at.
func (s *Socket) Frame(d unix.XDPDesc) []byte {
	return s.umem[d.Addr : d.Addr+uint64(d.Len) : d.Addr+uint64(d.Len)]
}

// ReleaseRX returns every peeked descriptor's frame to the fill ring and the descriptors to
// the kernel, then kicks the kernel if it asked for a wake-up.
func (s *Socket) ReleaseRX() {
	n := s.peeked
	if n == 0 {
		return
	}
	var bytes uint64
	mask := uint64(s.frameSize) - 1
	// The fill ring is as large as the receive frame set, so there is always room for the
	// frames being returned.
	s.fill.free(n)
	for i := range n {
		d := s.rxQ[(s.rx.cachedCons+i)&s.rx.mask]
		bytes += uint64(d.Len)
		s.fillQ[s.fill.cachedProd&s.fill.mask] = d.Addr &^ mask
		s.fill.cachedProd++
	}
	s.fill.publish()
	s.rx.release(n)
	s.peeked = 0
	s.rxPackets.Add(uint64(n))
	s.rxBytes.Add(bytes)
	if s.fill.flags.Load()&unix.XDP_RING_NEED_WAKEUP != 0 {
		s.wakeups.Add(1)
		_, _, _ = unix.Recvfrom(s.pfd.FD(), nil, unix.MSG_DONTWAIT)
	}
}

// Receive copies up to len(bufs) received frames into bufs, storing each length in lens,
// and recycles their UMEM frames. It never blocks; it returns 0 when nothing is pending. A
// frame longer than its buffer is truncated to the buffer (lens reports the copied length).
func (s *Socket) Receive(bufs [][]byte, lens []int) (int, error) {
	if err := s.Enter(); err != nil {
		return 0, err
	}
	defer s.Exit()
	max := min(len(bufs), len(lens))
	first, n := s.PeekRX(max)
	for i := range n {
		d := s.rxQ[(first+uint32(i))&s.rx.mask]
		lens[i] = copy(bufs[i], s.umem[d.Addr:d.Addr+uint64(d.Len)])
	}
	s.ReleaseRX()
	return n, nil
}

// ---- transmit side ----

// reap moves completed transmit frames back to txFree and returns how many.
func (s *Socket) reap() uint32 {
	n := s.comp.avail()
	if n == 0 {
		return 0
	}
	for i := range n {
		s.txFree = append(s.txFree, s.compQ[(s.comp.cachedCons+i)&s.comp.mask])
	}
	s.comp.release(n)
	s.txFreeN.Add(int32(n))
	return n
}

// Transmit copies frames into free UMEM frames, queues them on the TX ring and kicks the
// kernel. It never blocks and returns how many frames from the head of frames it consumed:
// queued, or dropped and counted in TxDropped because they exceed FrameSize (or are empty).
// Fewer than len(frames) means the transmit frames are all in flight: call WaitTX.
func (s *Socket) Transmit(frames [][]byte) (int, error) {
	if err := s.Enter(); err != nil {
		return 0, err
	}
	defer s.Exit()
	if len(s.txFree) < len(frames) {
		s.reap()
	}
	room := min(uint32(len(s.txFree)), s.tx.free(uint32(len(frames))))
	var consumed, queued int
	var bytes uint64
	for _, f := range frames {
		if len(f) == 0 || len(f) > int(s.frameSize) {
			s.txDropped.Add(1)
			consumed++
			continue
		}
		if uint32(queued) == room {
			break
		}
		addr := s.txFree[len(s.txFree)-1]
		s.txFree = s.txFree[:len(s.txFree)-1]
		copy(s.umem[addr:addr+uint64(s.frameSize)], f)
		s.txQ[s.tx.cachedProd&s.tx.mask] = unix.XDPDesc{Addr: addr, Len: uint32(len(f))}
		s.tx.cachedProd++
		bytes += uint64(len(f))
		queued++
		consumed++
	}
	if queued == 0 {
		return consumed, nil
	}
	s.tx.publish()
	s.txFreeN.Add(-int32(queued))
	s.txPackets.Add(uint64(queued))
	s.txBytes.Add(bytes)
	return consumed, s.kickTX()
}

// kickTX asks the kernel to process the TX ring when it requests a wake-up (always, in copy
// mode). EAGAIN/EBUSY/ENOBUFS mean "try again later": the frames stay queued.
func (s *Socket) kickTX() error {
	if s.tx.flags.Load()&unix.XDP_RING_NEED_WAKEUP == 0 {
		return nil
	}
	s.wakeups.Add(1)
	err := unix.Sendto(s.pfd.FD(), nil, unix.MSG_DONTWAIT, nil)
	switch {
	case err == nil, errors.Is(err, unix.EAGAIN), errors.Is(err, unix.EBUSY), errors.Is(err, unix.ENOBUFS):
		return nil
	default:
		return fmt.Errorf("kick TX of %s: %w", s.ifname, err)
	}
}

// TXPending reports how many transmit frames are in flight (queued or awaiting completion).
func (s *Socket) TXPending() int { return int(s.rxFrames) - int(s.txFreeN.Load()) }
