package nmport

import (
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Port is an open netmap port (libnetmap's nmport_d): its rings and buffers
// in shared memory, synced with the node agent through the CSB.
//
// A Port is used by one goroutine at a time, as a netmap file descriptor is
// by one thread: TxSync, RxSync, Poll and the rings are not safe for
// concurrent use. Close may be called from any goroutine, once.
type Port struct {
	name   string
	conn   *net.UnixConn
	mem    []byte
	l      Layout
	kick   int // eventfd: written to wake the agent
	notify int // eventfd: written by the agent to wake us
	hdr    *portHdr
	tx, rx []*Ring // the bound rings only
	mac    net.HardwareAddr
	addrs  []Address
	closed atomic.Bool
}

// MAC is the port's MAC address when the agent gave it one (a pod's
// application port, whose frames must carry it), nil otherwise.
func (p *Port) MAC() net.HardwareAddr { return p.mac }

// Addrs are the port's addresses from the node's IPAM, with their subnets'
// gateways, when the agent gave it any (a pod's application port).
func (p *Port) Addrs() []Address { return p.addrs }

// Ring is struct netmap_ring in the shared region, with nm_ring_* helpers.
// Head and Cur are the application's; Tail moves on TxSync/RxSync/Poll.
type Ring struct {
	hdr   *ringHdr
	slots []Slot
	atok  *csbAtok
	ktoa  *csbKtoa
	mem   []byte
	l     *Layout
	index int // position in the layout (TX rings first)
	port  *Port
}

// Open registers name on the agent's netmap socket (a path, or "@name" for
// an abstract socket) and maps the port. Names follow netmap's syntax (see
// ParseName). extraBufs asks for that many extra buffers (nr_arg3), chained
// from BufsHead.
func Open(socket, name string, extraBufs uint32) (*Port, error) {
	req, err := ParseName(name)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", name, err)
	}
	req.ExtraBufs = extraBufs
	return OpenRequest(socket, req)
}

// OpenRequest is Open with an explicit request (nmreq).
func OpenRequest(socket string, req Request) (*Port, error) {
	b, err := req.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", req.Name, err)
	}
	addr := &net.UnixAddr{Name: socket, Net: "unixpacket"}
	if len(socket) > 0 && socket[0] == '@' {
		addr.Name = "\x00" + socket[1:]
	}
	conn, err := net.DialUnix("unixpacket", nil, addr)
	if err != nil {
		return nil, fmt.Errorf("open %s: connect to the agent's netmap socket %s: %w", req.Name, socket, err)
	}
	p, err := register(conn, req, b)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("open %s: %w", req.Name, err)
	}
	return p, nil
}

