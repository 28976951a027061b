// Package appport serves netmap ports to applications: the netmap control
// plane of the node agent. An application connects to a unix socket
// (SOCK_SEQPACKET), asks to register a port by its netmap name (pkg/nmport's
// protocol: struct nmreq), and receives the port's memory (a sealed memfd
// laid out as netmap_if, netmap_ring, netmap_slot, the CSB and the buffers)
// and two eventfds. It then moves frames with TXSYNC/RXSYNC and poll through
// pkg/nmport, as with netmap's sync kloop (NETMAP_REQ_SYNC_KLOOP_START): the
// application writes head/cur into the CSB, and a sync loop in the agent
// runs the port's txsync/rxsync on a netmap.Handle registered on the
// application's behalf.
//
// The agent trusts nothing the application writes. Each head/cur pair is
// read once and validated against the kernel side's positions before a slot
// is touched; each slot's buffer index and length are read once and checked
// against the region; frame bytes are copied between the shared buffers and
// the agent's own pool, so the switch parses, checks (anti-spoofing) and
// forwards memory the application cannot change under it. A bad value puts
// that port in error (its state word says EINVAL, its registration ends), as
// netmap resets a ring that fails its prologue; other ports and the agent
// carry on. The registration ends when the connection closes, so an
// application that exits or is killed loses its port at once and its memory
// and descriptors are reclaimed.
package appport

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/epair-cni/epair/internal/errno"
	"github.com/epair-cni/epair/internal/sys"
	"github.com/epair-cni/epair/pkg/ifcore"
	"github.com/epair-cni/epair/pkg/netmap"
	"github.com/epair-cni/epair/pkg/nmport"
)

// Options configure a Server.
type Options struct {
	// Authorize decides whether this socket's clients may register req
	// (their pod's own ports, say). A non-nil error refuses it with the
	// error's errno (EACCES if it carries none). Nil allows every name.
	Authorize func(req *nmport.Request) error
	// BusyPoll is how long a port's sync loop keeps polling the CSB after
	// its last work before it sleeps (0: DefaultBusyPoll; negative: never
	// poll). An idle port costs nothing either way.
	BusyPoll time.Duration
	// OnOpen, if set, is called with the registered adapter's name before
	// the port is handed to the application (the dataplane admits the port
	// to its switch's lookup there); an error refuses the registration.
	// OnClose is told when a registration ends.
	OnOpen  func(adapter string) error
	OnClose func(adapter string)
	// Identity, if set, gives a registered adapter's MAC and addresses for
	// the response (a pod's application port); nil values send none.
	Identity func(adapter string) (net.HardwareAddr, []nmport.Address)
	// Shape, if set, gives a registered adapter's receive rate (nil: no
	// limit); SetRate changes it live. Frames wait in the port's RX rings
	// until the token bucket lets them into the application's: the rings
	// are the queue, and what does not fit is the switch's to drop.
	Shape func(adapter string) *ifcore.Rate
	Log   *slog.Logger
}

// DefaultBusyPoll is the sync loop's polling time after traffic.
const DefaultBusyPoll = 200 * time.Microsecond

// requestTimeout bounds how long a connection may take to send its request.
const requestTimeout = 5 * time.Second

