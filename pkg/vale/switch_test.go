package vale

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/epair-cni/epair/pkg/netmap"
)

func TestPersistentPorts(t *testing.T) {
	nm, r := newTestRegistry(t, nil)
	if err := r.NewIf("pp0", PortGeometry{}); err != nil {
		t.Fatal(err)
	}
	if err := r.NewIf("pp0", PortGeometry{}); !errors.Is(err, syscall.EEXIST) {
		t.Fatalf("second NEWIF: %v", err)
	}
	for _, bad := range []string{"", "vale0", "a:b", "way-too-long-port-name"} {
		if err := r.NewIf(bad, PortGeometry{}); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("NEWIF %q: %v, want EINVAL", bad, err)
		}
	}
	if err := r.NewIf("pp1", PortGeometry{TxSlots: 4}); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("NEWIF with 4 slots: %v", err)
	}
	// Not attached yet: REGIF on vale0:pp0 refuses to shadow it.
	h := nm.Open()
	if err := h.Register(&netmap.Req{Name: "vale0:pp0", Version: netmap.API, Flags: netmap.RegAllNIC}); !errors.Is(err, syscall.EBUSY) {
		t.Fatalf("regif of an unattached persistent port: %v", err)
	}
	h.Close()
	if err := r.Attach("vale0:pp0", false); err != nil {
		t.Fatal(err)
	}
	if err := r.Attach("vale1:pp0", false); !errors.Is(err, syscall.EBUSY) {
		t.Fatalf("attach to a second switch: %v", err)
	}
	if err := r.DelIf("pp0"); !errors.Is(err, syscall.EBUSY) {
		t.Fatalf("DELIF while attached: %v", err)
	}
	pi, _ := r.PortInfo("vale0:pp0")
	if pi.Kind != PortPersistent || pi.Active {
		t.Fatalf("persistent port before open: %+v", pi)
	}
	p := openPort(t, nm, "vale0:pp0", mac(1))
	a := openPort(t, nm, "vale0:a", mac(2))
	f := ethFrame(bcast, p.mac, 64)
	p.send(f)
	a.expect(f)
	f2 := ethFrame(p.mac, a.mac, 64)
	a.send(f2)
	p.expect(f2)
	p.h.Close()
	// It survives its users.
	if pi, err := r.PortInfo("vale0:pp0"); err != nil || pi.Active {
		t.Fatalf("after close: %+v %v", pi, err)
	}
	a.send(f2) // to a closed port: counted, not delivered
	if pi, _ := r.PortInfo("vale0:a"); pi.Counters.Drops[DropNoDest] != 1 {
		t.Fatalf("frame to a closed port: %+v", pi.Counters)
	}
	if err := r.Detach("vale0:pp0"); err != nil {
		t.Fatal(err)
	}
	if err := r.Detach("vale0:a"); !errors.Is(err, syscall.EBUSY) {
		t.Fatalf("detach of an ephemeral port: %v", err)
	}
	// Open by its interface name while detached, then DELIF is busy.
	u := openPort(t, nm, "pp0", mac(1))
	if err := r.DelIf("pp0"); !errors.Is(err, syscall.EBUSY) {
		t.Fatalf("DELIF while open: %v", err)
	}
	u.h.Close()
	if err := r.DelIf("pp0"); err != nil {
		t.Fatal(err)
	}
	if err := r.DelIf("pp0"); !errors.Is(err, syscall.ENXIO) {
		t.Fatalf("second DELIF: %v", err)
	}
	// Through netmap's bridge commands.
	h = nm.Open()
	defer h.Close()
	if err := h.Register(&netmap.Req{Name: "pp2", Version: netmap.API, Cmd: netmap.BdgNewIf, TxSlots: 32, RxSlots: 32}); err != nil {
		t.Fatal(err)
	}
	if err := h.Register(&netmap.Req{Name: "pp2", Version: netmap.API, Cmd: netmap.BdgDelIf}); err != nil {
		t.Fatal(err)
	}
	if err := h.Register(&netmap.Req{Name: "vale0:a", Version: netmap.API, Cmd: netmap.BdgVnetHdr, Arg1: 12}); !errors.Is(err, syscall.EOPNOTSUPP) {
		t.Fatalf("vnet header: %v", err)
	}
}