func register(conn *net.UnixConn, req Request, b []byte) (*Port, error) {
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write(b); err != nil {
		return nil, fmt.Errorf("send request: %w", err)
	}
	buf := make([]byte, ResponseSize+1)
	oob := make([]byte, unix.CmsgSpace(3*4))
	n, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
	if err != nil {
		return nil, fmt.Errorf("read response: %w", err)
	}
	fds, err := parseRights(oob[:oobn])
	if err != nil {
		return nil, err
	}
	closeFDs := func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}
	var resp Response
	if err := resp.UnmarshalBinary(buf[:n]); err != nil {
		closeFDs()
		return nil, err
	}
	if resp.Errno != 0 {
		closeFDs()
		return nil, &Error{Errno: resp.Errno, Message: resp.Message}
	}
	if len(fds) != 3 {
		closeFDs()
		return nil, fmt.Errorf("response carried %d descriptors, want 3: %w", len(fds), syscall.EPROTO)
	}
	conn.SetDeadline(time.Time{})
	l, err := resp.Geometry.Layout()
	if err == nil && l.Size != resp.Size {
		err = fmt.Errorf("region of %d bytes, layout says %d: %w", resp.Size, l.Size, syscall.EPROTO)
	}
	if err != nil {
		closeFDs()
		return nil, err
	}
	mem, err := unix.Mmap(fds[0], 0, int(l.Size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	unix.Close(fds[0])
	if err != nil {
		unix.Close(fds[1])
		unix.Close(fds[2])
		return nil, fmt.Errorf("map the port's region: %w", err)
	}
	p := &Port{name: req.Name, conn: conn, mem: mem, l: l, kick: fds[1], notify: fds[2],
		hdr: ptr[portHdr](mem, l.CSBOff), mac: resp.MAC, addrs: resp.Addrs}
	tx, rx := resp.Bound[0], resp.Bound[1]
	if tx[0] > tx[1] || int(tx[1]) > l.TxRings || rx[0] > rx[1] || int(rx[1]) > l.RxRings {
		p.Close()
		return nil, fmt.Errorf("bound rings TX %v RX %v outside %d/%d: %w", tx, rx, l.TxRings, l.RxRings, syscall.EPROTO)
	}
	for i := int(tx[0]); i < int(tx[1]); i++ {
		p.tx = append(p.tx, p.ring(i))
	}
	for i := int(rx[0]); i < int(rx[1]); i++ {
		p.rx = append(p.rx, p.ring(l.TxRings+i))
	}
	return p, nil
}

func parseRights(oob []byte) ([]int, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("parse control message: %w", err)
	}
	var fds []int
	for i := range msgs {
		f, err := unix.ParseUnixRights(&msgs[i])
		if err != nil {
			continue
		}
		fds = append(fds, f...)
	}
	return fds, nil
}

func (p *Port) ring(i int) *Ring {
	r := ptr[ringHdr](p.mem, p.l.RingOff[i])
	n := p.l.RingSlots(i)
	first := ptr[Slot](p.mem, p.l.SlotOff(i, 0))
	_ = ptr[Slot](p.mem, p.l.SlotOff(i, n-1))
	return &Ring{hdr: r, slots: unsafeSlots(first, n), atok: ptr[csbAtok](p.mem, p.l.AtokOff(i)),
		ktoa: ptr[csbKtoa](p.mem, p.l.KtoaOff(i)), mem: p.mem, l: &p.l, index: i, port: p}
}

// Error is a registration the agent refused: the errno netmap would return
// from NIOCREGIF and the agent's explanation.
type Error struct {
	Errno   syscall.Errno
	Message string
}

func (e *Error) Error() string { return e.Message }

// Unwrap makes errors.Is(err, syscall.ENOENT) and friends work.
func (e *Error) Unwrap() error { return e.Errno }

// Name is the port's name.
func (p *Port) Name() string { return p.name }

// NumTxRings and NumRxRings count the bound rings.
func (p *Port) NumTxRings() int { return len(p.tx) }

// NumRxRings counts the bound RX rings.
func (p *Port) NumRxRings() int { return len(p.rx) }

// TxRing is the i-th bound TX ring (NETMAP_TXRING).
func (p *Port) TxRing(i int) *Ring { return p.tx[i] }

// RxRing is the i-th bound RX ring (NETMAP_RXRING).
func (p *Port) RxRing(i int) *Ring { return p.rx[i] }

// BufsHead is the first of the extra buffers (ni_bufs_head), 0 if none; each
// extra buffer's first 4 bytes hold the next index.
func (p *Port) BufsHead() uint32 { return ptr[ifHdr](p.mem, 0).BufsHead }

// Buf is buffer idx of the port's region (NETMAP_BUF), nil if out of range.
func (p *Port) Buf(idx uint32) []byte {
	if idx < 2 || idx >= p.l.NumBufs {
		return nil
	}
	off := p.l.BufAt(idx)
	end := off + uint64(p.l.BufSize)
	return p.mem[off:end:end]
}

// BufSize is nr_buf_size.
func (p *Port) BufSize() int { return int(p.l.BufSize) }

