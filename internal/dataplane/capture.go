package dataplane

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/epair-cni/epair/pkg/pcapfilter"
	"github.com/epair-cni/epair/pkg/vale"
)

// DefaultCaptureBuffer is the number of frames a capture holds between the switch and its
// reader (CaptureOptions.Buffer).
const DefaultCaptureBuffer = 512

// A capture's buffers: Buffer of them hold a frame of the switch's MTU (with its Ethernet
// header and a VLAN tag); longer frames (the super-frames of an offload switch), when the
// snap length keeps more, take one of at most bigCaptures buffers of the snap length. A
// capture of a 1500-byte switch holds 0.75 MiB + 1 MiB with the defaults, not 512 × 64 KiB.
const (
	bigCaptures = 16
	bigCapture  = 1 << 30 // marks a capRecord.idx as an index into Capture.big
)

// ErrCaptureClosed is returned by Capture.Next once the capture is closed.
var ErrCaptureClosed = errors.New("capture closed")

// CaptureOptions choose what a capture takes.
type CaptureOptions struct {
	// RX takes the frames the switch receives from the port (dropped ones too, marked);
	// TX the frames it hands to the port. Neither set means both.
	RX, TX bool
	// SnapLen is how many bytes of each frame are kept; 0 keeps whole frames (the
	// switch's largest, 64 KiB on an offload switch).
	SnapLen int
	// Filter selects the frames kept (tcpdump syntax, pkg/pcapfilter); nil keeps all.
	// Frames it does not match take no buffer and are not counted as lost.
	Filter *pcapfilter.Filter
	// Buffer is how many frames wait for the reader; 0 means DefaultCaptureBuffer.
	// When the reader is slower, frames are counted as Lost, never waited for.
	Buffer int
}

// CapturedFrame is one frame of a capture.
type CapturedFrame struct {
	Time time.Time
	// TX: the switch handed the frame to the port; otherwise it came from the port.
	TX bool
	// Dropped: the switch did not forward the frame (the lookup's DstDrop, or port
	// security's refusal when Refused), or, for a TX frame, the port's output queue
	// refused it; Reason names why, as the drop counters do ("no-destination",
	// "queue-full", or a Refusal such as "spoofed-ip").
	Dropped, Refused bool
	Reason           string
	// Len is the frame's length (Ethernet header to the end of the payload, without the
	// virtio-net header of an offload switch); Data its first SnapLen bytes, valid until
	// the next call of Next.
	Len  int
	Data []byte
}

// Capture is a running capture of one switch port (Dataplane.Capture): a tap on the
// switch that copies the port's frames into a fixed set of buffers, without allocating
// or blocking on the packet path. Close removes the tap.
type Capture struct {
	remove func()
	port   *Port // the pod port whose captures count this one; nil for the host port
	// release takes the capture off its port's count and tells the fast path (nil: none).
	release func()
	filter  *pcapfilter.Filter
	hdrLen  int
	rx, tx  bool
	bufs    [][]byte // Buffer buffers of small bytes
	small   int      // min(SnapLen, the switch's MTU + Ethernet header + VLAN tag)
	free    chan int32
	big     [][]byte // with a SnapLen above small: a few of SnapLen bytes, for longer frames
	bigFree chan int32
	ready   chan capRecord
	closed  chan struct{}
	once    sync.Once
	held    int32 // buffer of the frame Next returned last, or -1
	lost    atomic.Uint64
}

type capRecord struct {
	idx      int32
	len, n   int32
	tx       bool
	full     bool // a transmitted frame the port refused (queue-full)
	dst      uint16
	reason   uint8
	nanotime int64
}

