package vale

import (
	"sync/atomic"

	"github.com/epair-cni/epair/pkg/netmap"
)

// PortKind says what backs a port.
type PortKind int

const (
	// PortEphemeral is a VALE port created by the first registration of
	// "vale<sw>:<port>" and destroyed with its last user.
	PortEphemeral PortKind = iota
	// PortPersistent is a VALE port created by NewIf (NETMAP_BDG_NEWIF)
	// and attached like an interface; it outlives its users.
	PortPersistent
	// PortBwrap is any other netmap adapter (native, or generic such as
	// AF_XDP/AF_PACKET) attached through a bwrap: its RX rings feed the
	// switch and the switch transmits on its TX rings.
	PortBwrap
	// PortHost is the host-stack side of a bwrap'd adapter (its host
	// rings), attached as a second port named "<ifname>^".
	PortHost
)

func (k PortKind) String() string {
	switch k {
	case PortEphemeral:
		return "ephemeral"
	case PortPersistent:
		return "persistent"
	case PortBwrap:
		return "bwrap"
	case PortHost:
		return "host"
	}
	return "unknown"
}

// Port is one port of a switch. Its fields are written under the switch's
// exclusive lock (and NMG_LOCK) and read by forwarding under the shared
// lock; counters are atomics readable at any time.
type Port struct {
	sw    *Switch
	name  string // the port part of "vale0:p1"
	idx   uint16
	kind  PortKind
	stats counters

	// Destination side, used by pass two (under the shared lock). A port
	// receives frames only while on is set (netmap mode on for VALE
	// ports, attached for bwraps).
	on      bool
	rx      []*netmap.Kring // VALE port: its RX krings, leased by senders
	tx      []*txWriter     // bwrap/host: the wrapped adapter's TX krings
	deliver Deliverer       // replaces the ring delivery when set
	mirror  *Mirror         // copies of this port's frames, or nil
	taps    []Tap           // captures of this port's frames (AddTap; replaced, never changed)
	// knownOnly keeps unknown unicast (DstUnknown) off the port
	// (Switch.SetKnownOnly).
	knownOnly bool

	vp *vpAdapter // VALE ports
	bw *bwrap     // bwrap and host ports

	detached atomic.Bool
}

// Name returns the full name "vale<sw>:<port>".
func (p *Port) Name() string { return JoinName(p.sw.name, p.name) }

// Index returns the port's index in its switch (what the lookup returns).
func (p *Port) Index() uint16 { return p.idx }

// Kind returns what backs the port.
func (p *Port) Kind() PortKind { return p.kind }

// Counters returns a snapshot of the port's counters (lock-free).
func (p *Port) Counters() Counters { return p.stats.snapshot() }

// Deliverer takes over pass two for one destination port: instead of
// copying into the port's ring, the switch hands it the frames the batch
// has for the port (for example to enqueue them on an output queue). It is
// called under the switch's shared lock, possibly from several sources at
// once, and must not block or keep references to the frames' data after it
// returns.
type Deliverer interface {
	// Deliver takes frames from d and returns how many it accepted, which
	// must be the first n; the others are counted as no-space drops.
	Deliver(d *Delivery) int
}

// Delivery is the list of frames of one batch for one destination port.
// It is only valid during the Deliver call.
type Delivery struct {
	c     *fwdCtx
	order []int32
	src   uint16
}

// Len returns the number of frames.
func (d *Delivery) Len() int { return len(d.order) }

// Source returns the index of the port the frames came from.
func (d *Delivery) Source() uint16 { return d.src }

// Frame returns frame i (Data is its first fragment).
func (d *Delivery) Frame(i int) *Frame { return &d.c.frames[d.order[i]] }

// Fragments returns the fragments of frame i, in order (one for a frame
// that fits in one buffer).
func (d *Delivery) Fragments(i int) [][]byte {
	f := &d.c.frames[d.order[i]]
	return d.c.bufs[f.slot : f.slot+uint32(f.frags)]
}

// CopyFrame copies frame i into b and returns the bytes copied (at most
// len(b)).
func (d *Delivery) CopyFrame(i int, b []byte) int {
	n := 0
	for _, fr := range d.Fragments(i) {
		n += copy(b[n:], fr)
		if n == len(b) {
			break
		}
	}
	return n
}

// PortInfo describes a port (LIST/INFO).
type PortInfo struct {
	Name     string // "vale0:p1"
	Index    int
	Kind     PortKind
	Active   bool // receives frames (netmap mode on / attached)
	Counters Counters
}

func (p *Port) info() PortInfo {
	return PortInfo{Name: p.Name(), Index: int(p.idx), Kind: p.kind, Active: p.on, Counters: p.stats.snapshot()}
}