func TestSwitchLifecycleAndLimits(t *testing.T) {
	nm, r := newTestRegistry(t, func(o *Options) { o.MaxSwitches = 2 })
	cfg := DefaultConfig()
	cfg.MaxPorts = 3
	sw, err := r.CreateSwitch("vale9", cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.CreateSwitch("vale9", cfg); !errors.Is(err, syscall.EEXIST) {
		t.Fatalf("duplicate switch: %v", err)
	}
	bad := cfg
	bad.BatchSize = 0
	if _, err := r.CreateSwitch("vale8", bad); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("bad config: %v", err)
	}
	if _, err := r.CreateSwitch("eth0", cfg); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("bad name: %v", err)
	}
	for i := 0; i < 3; i++ {
		openPort(t, nm, fmt.Sprintf("vale9:p%d", i), mac(byte(i)))
	}
	h := nm.Open()
	if err := h.Register(&netmap.Req{Name: "vale9:p3", Version: netmap.API, Flags: netmap.RegAllNIC}); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("port beyond MaxPorts: %v", err)
	}
	h.Close()
	if sw.Config().MaxPorts != 3 {
		t.Fatal("config not kept")
	}
	if err := r.DestroySwitch("vale9"); !errors.Is(err, syscall.EBUSY) {
		t.Fatalf("destroy with ports: %v", err)
	}
	openPort(t, nm, "vale1:x", mac(9))
	h = nm.Open()
	if err := h.Register(&netmap.Req{Name: "vale2:x", Version: netmap.API, Flags: netmap.RegAllNIC}); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("switch beyond MaxSwitches: %v", err)
	}
	h.Close()
	if err := r.DestroySwitch("nope0"); !errors.Is(err, syscall.ENXIO) {
		t.Fatalf("destroy unknown: %v", err)
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	nm := netmap.New(netmap.Config{})
	o := DefaultOptions()
	o.MaxSwitches = 0
	if _, err := New(nm, o); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("max switches 0: %v", err)
	}
	o = DefaultOptions()
	o.Defaults.FDBSize = 3
	if _, err := New(nm, o); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("bad defaults: %v", err)
	}
	o = DefaultOptions()
	o.PortGeometry.BufSize = 1
	if _, err := New(nm, o); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("bad geometry: %v", err)
	}
	if _, err := New(nil, DefaultOptions()); !errors.Is(err, syscall.EINVAL) {
		t.Fatal("nil netmap accepted")
	}
}

// manyPorts opens n ports, teaches the switch every address, then has
// every port send one unicast frame to its neighbour and one broadcast.
func manyPorts(t *testing.T, n int) {
	nm, r := newTestRegistry(t, func(o *Options) {
		o.Defaults.MaxPorts = n
		o.Defaults.FDBSize = 4096 // room for n addresses without evictions
		o.PortGeometry = PortGeometry{TxRings: 1, RxRings: 1, TxSlots: 8, RxSlots: 8, BufSize: 256}
	})
	ports := make([]*userPort, n)
	for i := range ports {
		ports[i] = openPort(t, nm, fmt.Sprintf("vale0:p%d", i), mac(byte(i>>8), byte(i)))
	}
	h := nm.Open()
	if err := h.Register(&netmap.Req{Name: "vale0:extra", Version: netmap.API, Flags: netmap.RegAllNIC}); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("port %d: %v, want ENOSPC", n+1, err)
	}
	h.Close()
	flood := func(from int) {
		f := ethFrame(bcast, ports[from].mac, 60)
		ports[from].send(f)
		for j, q := range ports {
			if got := q.recv(); (j == from) != (len(got) == 0) {
				t.Fatalf("flood from %d: port %d got %d frames", from, j, len(got))
			}
		}
	}
	flood(0)                      // learns port 0, reaches everyone
	for i, p := range ports[1:] { // learn the others with unicast to port 0
		f := ethFrame(ports[0].mac, p.mac, 60)
		p.send(f)
		ports[0].expect(f)
		_ = i
	}
	for i, p := range ports {
		f := ethFrame(ports[(i+1)%n].mac, p.mac, 64)
		p.send(f)
		ports[(i+1)%n].expect(f)
	}
	flood(n - 1)
	sw, _ := r.Switch("vale0")
	if fdb, _ := sw.FDB(); len(fdb) != n {
		t.Fatalf("fdb has %d entries, want %d", len(fdb), n)
	}
	c := sw.Counters()
	if c.Dropped() != 0 || c.InFrames != uint64(2*n+1) || c.OutFrames != uint64(4*n-3) {
		t.Fatalf("counters %+v", c)
	}
}