// Capture starts capturing port name ("<switch>:<port>": a pod port or the host port).
func (d *Dataplane) Capture(name string, o CaptureOptions) (*Capture, error) {
	swName, port, err := vale.ParseName(name)
	if err != nil {
		return nil, fmt.Errorf("capture %s: %w: %w", name, ErrInvalid, err)
	}
	if o.SnapLen < 0 || o.Buffer < 0 || o.Buffer > 1<<16 {
		return nil, fmt.Errorf("capture %s: snapLen %d, buffer %d: want snapLen ≥ 0 and buffer in [0, 65536]: %w", name, o.SnapLen, o.Buffer, ErrInvalid)
	}
	// The switch under d.mu; the buffers (up to tens of MiB on an offload switch) are made
	// without it, so attaches and detaches do not wait for them. A switch removed
	// meanwhile has no ports left: AddTap then fails.
	s, err := d.captureSwitch(name, swName)
	if err != nil {
		return nil, err
	}
	maxFrame := s.sw.Config().MaxFrame
	if o.SnapLen == 0 || o.SnapLen > maxFrame {
		o.SnapLen = maxFrame
	}
	if o.Buffer == 0 {
		o.Buffer = DefaultCaptureBuffer
	}
	if !o.RX && !o.TX {
		o.RX, o.TX = true, true
	}
	small := min(o.SnapLen, s.cfg.mtu()+etherVLANHeader)
	nbig := 0
	if o.SnapLen > small {
		nbig = min(o.Buffer, bigCaptures)
	}
	c := &Capture{hdrLen: s.hdrLen, small: small, rx: o.RX, tx: o.TX, filter: o.Filter, bufs: make([][]byte, o.Buffer),
		free: make(chan int32, o.Buffer), big: make([][]byte, nbig), bigFree: make(chan int32, nbig),
		ready: make(chan capRecord, o.Buffer+nbig), closed: make(chan struct{}), held: -1}
	for i := range c.bufs {
		c.bufs[i] = make([]byte, small)
		c.free <- int32(i)
	}
	for i := range c.big {
		c.big[i] = make([]byte, o.SnapLen)
		c.bigFree <- int32(i)
	}
	// The tap goes on under d.mu, so the pod port it is counted for (d.ports) is the one
	// the switch knows by that name: a port leaves d.ports before it leaves the switch,
	// and its link cannot be attached again before it has left.
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil, fmt.Errorf("capture %s: %w", name, ErrClosed)
	}
	c.remove, err = s.sw.AddTap(port, c)
	if err != nil {
		d.mu.Unlock()
		return nil, fmt.Errorf("capture %s: %w: %w", name, ErrNoPort, err)
	}
	var sync func() error
	if p, ok := d.ports[vale.JoinName(swName, port)]; ok && p.sw == s {
		c.port = p
		p.captures.Add(1)
		sync = func() error { return d.fastSync(p) }
		c.release = func() { p.captures.Add(-1); _ = d.fastSync(p) }
	} else if port == s.tapName {
		s.hostCaptures.Add(1)
		sync = func() error { return d.fastHostSync(s) }
		c.release = func() { s.hostCaptures.Add(-1); _ = d.fastHostSync(s) }
	}
	d.mu.Unlock()
	if sync != nil {
		// The port's frames leave the fast path, so that the capture sees them all.
		if err := sync(); err != nil {
			c.Close()
			return nil, fmt.Errorf("capture %s: %w", name, err)
		}
	}
	return c, nil
}

// captureSwitch is the switch of a capture's port.
func (d *Dataplane) captureSwitch(name, swName string) (*swState, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, fmt.Errorf("capture %s: %w", name, ErrClosed)
	}
	s, ok := d.switches[swName]
	if !ok {
		return nil, fmt.Errorf("capture %s: switch %q: %w", name, swName, ErrNoSwitch)
	}
	return s, nil
}

var _ vale.DropTap = (*Capture)(nil)

// Tapped implements vale.Tap: it runs on the forwarding path.
func (c *Capture) Tapped(d *vale.Delivery, tx bool) {
	if tx && !c.tx || !tx && !c.rx {
		return
	}
	c.take(d, tx, false)
}