// Server is one listening socket.
type Server struct {
	nm   *netmap.Netmap
	o    Options
	ln   *net.UnixListener
	addr string

	mu     sync.Mutex
	ports  map[*port]struct{}
	conns  map[*net.UnixConn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// Listen serves nm's ports on addr: a filesystem path (created with mode
// 0600, a stale socket replaced) or "@name" for an abstract socket in the
// caller's network namespace.
func Listen(addr string, nm *netmap.Netmap, o Options) (*Server, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.BusyPoll == 0 {
		o.BusyPoll = DefaultBusyPoll
	}
	if addr == "" || addr == "@" {
		return nil, fmt.Errorf("listen on netmap socket: empty address: %w", syscall.EINVAL)
	}
	ua := &net.UnixAddr{Name: addr, Net: "unixpacket"}
	if len(addr) > 0 && addr[0] == '@' {
		ua.Name = "\x00" + addr[1:]
	} else {
		if err := os.MkdirAll(filepath.Dir(addr), 0o700); err != nil {
			return nil, fmt.Errorf("listen on netmap socket %s: %w", addr, err)
		}
		if fi, err := os.Lstat(addr); err == nil && fi.Mode()&os.ModeSocket != 0 {
			os.Remove(addr)
		}
	}
	ln, err := net.ListenUnix("unixpacket", ua)
	if err != nil {
		return nil, fmt.Errorf("listen on netmap socket %s: %w", addr, err)
	}
	if ua.Name[0] != 0 {
		ln.SetUnlinkOnClose(true)
		if err := os.Chmod(addr, 0o600); err != nil {
			ln.Close()
			return nil, fmt.Errorf("listen on netmap socket %s: %w", addr, err)
		}
	}
	s := &Server{nm: nm, o: o, ln: ln, addr: addr, ports: map[*port]struct{}{}, conns: map[*net.UnixConn]struct{}{}}
	s.wg.Add(1)
	go s.serve()
	return s, nil
}

// Addr is the socket's address as given to Listen.
func (s *Server) Addr() string { return s.addr }

func (s *Server) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.o.Log.Warn("netmap socket: accept", "socket", s.addr, "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.handle(c)
	}
}

// Close stops listening, ends every registration and waits for their loops.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	conns := make([]*net.UnixConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	err := s.ln.Close()
	for _, c := range conns {
		c.Close() // the connection's handler tears its port down
	}
	s.wg.Wait()
	return err
}

// SetRate changes the receive rate of the registrations of adapter (nil: no
// limit); see Options.Shape. It takes effect at the port's next sync.
func (s *Server) SetRate(adapter string, r *ifcore.Rate) error {
	if r != nil {
		if err := r.Validate(); err != nil {
			return fmt.Errorf("set rate of %s: %w", adapter, err)
		}
		r = new(*r)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for p := range s.ports {
		if p.adapter == adapter {
			p.rate.Store(r)
			p.wake()
		}
	}
	return nil
}

// PortInfo describes one registration.
type PortInfo struct {
	Name             string // as registered (after Authorize)
	Adapter          string // the adapter's name: the VALE port, pipe end or monitored port
	TxRings, RxRings int    // bound rings
	TxFrames         uint64
	RxFrames         uint64
}

// Ports lists the open registrations.
func (s *Server) Ports() []PortInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]PortInfo, 0, len(s.ports))
	for p := range s.ports {
		out = append(out, PortInfo{Name: p.name, Adapter: p.adapter, TxRings: len(p.tx), RxRings: len(p.rx),
			TxFrames: p.txFrames.Load(), RxFrames: p.rxFrames.Load()})
	}
	return out
}