func TestPorts254(t *testing.T) { manyPorts(t, 254) }
func TestPorts1024(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	manyPorts(t, 1024)
}

// recordingDeliverer is the seam for output queues: it keeps copies.
type recordingDeliverer struct {
	mu     sync.Mutex
	frames [][]byte
	limit  int
}

func (d *recordingDeliverer) Deliver(b *Delivery) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for i := 0; i < b.Len() && len(d.frames) < d.limit; i++ {
		buf := make([]byte, b.Frame(i).Len)
		buf = buf[:b.CopyFrame(i, buf)]
		d.frames = append(d.frames, buf)
		n++
	}
	return n
}

func TestDelivererHook(t *testing.T) {
	nm, r := newTestRegistry(t, func(o *Options) { o.Defaults.MaxFrame = 4000 })
	a := openPort(t, nm, "vale0:a", mac(1))
	b := openPort(t, nm, "vale0:b", mac(2))
	sw, _ := r.Switch("vale0")
	d := &recordingDeliverer{limit: 2}
	if err := sw.SetDeliverer("b", d); err != nil {
		t.Fatal(err)
	}
	if err := sw.SetDeliverer("zz", d); !errors.Is(err, syscall.ENXIO) {
		t.Fatalf("deliverer on unknown port: %v", err)
	}
	f1, f2, f3 := ethFrame(bcast, a.mac, 64), ethFrame(bcast, a.mac, 3000), ethFrame(bcast, a.mac, 80)
	a.sendFrag(1000, f1, f2, f3)
	b.expect() // went to the hook instead of the ring
	if len(d.frames) != 2 || !bytes.Equal(d.frames[0], f1) || !bytes.Equal(d.frames[1], f2) {
		t.Fatalf("hook got %d frames", len(d.frames))
	}
	pb, _ := r.PortInfo("vale0:b")
	if pb.Counters.OutFrames != 2 || pb.Counters.OutBytes != 3064 || pb.Counters.Drops[DropNoSpace] != 1 {
		t.Fatalf("counters %+v", pb.Counters)
	}
	sw.SetDeliverer("b", nil)
	a.send(f1)
	b.expect(f1)
}

// sendToPort is a custom lookup: the destination port is the last byte
// of the destination MAC.
type sendToPort struct{ detached atomic.Int32 }

func (l *sendToPort) Lookup(src uint16, frames []Frame, now int64) {
	for i := range frames {
		frames[i].Dst = uint16(frames[i].Data[5])
	}
}
func (l *sendToPort) PortDetached(uint16) { l.detached.Add(1) }

