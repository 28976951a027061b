package vale

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"
)

// Destination values a Lookup may store in Frame.Dst besides a port index
// (VALE's NM_BDG_BROADCAST and NM_BDG_NOPORT, widened to 16 bits so that a
// switch can have more than 254 ports, plus two of our own). Every value
// from DstRefused up is special: no port index reaches it.
const (
	// DstRefused drops the frame because a policy refused it (a lookup
	// wrapper's port security), counted as DropRefused on the source so
	// that refusals are told apart from frames nobody could take.
	DstRefused uint16 = 0xFFFC
	// DstUnknown is unknown unicast: a unicast destination the lookup does
	// not know. It floods like DstBroadcast (VALE's semantics) except to
	// ports marked known-only (Switch.SetKnownOnly), so a pod port cannot
	// receive other pods' unicast by having the switch forget an address.
	DstUnknown uint16 = 0xFFFD
	// DstBroadcast floods the frame to every port but its source.
	DstBroadcast uint16 = 0xFFFE
	// DstDrop drops the frame, counted as "no destination".
	DstDrop uint16 = 0xFFFF
)

// Frame is one frame of a forwarding batch as the lookup sees it. The
// engine fills Data, Len and Flags; the lookup sets Dst.
type Frame struct {
	// Data is the first fragment: the whole frame unless Flags of the
	// source slots chained more (NS_MOREFRAG). On a switch with a
	// VnetHdrLen it starts with that header, and the Ethernet header
	// follows it. It holds at least the (virtio-net and) Ethernet header
	// (the engine drops shorter frames before the lookup).
	Data []byte
	// Len is the frame length over all fragments.
	Len int32
	// Flags are the netmap slot flags of the first slot (NoLearn, ...).
	Flags uint16
	// Dst is the lookup's decision: a port index, DstUnknown,
	// DstBroadcast, DstRefused or DstDrop.
	Dst uint16
	// Reason is the lookup's own code of why it refused the frame
	// (DstRefused), 0 when it says none; the switch only passes it to taps
	// and traces.
	Reason uint8

	// engine-private
	slot  uint32 // source ring index of the first slot
	frags uint16 // number of slots
	next  int32  // next frame for the same destination, −1 at the end
}

// Lookup decides where frames go: VALE's bdg_ops.lookup (mSwitch's
// modules), made batch-first. A switch calls it with its shared lock held,
// possibly from several sources at once, so implementations must be safe
// for concurrent use by different src ports (calls for one source port
// are serialised). It must not block, allocate or keep frames.
type Lookup interface {
	// Lookup sets Dst on every frame of a batch received on port src at
	// clock time now (nanoseconds, the switch's clock).
	Lookup(src uint16, frames []Frame, now int64)
	// PortDetached tells the lookup that port left the switch (the index
	// may be reused); it runs under the switch's exclusive lock.
	PortDetached(port uint16)
}

// Learning is the default lookup, VALE's netmap_bdg_learning with aging
// and static entries: it learns the source MAC of every valid unicast
// source (not group, not zero, no NoLearn flag) on the source port, sends
// known unicast to its port, marks unknown unicast DstUnknown (flooded,
// but not to known-only ports) and floods broadcast and multicast
// (DstBroadcast). When a port sends many frames from the same source MAC
// in a row, the table is touched once per batch instead of once per frame.
// Resolve is the same decision without the learning, for ports whose
// addresses are static entries.
type Learning struct {
	hdr  int // virtio-net header before the Ethernet header
	fdb  *FDB
	last []atomic.Uint64 // per source port: last learned MAC | lastValid
}

const lastValid = 1 << 63

var _ Lookup = (*Learning)(nil)

// NewLearning returns a learning lookup over fdb for ports [0, maxPorts).
func NewLearning(fdb *FDB, maxPorts int) (*Learning, error) {
	if fdb == nil {
		return nil, fmt.Errorf("new learning lookup: nil fdb: %w", ErrInvalid)
	}
	if maxPorts < 1 || maxPorts > MaxPortsHi {
		return nil, fmt.Errorf("new learning lookup: max ports %d not in [1, %d]: %w", maxPorts, MaxPortsHi, ErrInvalid)
	}
	return &Learning{fdb: fdb, last: make([]atomic.Uint64, maxPorts)}, nil
}

// NewLearningVnet is NewLearning for a switch whose frames start with a
// vnetHdrLen-byte virtio-net header (Config.VnetHdrLen).
func NewLearningVnet(fdb *FDB, maxPorts, vnetHdrLen int) (*Learning, error) {
	if vnetHdrLen < 0 || vnetHdrLen > VnetHdrMrgLen {
		return nil, fmt.Errorf("new learning lookup: vnet header length %d not in [0, %d]: %w", vnetHdrLen, VnetHdrMrgLen, ErrInvalid)
	}
	l, err := NewLearning(fdb, maxPorts)
	if err != nil {
		return nil, err
	}
	l.hdr = vnetHdrLen
	return l, nil
}

// FDB returns the forwarding table.
func (l *Learning) FDB() *FDB { return l.fdb }

// Lookup implements Lookup.
func (l *Learning) Lookup(src uint16, frames []Frame, now int64) {
	if int(src) >= len(l.last) {
		for i := range frames {
			frames[i].Dst = DstDrop
		}
		return
	}
	last := l.last[src].Load()
	var stale uint64 // a repeated source whose timestamp still needs a refresh
	fdb := l.fdb
	for i := range frames {
		f := &frames[i]
		b := f.Data
		if len(b) < l.hdr+14 {
			f.Dst = DstDrop
			continue
		}
		b = b[l.hdr:]
		if b[6]&1 == 0 && f.Flags&FlagNoLearn == 0 {
			smac := binary.LittleEndian.Uint64(b[4:12]) >> 16
			if smac|lastValid == last {
				stale = last
			} else if smac != 0 {
				if stale != 0 {
					fdb.learn(stale&macMask, src, now)
					stale = 0
				}
				fdb.learn(smac, src, now)
				last = smac | lastValid
			}
		}
		f.Dst = fdb.dst(binary.LittleEndian.Uint64(b), now)
	}
	if stale != 0 {
		// Refresh the timestamp (and re-learn after a collision or a
		// flush) once for the whole run of repeated source addresses.
		fdb.learn(stale&macMask, src, now)
	}
	l.last[src].Store(last)
}

// Resolve sets Dst on every frame exactly as Lookup does (a known unicast
// address's port, DstUnknown, DstBroadcast for a group address, DstDrop
// for a frame too short for the Ethernet header) but learns nothing. It is
// for ports whose own addresses are installed as static entries (pod
// ports): learning from them could only let a pod claim, or churn the
// table with, addresses that are not its own. Like Lookup it may run for
// several ports at once.
func (l *Learning) Resolve(frames []Frame, now int64) {
	fdb := l.fdb
	for i := range frames {
		f := &frames[i]
		if len(f.Data) < l.hdr+14 {
			f.Dst = DstDrop
			continue
		}
		f.Dst = fdb.dst(binary.LittleEndian.Uint64(f.Data[l.hdr:]), now)
	}
}

// Probe implements Prober: Resolve's decision, which learns nothing.
func (l *Learning) Probe(_ uint16, frames []Frame, now int64) { l.Resolve(frames, now) }

// PortDetached implements Lookup: forget everything about port.
func (l *Learning) PortDetached(port uint16) {
	l.fdb.FlushPort(port)
	if int(port) < len(l.last) {
		l.last[port].Store(0)
	}
}