func (s *Server) handle(c *net.UnixConn) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		c.Close()
	}()
	c.SetReadDeadline(time.Now().Add(requestTimeout))
	buf := make([]byte, nmport.RequestSize+1)
	n, err := c.Read(buf)
	if err != nil {
		return
	}
	var req nmport.Request
	if err := req.UnmarshalBinary(buf[:n]); err != nil {
		s.refuse(c, "", fmt.Errorf("register: %w", err))
		return
	}
	if s.o.Authorize != nil {
		if err := s.o.Authorize(&req); err != nil {
			if errno.Of(err) == syscall.EIO {
				err = fmt.Errorf("%w: %w", err, syscall.EACCES)
			}
			s.refuse(c, req.Name, err)
			return
		}
	}
	p, err := s.open(&req)
	if err != nil {
		s.refuse(c, req.Name, err)
		return
	}
	if s.o.OnOpen != nil {
		if err := s.o.OnOpen(p.adapter); err != nil {
			p.destroy()
			s.refuse(c, req.Name, err)
			return
		}
	}
	// OnClose is told before the port leaves its switch, so that nothing
	// acts on its switch index once another port may have it.
	closed := func() {
		if s.o.OnClose != nil {
			s.o.OnClose(p.adapter)
		}
		p.destroy()
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		closed()
		return
	}
	s.ports[p] = struct{}{}
	s.mu.Unlock()
	if s.o.Shape != nil {
		p.rate.Store(s.o.Shape(p.adapter)) // after the insert: a SetRate from now on finds p
	}
	defer func() {
		s.mu.Lock()
		delete(s.ports, p)
		s.mu.Unlock()
	}()
	resp := p.response(&req)
	if s.o.Identity != nil {
		resp.MAC, resp.Addrs = s.o.Identity(p.adapter)
	}
	b, err := resp.MarshalBinary()
	if err != nil {
		closed()
		s.refuse(c, req.Name, fmt.Errorf("register %s: %w", req.Name, err))
		return
	}
	rights := unix.UnixRights(p.memfd, p.kickFD, p.notifyFD)
	_, _, werr := c.WriteMsgUnix(b, rights, nil)
	unix.Close(p.memfd) // the mapping stays; the application has its own copy
	p.memfd = -1
	if werr != nil {
		s.o.Log.Info("netmap port: could not hand the port over", "port", p.name, "err", werr)
		closed()
		return
	}
	s.o.Log.Debug("netmap port registered", "port", p.name, "adapter", p.adapter, "flags", req.Flags, "ringid", req.RingID)
	done := make(chan struct{})
	go func() {
		p.run()
		close(done)
	}()
	// The registration lives as long as the connection. Anything the
	// application sends after its request is a protocol error.
	c.SetReadDeadline(time.Time{})
	go func() {
		<-p.dead
		c.SetReadDeadline(time.Unix(1, 0))
	}()
	if n, err := c.Read(buf); err == nil && n > 0 {
		p.fail(syscall.EPROTO, "message after the registration")
	}
	p.stop()
	<-done
	closed()
	s.o.Log.Debug("netmap port unregistered", "port", p.name, "reason", p.reason())
}

func (s *Server) refuse(c *net.UnixConn, name string, err error) {
	e := errno.Of(err)
	resp := nmport.Response{Errno: e, Message: err.Error()}
	b, _ := resp.MarshalBinary()
	c.Write(b)
	s.o.Log.Info("netmap port refused", "port", name, "errno", e.Error(), "err", err)
}

// port is one registration: the handle, the shared region, the mirrors of
// the bound rings and the sync loop's state.
type port struct {
	name    string
	adapter string // the registered adapter's name
	log     *slog.Logger
	h       *netmap.Handle
	mem     []byte
	region  *nmport.Region
	memfd   int
	// kickFD is read by the loop (the application writes it);
	// notifyFD is written by the loop (the application polls it).
	kickFD, notifyFD int
	kick             *sys.PollFD
	tx, rx           []*mirror
	busyPoll         time.Duration
	// rate is the receive rate SetRate asked for (nil: none); reg the sync
	// loop's regulator for it, rebuilt when rate changes, and throttle how
	// long it must wait before the next frame may go (0: it need not).
	rate     atomic.Pointer[ifcore.Rate]
	regFor   *ifcore.Rate
	reg      *ifcore.Regulator
	throttle time.Duration
	ready    func(uintptr) bool
	bufsHead uint32 // first extra buffer (ni_bufs_head), 0: none

	// rxMu serializes the RX rings' syncs between the loop and the senders
	// that deliver inline (rxInline).
	rxMu     sync.Mutex
	sleeping atomic.Bool
	stopping atomic.Bool
	dead     chan struct{} // closed when the port fails or stops
	deadOnce sync.Once
	why      atomic.Pointer[string]

	txFrames, rxFrames atomic.Uint64
}

// mirror links a bound kring to its ring in the shared region.
type mirror struct {
	k     *netmap.Kring
	i     int // ring index in the region (TX rings first)
	pubTl uint32
	pubHc uint32
	// shown is the RX slot up to which frames were copied into the region
	// (the regulator may hold back some of [shown, Ring.Tail)).
	shown uint32
}