// ErrClosed is returned by a port's syncs after Close.
var ErrClosed = errors.New("nmport: port closed")

// state returns the error the agent put the port in, if any.
func (p *Port) state() error {
	if p.closed.Load() {
		return ErrClosed
	}
	if e := atomic.LoadUint32(&p.hdr.State); e != 0 {
		return fmt.Errorf("port %s: put in error by the agent: %w", p.name, syscall.Errno(e))
	}
	return nil
}

// TxSync is NIOCTXSYNC: hand [old head, Head) to the agent and update Tail.
// It does not wait for the agent; slots come back on a later sync or Poll.
func (p *Port) TxSync() error {
	if err := p.state(); err != nil {
		return err
	}
	kick := false
	for _, r := range p.tx {
		kick = r.publish() || kick
	}
	if kick {
		p.doKick()
	}
	for _, r := range p.tx {
		r.hdr.Tail = atomic.LoadUint32(&r.ktoa.Hwtail)
	}
	return nil
}

// RxSync is NIOCRXSYNC: release [old head, Head) and show what arrived.
func (p *Port) RxSync() error {
	if err := p.state(); err != nil {
		return err
	}
	kick := false
	for _, r := range p.rx {
		kick = r.publish() || kick
	}
	if kick {
		p.doKick()
	}
	for _, r := range p.rx {
		r.hdr.Tail = atomic.LoadUint32(&r.ktoa.Hwtail)
	}
	return nil
}

// publish writes head/cur to the CSB; true if the agent asked for a kick.
func (r *Ring) publish() bool {
	atomic.StoreUint32(&r.atok.Cur, r.hdr.Cur)
	atomic.StoreUint32(&r.atok.Head, r.hdr.Head)
	return atomic.LoadUint32(&r.ktoa.KernNeedKick) != 0
}

func (p *Port) doKick() {
	var one = [8]byte{1}
	unix.Write(p.kick, one[:])
}

// Poll events.
const (
	PollIn  = unix.POLLIN
	PollOut = unix.POLLOUT
)

// Poll is poll(2) on the port: it syncs, and if no bound RX ring has frames
// (PollIn) or no bound TX ring has space (PollOut), sleeps until the agent
// notifies or timeout passes (negative: no timeout). It returns the ready
// events (0 on timeout).
func (p *Port) Poll(events int16, timeout time.Duration) (int16, error) {
	var deadline time.Time
	if timeout >= 0 {
		deadline = time.Now().Add(timeout)
	}
	for {
		if err := p.TxSync(); err != nil {
			return 0, err
		}
		if err := p.RxSync(); err != nil {
			return 0, err
		}
		if rev := p.ready(events); rev != 0 {
			return rev, nil
		}
		p.setNeedKick(events, 1)
		// Re-check after asking to be woken, so that a publish between the
		// check above and the flag is not lost.
		p.TxSync()
		p.RxSync()
		if rev := p.ready(events); rev != 0 {
			p.setNeedKick(events, 0)
			return rev, nil
		}
		ms := -1
		if timeout >= 0 {
			left := time.Until(deadline)
			if left <= 0 {
				p.setNeedKick(events, 0)
				return 0, nil
			}
			ms = int((left + time.Millisecond - 1) / time.Millisecond)
		}
		fds := []unix.PollFd{{Fd: int32(p.notify), Events: unix.POLLIN}, {Fd: int32(p.connFD()), Events: unix.POLLIN}}
		_, err := unix.Poll(fds, ms)
		p.setNeedKick(events, 0)
		if err != nil && err != unix.EINTR {
			return 0, fmt.Errorf("poll %s: %w", p.name, err)
		}
		if fds[0].Revents&unix.POLLIN != 0 {
			var b [8]byte
			unix.Read(p.notify, b[:])
		}
		if fds[1].Revents&(unix.POLLHUP|unix.POLLIN|unix.POLLERR) != 0 {
			if err := p.state(); err != nil {
				return 0, err
			}
			return 0, fmt.Errorf("port %s: the agent closed the registration: %w", p.name, syscall.ENXIO)
		}
	}
}