func TestCustomLookup(t *testing.T) {
	nm, r := newTestRegistry(t, nil)
	a := openPort(t, nm, "vale0:a", mac(1))
	b := openPort(t, nm, "vale0:b", mac(2))
	c := openPort(t, nm, "vale0:c", mac(3))
	sw, _ := r.Switch("vale0")
	l := &sendToPort{}
	sw.SetLookup(l)
	if _, err := sw.FDB(); !errors.Is(err, syscall.EOPNOTSUPP) {
		t.Fatalf("fdb with custom lookup: %v", err)
	}
	f := ethFrame(mac(2), a.mac, 64) // port index 2 = c
	a.send(f)
	c.expect(f)
	b.expect()
	c.h.Close()
	if l.detached.Load() != 1 {
		t.Fatal("PortDetached not called")
	}
	a.send(f) // index 2 is gone now
	if pa, _ := r.PortInfo("vale0:a"); pa.Counters.Drops[DropNoDest] != 1 {
		t.Fatalf("counters %+v", pa.Counters)
	}
	sw.SetLookup(nil)
	if _, err := sw.FDB(); err != nil {
		t.Fatal(err)
	}
}

// Ports come and go (ephemeral, persistent, bwrap) while two pairs of ports
// exchange traffic: nothing deadlocks and the pairs lose no frame.
func TestAttachDetachDuringTraffic(t *testing.T) {
	nm, r := newTestRegistry(t, nil)
	if err := r.NewIf("pers", PortGeometry{TxSlots: 16, RxSlots: 16}); err != nil {
		t.Fatal(err)
	}
	type pair struct{ tx, rx *userPort }
	var pairs []pair
	for i := 0; i < 2; i++ {
		s := openPort(t, nm, fmt.Sprintf("vale0:s%d", i), mac(byte(10+2*i)))
		d := openPort(t, nm, fmt.Sprintf("vale0:d%d", i), mac(byte(11+2*i)))
		d.send(ethFrame(bcast, d.mac, 60)) // learn d
		pairs = append(pairs, pair{s, d})
	}
	for _, p := range pairs {
		p.tx.recv()
		p.rx.recv()
	}
	for _, p := range pairs { // and drain the learning floods
		p.tx.recv()
		p.rx.recv()
	}
	var base [2]uint64
	for i, p := range pairs {
		pi, _ := r.PortInfo(p.rx.name)
		base[i] = pi.Counters.OutFrames
	}
	const cycles = 50
	var churns, bwChurns atomic.Int64
	var churnDone atomic.Bool
	var churn sync.WaitGroup
	churn.Add(2)
	go func() { // ephemeral and persistent ports
		defer churn.Done()
		for i := 0; i < cycles; i++ {
			h := nm.Open()
			if err := h.Register(&netmap.Req{Name: fmt.Sprintf("vale0:e%d", i%3), Version: netmap.API, Flags: netmap.RegAllNIC}); err != nil {
				t.Errorf("churn register: %v", err)
			}
			if err := r.Attach("vale0:pers", false); err != nil {
				t.Errorf("churn attach: %v", err)
			}
			h.Close()
			if err := r.Detach("vale0:pers"); err != nil {
				t.Errorf("churn detach: %v", err)
			}
			churns.Add(1)
		}
	}()
	go func() { // bwrap'd adapters
		defer churn.Done()
		g, _ := newGeneric(t, "eth0", nil)
		g.NA().Get()
		defer g.NA().Put()
		for i := 0; i < cycles; i++ {
			if err := r.AttachAdapter("vale0:eth0", g, false); err != nil {
				t.Errorf("churn attach adapter: %v", err)
				return
			}
			if err := r.Detach("vale0:eth0"); err != nil {
				t.Errorf("churn detach adapter: %v", err)
				return
			}
			bwChurns.Add(1)
		}
	}()
	go func() { churn.Wait(); churnDone.Store(true) }()
	const rounds, burst = 50, 16
	var sent [2]atomic.Int64
	var wg sync.WaitGroup
	for i, p := range pairs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; n < rounds || !churnDone.Load(); n++ {
				sent[i].Add(burst)
				var fs [][]byte
				for k := 0; k < burst; k++ {
					fs = append(fs, ethFrame(p.rx.mac, p.tx.mac, 60+k+i))
				}
				p.tx.send(fs...)
				var got [][]byte
				deadline := time.Now().Add(5 * time.Second)
				for len(got) < burst && time.Now().Before(deadline) {
					got = append(got, p.rx.recv()...)
				}
				if len(got) != burst {
					t.Errorf("pair %d round %d: %d of %d frames", i, n, len(got), burst)
					return
				}
				for k := range fs {
					if !bytes.Equal(got[k], fs[k]) {
						t.Errorf("pair %d round %d: frame %d differs", i, n, k)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	churn.Wait()
	if churns.Load() != cycles || bwChurns.Load() != cycles {
		t.Errorf("churn incomplete: %d port and %d adapter cycles", churns.Load(), bwChurns.Load())
	}
	t.Logf("%d port and %d adapter attach/detach cycles during %d and %d frames", churns.Load(), bwChurns.Load(), sent[0].Load(), sent[1].Load())
	for i, p := range pairs {
		pi, _ := r.PortInfo(p.rx.name)
		if pi.Counters.Dropped() != 0 || pi.Counters.OutFrames-base[i] != uint64(sent[i].Load()) {
			t.Errorf("%s counters %+v", p.rx.name, pi.Counters)
		}
	}
	if err := r.DelIf("pers"); err != nil {
		t.Fatal(err)
	}
}

// Receivers come and go while a sender floods: deliveries into a port
// whose user is closing it never touch its freed rings (checked by -race),
// and the port that stays loses nothing.
func TestFloodWhilePortsClose(t *testing.T) {
	nm, r := newTestRegistry(t, nil)
	src := openPort(t, nm, "vale0:src", mac(1))
	dst := openPort(t, nm, "vale0:dst", mac(2))
	done := make(chan struct{})
	var cycles int
	go func() {
		defer close(done)
		for i := 0; i < 100; i++ {
			h := nm.Open()
			if err := h.Register(&netmap.Req{Name: fmt.Sprintf("vale0:tmp%d", i%4), Version: netmap.API, Flags: netmap.RegAllNIC}); err != nil {
				t.Errorf("register: %v", err)
			}
			h.Close()
			cycles++
		}
	}()
	sent, got := 0, 0
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
		}
		var fs [][]byte
		for k := 0; k < 8; k++ {
			fs = append(fs, ethFrame(bcast, src.mac, 60))
		}
		sent += src.send(fs...)
		got += len(dst.recv())
	}
	got += len(dst.recv())
	if got != sent {
		t.Fatalf("dst got %d of %d broadcasts", got, sent)
	}
	if pi, _ := r.PortInfo("vale0:dst"); pi.Counters.Dropped() != 0 {
		t.Fatalf("dst counters %+v", pi.Counters)
	}
	t.Logf("%d frames flooded during %d port open/close cycles", sent, cycles)
}

// Several senders fill one destination ring concurrently through leases:
// every frame arrives intact or is counted as a no-space drop, and each
// sender's frames arrive in order.
func TestConcurrentSendersOneDestination(t *testing.T) {
	nm, r := newTestRegistry(t, func(o *Options) { o.PortGeometry.RxSlots = 512 })
	dst := openPort(t, nm, "vale0:dst", mac(0xd))
	const senders, perSender, burst = 4, 3000, 8
	srcs := make([]*userPort, senders)
	for i := range srcs {
		srcs[i] = openPort(t, nm, fmt.Sprintf("vale0:s%d", i), mac(byte(i+1)))
	}
	dst.send(ethFrame(bcast, dst.mac, 60)) // learn dst
	for _, s := range srcs {
		s.recv()
	}
	frame := func(s, seq int) []byte {
		f := ethFrame(dst.mac, mac(byte(s+1)), 64+seq%32)
		f[14], f[15], f[16], f[17] = byte(s), byte(seq>>8), byte(seq), byte(seq*7)
		for k := 18; k < len(f); k++ {
			f[k] = byte(seq + k)
		}
		return f
	}
	var wg sync.WaitGroup
	for i, s := range srcs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := 0; seq < perSender; seq += burst {
				var fs [][]byte
				for k := 0; k < burst; k++ {
					fs = append(fs, frame(i, seq+k))
				}
				if n := s.send(fs...); n != burst {
					t.Errorf("sender %d: TX ring full", i)
					return
				}
			}
		}()
	}
	stop := make(chan struct{})
	recvDone := make(chan struct{})
	last := make([]int, senders)
	for i := range last {
		last[i] = -1
	}
	got := 0
	go func() {
		defer close(recvDone)
		for {
			for _, f := range dst.recv() {
				s, seq := int(f[14]), int(f[15])<<8|int(f[16])
				if s >= senders || seq <= last[s] || !bytes.Equal(f, frame(s, seq)) {
					t.Errorf("frame from %d seq %d after %d: corrupt or out of order", s, seq, last[s])
					return
				}
				last[s] = seq
				got++
			}
			select {
			case <-stop:
				for _, f := range dst.recv() {
					_ = f
					got++
				}
				return
			default:
			}
		}
	}()
	wg.Wait()
	close(stop)
	<-recvDone
	pi, _ := r.PortInfo("vale0:dst")
	if uint64(got)+pi.Counters.Drops[DropNoSpace] != senders*perSender || pi.Counters.OutFrames != uint64(got) {
		t.Fatalf("received %d + dropped %d != sent %d (%+v)", got, pi.Counters.Drops[DropNoSpace], senders*perSender, pi.Counters)
	}
	t.Logf("%d frames received, %d dropped for lack of space", got, pi.Counters.Drops[DropNoSpace])
}