func (s *Server) open(req *nmport.Request) (_ *port, err error) {
	// Host-ring modes (SW, NIC_SW) are netmap's to refuse: no adapter an
	// application can name has host rings (netmap_interp_ringid, EINVAL).
	h := s.nm.Open()
	// Always exclusive: each registration mirrors its rings into its own
	// region, so two registrations of one ring would each hold a different
	// view of it. A second one is refused with EBUSY (NR_EXCLUSIVE).
	flags := req.Flags | netmap.Exclusive
	if flags&(netmap.MonitorTX|netmap.MonitorRX) != 0 {
		flags |= netmap.RxRingsOnly // a copy monitor only receives
	}
	nreq := netmap.Req{Name: req.Name, Version: req.Version, RingID: req.RingID, Flags: flags,
		TxSlots: req.TxSlots, RxSlots: req.RxSlots, TxRings: req.TxRings, RxRings: req.RxRings}
	if err := h.Register(&nreq); err != nil {
		h.Close()
		return nil, err
	}
	p := &port{name: req.Name, log: s.o.Log, h: h, memfd: -1, kickFD: -1, notifyFD: -1, busyPoll: s.o.BusyPoll, dead: make(chan struct{})}
	defer func() {
		if err != nil {
			p.destroy()
		}
	}()
	na := h.Adapter().NA()
	p.adapter = na.Name
	g := nmport.Geometry{TxRings: na.NumTxRings, RxRings: na.NumRxRings, TxSlots: na.NumTxDesc, RxSlots: na.NumRxDesc,
		BufSize: (na.Mem.BufSize() + 63) &^ 63, ExtraBufs: req.ExtraBufs}
	if err := g.Validate(); err != nil {
		return nil, fmt.Errorf("register %s: %w", req.Name, err)
	}
	l, _ := g.Layout()
	if err := p.mapRegion(l); err != nil {
		return nil, fmt.Errorf("register %s: %w", req.Name, err)
	}
	p.region = nmport.NewRegion(p.mem, l)
	p.bufsHead = l.Init(p.mem, req.Name)
	for t := netmap.TX; t <= netmap.RX; t++ {
		first, last := h.Interval(t)
		nr := na.NumTxRings
		if t == netmap.RX {
			nr = na.NumRxRings
		}
		if last > nr {
			last = nr // never the host rings
		}
		for i := first; i < last; i++ {
			k := h.Kring(t, i)
			m := &mirror{k: k, i: i}
			if t == netmap.RX {
				m.i += l.TxRings
				p.rx = append(p.rx, m)
			} else {
				p.tx = append(p.tx, m)
			}
			m.pubTl, m.pubHc, m.shown = k.Ring.Tail, k.NrHwcur.Load(), k.Ring.Tail
			p.region.InitRing(m.i, k.Ring.Head, k.Ring.Cur, k.Ring.Tail, m.pubHc)
		}
	}
	if p.kickFD, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		return nil, fmt.Errorf("register %s: eventfd: %w", req.Name, err)
	}
	if p.notifyFD, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		return nil, fmt.Errorf("register %s: eventfd: %w", req.Name, err)
	}
	kfd, err := unix.Dup(p.kickFD)
	if err != nil {
		return nil, fmt.Errorf("register %s: dup: %w", req.Name, err)
	}
	if p.kick, err = sys.NewPollFD(kfd, "netmap kick "+req.Name); err != nil {
		return nil, fmt.Errorf("register %s: %w", req.Name, err)
	}
	var drain [8]byte
	p.ready = func(fd uintptr) bool {
		_, err := unix.Read(int(fd), drain[:])
		return err != unix.EAGAIN || p.stopping.Load()
	}
	for _, m := range p.tx {
		m.k.OnWake(p.wake)
	}
	for _, m := range p.rx {
		m.k.OnWake(func() { p.rxInline(m) })
	}
	return p, nil
}

func (p *port) mapRegion(l nmport.Layout) error {
	fd, err := unix.MemfdCreate("nmport", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return fmt.Errorf("memfd: %w", err)
	}
	p.memfd = fd
	if err := unix.Ftruncate(fd, int64(l.Size)); err != nil {
		return fmt.Errorf("size the region to %d bytes: %w", l.Size, err)
	}
	// Sealed: the application cannot shrink the file under the agent's
	// mapping (which would fault the agent) nor grow it.
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_SEAL); err != nil {
		return fmt.Errorf("seal the region: %w", err)
	}
	mem, err := unix.Mmap(fd, 0, int(l.Size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("map the region: %w", err)
	}
	p.mem = mem
	return nil
}