func (p *Port) ready(events int16) int16 {
	var rev int16
	if events&PollOut != 0 {
		for _, r := range p.tx {
			if r.Space() > 0 {
				rev |= PollOut
				break
			}
		}
	}
	if events&PollIn != 0 {
		for _, r := range p.rx {
			if !r.Empty() {
				rev |= PollIn
				break
			}
		}
	}
	return rev
}

func (p *Port) setNeedKick(events int16, v uint32) {
	if events&PollOut != 0 {
		for _, r := range p.tx {
			atomic.StoreUint32(&r.atok.ApplNeedKick, v)
		}
	}
	if events&PollIn != 0 {
		for _, r := range p.rx {
			atomic.StoreUint32(&r.atok.ApplNeedKick, v)
		}
	}
}

func (p *Port) connFD() int {
	fd := -1
	if rc, err := p.conn.SyscallConn(); err == nil {
		rc.Control(func(f uintptr) { fd = int(f) })
	}
	return fd
}

// Close unregisters the port, waits for the agent to release it, and unmaps
// its region. The rings and buffers must not be used afterwards.
func (p *Port) Close() error {
	if p.closed.Swap(true) {
		return ErrClosed
	}
	// Unregister and wait (up to a second) for the agent to confirm by
	// closing its end, so that the port is gone when Close returns and its
	// name can be registered again at once.
	if p.conn.CloseWrite() == nil {
		p.conn.SetReadDeadline(time.Now().Add(time.Second))
		var b [64]byte
		for {
			if _, err := p.conn.Read(b[:]); err != nil {
				break
			}
		}
	}
	err := p.conn.Close()
	unix.Close(p.kick)
	unix.Close(p.notify)
	if merr := unix.Munmap(p.mem); merr != nil && err == nil {
		err = merr
	}
	p.mem = nil
	return err
}

// NumSlots is num_slots.
func (r *Ring) NumSlots() uint32 { return r.hdr.NumSlots }

// Head, Cur and Tail are the ring's positions.
func (r *Ring) Head() uint32 { return r.hdr.Head }

// Cur is the ring's cur (wake-up point).
func (r *Ring) Cur() uint32 { return r.hdr.Cur }

// Tail is the first slot the agent owns.
func (r *Ring) Tail() uint32 { return r.hdr.Tail }

// SetHead sets head (slots before it go back to the agent on the next sync).
func (r *Ring) SetHead(i uint32) { r.hdr.Head = i }

// SetCur sets cur.
func (r *Ring) SetCur(i uint32) { r.hdr.Cur = i }

// Advance sets head and cur to i.
func (r *Ring) Advance(i uint32) { r.hdr.Head, r.hdr.Cur = i, i }

// Next is nm_ring_next.
func (r *Ring) Next(i uint32) uint32 {
	if i+1 == r.hdr.NumSlots {
		return 0
	}
	return i + 1
}

// Empty is nm_ring_empty (cur == tail).
func (r *Ring) Empty() bool { return r.hdr.Cur == r.hdr.Tail }

// Space is nm_ring_space: slots between cur and tail.
func (r *Ring) Space() uint32 {
	t, c := r.hdr.Tail, r.hdr.Cur
	if t >= c {
		return t - c
	}
	return t + r.hdr.NumSlots - c
}

// Slot is slot i (i < NumSlots), in shared memory.
func (r *Ring) Slot(i uint32) *Slot { return &r.slots[i] }

// Buf is the buffer of slot i (NETMAP_BUF(ring, slot[i].buf_idx)), nil for
// a slot or buffer index out of range.
func (r *Ring) Buf(i uint32) []byte {
	if i >= uint32(len(r.slots)) {
		return nil
	}
	return r.port.Buf(r.slots[i].BufIdx)
}