// countingTap records the frames it was given, by direction.
type countingTap struct {
	mu     sync.Mutex
	rx, tx [][]byte
	dst    []uint16 // the lookup's decision of each rx frame
}

func (c *countingTap) Tapped(d *Delivery, tx bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := 0; i < d.Len(); i++ {
		b := make([]byte, d.Frame(i).Len)
		b = b[:d.CopyFrame(i, b)]
		if tx {
			c.tx = append(c.tx, b)
		} else {
			c.rx = append(c.rx, b)
			c.dst = append(c.dst, d.Frame(i).Dst)
		}
	}
}

// TestTap: a tap sees every frame a port sends (with the lookup's decision, drops too) and
// every frame handed to it; two taps each see all of them; a removed tap sees nothing more.
func TestTap(t *testing.T) {
	nm, r := newTestRegistry(t, nil)
	a := openPort(t, nm, "vale0:a", mac(1))
	b := openPort(t, nm, "vale0:b", mac(2))
	sw, _ := r.Switch("vale0")
	if _, err := sw.AddTap("zz", &countingTap{}); !errors.Is(err, syscall.ENXIO) {
		t.Fatalf("tap on an unknown port: %v", err)
	}
	t1, t2 := &countingTap{}, &countingTap{}
	rm1, err := sw.AddTap("a", t1)
	if err != nil {
		t.Fatal(err)
	}
	rm2, err := sw.AddTap("a", t2)
	if err != nil {
		t.Fatal(err)
	}
	out := ethFrame(bcast, a.mac, 64)
	a.send(out)
	b.expect(out)
	in := ethFrame(a.mac, b.mac, 80)
	b.send(in)
	a.expect(in)
	self := ethFrame(a.mac, a.mac, 60) // to itself: dropped by the lookup
	a.send(self)
	for _, tp := range []*countingTap{t1, t2} {
		if len(tp.rx) != 2 || !bytes.Equal(tp.rx[0], out) || !bytes.Equal(tp.rx[1], self) || tp.dst[0] != DstBroadcast {
			t.Fatalf("tap rx %d frames (dst %v), want the broadcast and the dropped one", len(tp.rx), tp.dst)
		}
		if len(tp.tx) != 1 || !bytes.Equal(tp.tx[0], in) {
			t.Fatalf("tap tx %d frames, want the one b sent to a", len(tp.tx))
		}
	}
	rm1()
	rm1()
	a.send(out)
	b.expect(out)
	if len(t1.rx) != 2 || len(t2.rx) != 3 {
		t.Fatalf("after removing tap 1: %d and %d rx frames, want 2 and 3", len(t1.rx), len(t2.rx))
	}
	rm2()
}