func (p *port) response(req *nmport.Request) nmport.Response {
	l := p.region.Layout()
	r := nmport.Response{Geometry: l.Geometry, Size: l.Size, BufsHead: p.bufsHead, RingID: req.RingID, Flags: p.h.Flags()}
	if len(p.tx) > 0 {
		r.Bound[0] = [2]uint16{uint16(p.tx[0].i), uint16(p.tx[len(p.tx)-1].i + 1)}
	}
	if len(p.rx) > 0 {
		r.Bound[1] = [2]uint16{uint16(p.rx[0].i - l.TxRings), uint16(p.rx[len(p.rx)-1].i - l.TxRings + 1)}
	}
	return r
}

// wake runs on every notify of a bound kring (a frame delivered, space
// freed): if the loop sleeps, kick it through its own eventfd.
func (p *port) wake() {
	if p.sleeping.Load() && p.sleeping.CompareAndSwap(true, false) {
		var one = [8]byte{1}
		unix.Write(p.kickFD, one[:])
	}
}

// fail puts the port in error: the application sees errno in the region's
// state word and the registration ends.
func (p *port) fail(e syscall.Errno, why string) {
	if p.region != nil {
		p.region.SetState(uint32(e))
	}
	msg := fmt.Sprintf("%s: %s", e, why)
	if p.why.CompareAndSwap(nil, &msg) {
		p.log.Info("netmap port put in error", "port", p.name, "err", msg)
	}
	p.deadOnce.Do(func() { close(p.dead) })
	p.notifyApp()
}

func (p *port) reason() string {
	if w := p.why.Load(); w != nil {
		return *w
	}
	return "closed"
}

// stop ends the loop (the connection closed).
func (p *port) stop() {
	p.stopping.Store(true)
	p.deadOnce.Do(func() { close(p.dead) })
	var one = [8]byte{1}
	unix.Write(p.kickFD, one[:])
}

func (p *port) notifyApp() {
	if p.notifyFD >= 0 {
		var one = [8]byte{1}
		unix.Write(p.notifyFD, one[:])
	}
}

// destroy releases everything: the handle (the port leaves the switch),
// the mapping and the descriptors. The loop must have ended.
func (p *port) destroy() {
	for _, m := range p.tx {
		m.k.OnWake(nil)
	}
	for _, m := range p.rx {
		m.k.OnWake(nil)
	}
	if p.h != nil {
		p.h.Close()
		p.h = nil
	}
	if p.kick != nil {
		p.kick.Close()
		p.kick = nil
	}
	for _, fd := range []*int{&p.memfd, &p.kickFD, &p.notifyFD} {
		if *fd >= 0 {
			unix.Close(*fd)
			*fd = -1
		}
	}
	if p.mem != nil {
		unix.Munmap(p.mem)
		p.mem = nil
	}
}

// run is the sync loop: sync every bound ring while there is work, poll a
// little after the last work, then ask the application to kick and sleep.
func (p *port) run() {
	var idleSince time.Time
	for !p.stopping.Load() && !p.isDead() {
		if p.syncAll() {
			idleSince = time.Time{}
			continue
		}
		if p.busyPoll > 0 {
			now := time.Now()
			if idleSince.IsZero() {
				idleSince = now
			}
			if now.Sub(idleSince) < p.busyPoll {
				runtime.Gosched()
				unix.RawSyscall(unix.SYS_SCHED_YIELD, 0, 0, 0)
				continue
			}
		}
		// Sleep: ask for kicks, then look once more, so that a head
		// published before the flag was seen is not missed.
		p.sleeping.Store(true)
		p.setKernNeedKick(true)
		if p.syncAll() {
			p.sleeping.Store(false)
			p.setKernNeedKick(false)
			idleSince = time.Time{}
			continue
		}
		// A regulator holding frames back wakes the loop when it may
		// let the next one go.
		if err := p.kick.WaitRead(p.throttle, p.ready); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			p.sleeping.Store(false)
			return
		}
		p.sleeping.Store(false)
		p.setKernNeedKick(false)
		idleSince = time.Time{}
	}
}

func (p *port) isDead() bool {
	select {
	case <-p.dead:
		return true
	default:
		return false
	}
}

