package vale

import "sync/atomic"

// DropReason says why the switch dropped a frame.
type DropReason int

const (
	// DropNoSpace: the destination ring (or output queue) was full.
	DropNoSpace DropReason = iota
	// DropNoDest: the lookup returned DstDrop, an unknown or detached
	// port, or the source port itself.
	DropNoDest
	// DropTooLong: the frame exceeds the switch's MaxFrame.
	DropTooLong
	// DropBadFrame: shorter than an Ethernet header, a bad buffer index
	// or length, or a broken fragment chain.
	DropBadFrame
	// DropRefused: the lookup returned DstRefused (a policy, such as a
	// lookup wrapper's port security, refused the frame). Appended last so
	// that the indexes of Counters.Drops stay stable.
	DropRefused
	numDropReasons
)

// NumDropReasons is the length of Counters.Drops.
const NumDropReasons = int(numDropReasons)

var dropNames = [numDropReasons]string{"queue-full", "no-destination", "too-long", "bad-frame", "refused"}

func (r DropReason) String() string {
	if r >= 0 && r < numDropReasons {
		return dropNames[r]
	}
	return "unknown"
}

// Counters is a snapshot of a port's or a switch's counters. "In" is what
// the switch received from a port, "Out" what it delivered to a port.
// Drops are charged to the source port, except DropNoSpace which is
// charged to the destination port; a switch counts them all.
type Counters struct {
	InFrames, InBytes   uint64
	OutFrames, OutBytes uint64
	Drops               [numDropReasons]uint64
}

// Dropped returns the sum of all drops.
func (c Counters) Dropped() uint64 {
	var n uint64
	for _, d := range c.Drops {
		n += d
	}
	return n
}

// counters are updated once per batch with atomic adds, and read without
// locks (Snapshot). Each is on its own cache lines: ports are written by
// different forwarding threads.
type counters struct {
	inFrames, inBytes   atomic.Uint64
	outFrames, outBytes atomic.Uint64
	drops               [numDropReasons]atomic.Uint64
	_                   [64]byte
}

func (c *counters) snapshot() Counters {
	s := Counters{
		InFrames:  c.inFrames.Load(),
		InBytes:   c.inBytes.Load(),
		OutFrames: c.outFrames.Load(),
		OutBytes:  c.outBytes.Load(),
	}
	for i := range c.drops {
		s.Drops[i] = c.drops[i].Load()
	}
	return s
}

// batchStats accumulates one batch's counts for the source side.
type batchStats struct {
	inFrames, inBytes uint64
	drops             [numDropReasons]uint64
}

func (c *counters) addIn(b *batchStats) {
	if b.inFrames != 0 {
		c.inFrames.Add(b.inFrames)
		c.inBytes.Add(b.inBytes)
	}
	for i, d := range b.drops {
		if d != 0 {
			c.drops[i].Add(d)
		}
	}
}

func (c *counters) addOut(frames, bytes, nospace uint64) {
	if frames != 0 {
		c.outFrames.Add(frames)
		c.outBytes.Add(bytes)
	}
	if nospace != 0 {
		c.drops[DropNoSpace].Add(nospace)
	}
}