// TappedDropped implements vale.DropTap: the frames the port's output queue (or ring)
// refused, kept as transmitted frames dropped as queue-full.
func (c *Capture) TappedDropped(d *vale.Delivery) {
	if c.tx {
		c.take(d, true, true)
	}
}

func (c *Capture) take(d *vale.Delivery, tx, refused bool) {
	now := time.Now().UnixNano()
	for i := 0; i < d.Len(); i++ {
		f := d.Frame(i)
		if c.filter != nil && !c.filter.Match(f.Data[min(c.hdrLen, len(f.Data)):]) {
			continue
		}
		var idx int32
		var b []byte
		free, bufs, flag := c.free, c.bufs, int32(0)
		if int(f.Len)-c.hdrLen > c.small && len(c.big) > 0 {
			free, bufs, flag = c.bigFree, c.big, bigCapture
		}
		select {
		case idx = <-free:
			b = bufs[idx]
			idx |= flag
		default:
			c.lost.Add(1)
			continue
		}
		n := copyFrame(d, i, c.hdrLen, b)
		c.ready <- capRecord{idx: idx, len: f.Len - int32(c.hdrLen), n: int32(n), tx: tx, full: refused, dst: f.Dst, reason: f.Reason, nanotime: now}
	}
}

// copyFrame copies frame i of d into b without its first skip bytes (the virtio-net
// header) and returns the bytes copied.
func copyFrame(d *vale.Delivery, i, skip int, b []byte) int {
	n := 0
	for _, fr := range d.Fragments(i) {
		if skip >= len(fr) {
			skip -= len(fr)
			continue
		}
		n += copy(b[n:], fr[skip:])
		skip = 0
		if n == len(b) {
			break
		}
	}
	return n
}

// Next returns the next captured frame, waiting for one until ctx is done or the capture
// is closed (ErrCaptureClosed). Its Data is valid until the next call.
func (c *Capture) Next(ctx context.Context) (CapturedFrame, error) {
	if c.held >= 0 {
		if c.held&bigCapture != 0 {
			c.bigFree <- c.held &^ bigCapture
		} else {
			c.free <- c.held
		}
		c.held = -1
	}
	select {
	case <-c.closed:
		return CapturedFrame{}, ErrCaptureClosed
	default:
	}
	var r capRecord
	select {
	case r = <-c.ready:
	case <-ctx.Done():
		return CapturedFrame{}, ctx.Err()
	case <-c.closed:
		return CapturedFrame{}, ErrCaptureClosed
	}
	c.held = r.idx
	buf := c.bufs
	if r.idx&bigCapture != 0 {
		buf, r.idx = c.big, r.idx&^bigCapture
	}
	f := CapturedFrame{Time: time.Unix(0, r.nanotime), TX: r.tx, Len: int(r.len), Data: buf[r.idx][:r.n]}
	switch {
	case r.tx && r.full:
		f.Dropped, f.Reason = true, vale.DropNoSpace.String()
	case r.tx:
	case r.dst == vale.DstDrop:
		f.Dropped, f.Reason = true, vale.DropNoDest.String()
	case r.dst == vale.DstRefused:
		f.Dropped, f.Refused, f.Reason = true, true, vale.DropRefused.String()
		if r.reason > 0 {
			f.Reason = Refusal(r.reason - 1).String()
		}
	}
	return f, nil
}

// Lost is the number of frames the capture could not keep because its reader was behind.
func (c *Capture) Lost() uint64 { return c.lost.Load() }

// Close removes the capture's tap from the switch (idempotent), and then takes it off
// its port's PortInfo.Captures; Next then returns ErrCaptureClosed.
func (c *Capture) Close() {
	c.once.Do(func() {
		c.remove()
		if c.release != nil {
			// A failure leaves the port's frames with the switch, which is where they
			// were during the capture; the next change of the port tries again.
			c.release()
		}
		close(c.closed)
	})
}