func (p *port) setKernNeedKick(on bool) {
	for _, m := range p.tx {
		p.region.SetKernNeedKick(m.i, on)
	}
	if len(p.rx) == 0 {
		return
	}
	p.rxMu.Lock()
	for _, m := range p.rx {
		p.region.SetKernNeedKick(m.i, on && p.rxNeedsKick(m))
	}
	p.rxMu.Unlock()
}

// rxNeedsKick says whether a sleeping loop must be kicked when the
// application releases slots of RX ring m. Not while the ring has room:
// the next delivery syncs the ring inline (rxInline), reading the
// releases then. Yes once it is half full, so that releases reach the
// switch before it runs out of room, and always when a rate paces the ring
// (the loop alone syncs it). p.rxMu held.
func (p *port) rxNeedsKick(m *mirror) bool {
	return p.rate.Load() != nil || m.k.Dist(m.k.Ring.Head, m.k.Ring.Tail) >= m.k.NumSlots/2
}

// syncAll syncs every bound ring once; true if anything moved.
func (p *port) syncAll() bool {
	work := false
	p.throttle = 0
	for _, m := range p.tx {
		w, ok := p.txsync(m)
		if !ok {
			return false
		}
		work = work || w
	}
	if len(p.rx) > 0 {
		p.rxMu.Lock()
		defer p.rxMu.Unlock()
	}
	for _, m := range p.rx {
		w, ok := p.rxsync(m)
		if !ok {
			return false
		}
		work = work || w
	}
	return work
}

// rxInline runs on the goroutine that just delivered frames into RX ring m
// (the switch's notify, through OnWake): it copies them into the
// application's ring and wakes the application itself, so a frame crosses
// the switch with no second goroutine to wake. When the loop holds the
// rings, or a rate regulates them (the loop's to pace), it wakes the loop
// instead.
func (p *port) rxInline(m *mirror) {
	if p.rate.Load() != nil || p.stopping.Load() || !p.rxMu.TryLock() {
		p.wake()
		return
	}
	if !p.isDead() {
		p.rxsync(m)
		if p.sleeping.Load() {
			p.region.SetKernNeedKick(m.i, p.rxNeedsKick(m))
		}
	}
	p.rxMu.Unlock()
}

// between reports whether x lies in the circular interval [lo, hi].
func between(lo, x, hi uint32) bool {
	if lo <= hi {
		return lo <= x && x <= hi
	}
	return x >= lo || x <= hi
}

// txsync imports the frames in [old head, head) from the region and runs
// the ring's txsync. ok is false when the port was put in error.
func (p *port) txsync(m *mirror) (work, ok bool) {
	head, cur := p.region.Atok(m.i)
	r, k := m.k.Ring, m.k
	n := k.NumSlots
	if head == r.Head && cur == r.Cur && k.NrHwtail.Load() == r.Tail {
		return false, true
	}
	// The TX prologue's rule (nm_txsync_prologue), checked before any slot
	// is read: rhead <= head <= cur <= rtail, circularly.
	if head >= n || cur >= n || !between(r.Head, head, r.Tail) || !between(head, cur, r.Tail) {
		p.fail(syscall.EINVAL, fmt.Sprintf("TX ring %d: head %d cur %d outside [%d, %d] of %d slots", m.i, head, cur, r.Head, r.Tail, n))
		return false, false
	}
	frames := uint64(0)
	for s := r.Head; s != head; s = k.Next(s) {
		idx, ln, fl := p.region.Slot(m.i, s)
		src := p.region.Buf(idx)
		if src == nil {
			p.fail(syscall.EINVAL, fmt.Sprintf("TX ring %d slot %d: buffer index %d outside [2, %d)", m.i, s, idx, p.region.Layout().NumBufs))
			return false, false
		}
		dst := r.Buf(s)
		if int(ln) > len(dst) || int(ln) > len(src) {
			p.fail(syscall.EINVAL, fmt.Sprintf("TX ring %d slot %d: length %d above the buffer size %d", m.i, s, ln, len(dst)))
			return false, false
		}
		copy(dst[:ln], src[:ln])
		sl := &r.Slot[s]
		sl.Len = ln
		sl.Flags = fl & nmport.MoreFrag
		if fl&nmport.MoreFrag == 0 {
			frames++
		}
	}
	r.Head, r.Cur = head, cur
	if err := k.TryGet(); err != nil {
		// Another sync holds the ring (never, since only this loop syncs
		// it) or the ring is being torn down: try again later.
		return false, true
	}
	err := k.SyncTx(netmap.ForceReclaim)
	k.Put()
	if err != nil {
		p.fail(errno.Of(err), fmt.Sprintf("TX ring %d: %v", m.i, err))
		return false, false
	}
	p.txFrames.Add(frames)
	p.publish(m)
	return true, true
}

// rxsync releases what the application consumed, runs the ring's rxsync,
// and exports the frames that arrived into the region.
func (p *port) rxsync(m *mirror) (work, ok bool) {
	head, cur := p.region.Atok(m.i)
	r, k := m.k.Ring, m.k
	n := k.NumSlots
	if head == r.Head && cur == r.Cur && k.NrHwtail.Load() == r.Tail && m.shown == r.Tail {
		return false, true
	}
	// nm_rxsync_prologue: hwcur <= head <= cur <= hwtail, against what the
	// application was shown.
	if head >= n || cur >= n || !between(r.Head, head, m.pubTl) || !between(head, cur, m.pubTl) {
		p.fail(syscall.EINVAL, fmt.Sprintf("RX ring %d: head %d cur %d outside [%d, %d] of %d slots", m.i, head, cur, r.Head, m.pubTl, n))
		return false, false
	}
	moved := head != r.Head
	r.Head, r.Cur = head, cur
	if err := k.TryGet(); err != nil {
		return false, true
	}
	err := k.SyncRx(netmap.ForceRead)
	k.Put()
	if err != nil {
		p.fail(errno.Of(err), fmt.Sprintf("RX ring %d: %v", m.i, err))
		return false, false
	}
	frames := uint64(0)
	reg := p.regulator()
	var now time.Time
	if reg != nil {
		now = time.Now()
	}
	s, first, start, size := m.shown, m.shown, true, 0
	for ; s != r.Tail; s = k.Next(s) {
		if start {
			if reg != nil && !reg.Allow(now) {
				p.throttle = reg.Wait()
				break
			}
			first = s
		}
		sl := &r.Slot[s]
		idx, _, _ := p.region.Slot(m.i, s)
		dst := p.region.Buf(idx)
		if dst == nil {
			p.fail(syscall.EINVAL, fmt.Sprintf("RX ring %d slot %d: buffer index %d outside [2, %d)", m.i, s, idx, p.region.Layout().NumBufs))
			return false, false
		}
		src := r.Buf(s)
		ln := int(sl.Len)
		if ln > len(src) {
			ln = len(src)
		}
		if ln > len(dst) {
			ln = len(dst)
		}
		copy(dst[:ln], src[:ln])
		p.region.SetSlot(m.i, s, uint16(ln), sl.Flags&nmport.MoreFrag)
		size += ln
		start = sl.Flags&nmport.MoreFrag == 0
		if start {
			frames++
			if reg != nil {
				reg.Charge(size)
			}
			size = 0
		}
	}
	if !start {
		s = first // a frame is shown whole, never its first slots alone
	}
	work = moved || s != m.shown
	m.shown = s
	p.rxFrames.Add(frames)
	p.publishTail(m, m.shown)
	return work, true
}

// regulator is the loop's regulator for the rate SetRate asked for, nil for
// none.
func (p *port) regulator() *ifcore.Regulator {
	r := p.rate.Load()
	if r != p.regFor {
		p.regFor, p.reg = r, nil
		if r != nil {
			p.reg = ifcore.NewRegulator(*r, time.Now())
		}
	}
	return p.reg
}

// publish shows the application the ring's new hwcur/hwtail, and wakes it
// if it asked to be.
func (p *port) publish(m *mirror) { p.publishTail(m, m.k.Ring.Tail) }

func (p *port) publishTail(m *mirror, tail uint32) {
	hc := m.k.NrHwcur.Load()
	if tail == m.pubTl && hc == m.pubHc {
		return
	}
	m.pubTl, m.pubHc = tail, hc
	p.region.SetKtoa(m.i, hc, tail)
	if p.region.ApplNeedKick(m.i) {
		p.notifyApp()
	}
}
