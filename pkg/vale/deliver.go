package vale

import (
	"github.com/epair-cni/epair/pkg/netmap"
)

// gather is the first half of VALE's nm_bdg_preflush: it reads the slots
// [from, to) of a source ring, at most batch slots (a fragment chain that
// starts within the batch is completed past it), turns them into frames and
// counts the bad ones. A chain whose end the user has not released yet is
// left in the ring for the next pass. It returns the first slot not
// consumed.
func (c *fwdCtx) gather(slots []netmap.Slot, pool *netmap.Pool, from, to uint32, batch, maxFrame int) uint32 {
	n := uint32(len(slots))
	c.frames = c.frames[:0]
	c.maxLen = 0
	c.st = batchStats{}
	nb := 0 // slots gathered
	i := from
	for nb < batch && i != to {
		start, first := i, nb
		var total int
		frags := 0
		bad := false
		flags := slots[i].Flags
		for {
			if i == to {
				if frags <= maxFrags {
					// The user has not released the end of the chain.
					return start
				}
				break // an endless chain: drop what we have
			}
			s := &slots[i]
			if i++; i == n {
				i = 0
			}
			frags++
			l := int(s.Len)
			total += l
			if frags <= maxFrags {
				b := pool.Buf(s.BufIdx)
				if l > len(b) || s.Flags&netmap.Indirect != 0 { // also catches an invalid index (nil)
					bad = true
					b = nil
				} else {
					b = b[:l]
				}
				c.bufs[nb] = b
				nb++
			}
			if s.Flags&netmap.MoreFrag == 0 {
				break
			}
		}
		c.st.inFrames++
		c.st.inBytes += uint64(total)
		if bad || frags > maxFrags {
			c.st.drops[DropBadFrame]++
			nb = first // reuse the scratch entries
			continue
		}
		if r, drop := c.frameDrop(len(c.bufs[first]), total, maxFrame); drop {
			c.st.drops[r]++
			nb = first
			continue
		}
		c.frames = append(c.frames, Frame{
			Data:  c.bufs[first],
			Len:   int32(total),
			Flags: flags,
			slot:  uint32(first),
			frags: uint16(frags),
			next:  -1,
		})
		if int32(total) > c.maxLen {
			c.maxLen = int32(total)
		}
	}
	// Touch every frame's header in an independent loop before the lookup
	// reads it: the loads do not depend on each other, so the CPU overlaps
	// their cache misses, which the lookup's dependent hash-and-probe
	// chain cannot (with hundreds of ports the buffers are not in cache).
	var x byte
	for k := range c.frames {
		x += c.frames[k].Data[0]
	}
	c.sink = x
	return i
}

// frameDrop is the switch's check of a whole frame before the lookup (gather's, and
// Switch.Trace's): a first fragment too short for the (virtio-net and) Ethernet header is a
// bad frame, a frame longer than maxFrame too long.
func (c *fwdCtx) frameDrop(firstLen, total, maxFrame int) (DropReason, bool) {
	switch {
	case firstLen < c.hdrLen+ethHeaderLen:
		return DropBadFrame, true
	case total > maxFrame:
		return DropTooLong, true
	}
	return 0, false
}

// slotsFor returns the number of destination slots of size bs a frame of
// length l needs.
func slotsFor(l int32, bs int32) int32 {
	if l <= bs {
		return 1
	}
	return (l + bs - 1) / bs
}

// deliverRing is pass two for one destination ring, VALE's three steps:
// under the ring's lock reserve (lease) room for as many frames of order as
// fit, copy them without the lock, then under the lock publish the lease
// (in lease order, so concurrent senders to one ring never expose each
// other's unfinished slots) and notify. Frames that do not fit are left to
// the caller to count as no-space drops. It returns the frames and bytes
// delivered.
func deliverRing(k *netmap.Kring, frames []Frame, bufs [][]byte, order []int32, maxLen int32, sink *byte) (nf int, nbytes uint64) {
	ring := k.Ring
	bs := int32(ring.BufSize)
	need := int32(len(order))
	multi := maxLen > bs
	if multi {
		need = 0
		for _, fi := range order {
			need += slotsFor(frames[fi].Len, bs)
		}
	}
	nframes := len(order)

	k.QLock.Lock()
	if k.Stopped() {
		k.QLock.Unlock()
		return 0, 0
	}
	space := int32(k.Space())
	if need > space {
		// Take the prefix that fits: never reorder, never split a frame.
		need, nframes = 0, 0
		for _, fi := range order {
			ns := slotsFor(frames[fi].Len, bs)
			if need+ns > space {
				break
			}
			need += ns
			nframes++
		}
	}
	if need == 0 {
		k.QLock.Unlock()
		return 0, 0
	}
	start, _, lease := k.LeaseAcquire(uint32(need))
	k.QLock.Unlock()

	// Copy without the lock.
	pool := ring.Pool()
	slots := ring.Slot
	n := uint32(len(slots))
	j := start
	if !multi {
		// Touch the destination buffers first (independent loads overlap
		// their misses; the copies then hit the cache).
		var x byte
		for t, jj := 0, start; t < nframes; t++ {
			if b := pool.Buf(slots[jj].BufIdx); len(b) > 0 {
				x += b[0]
			}
			if jj++; jj == n {
				jj = 0
			}
		}
		*sink = x
		for _, fi := range order[:nframes] {
			f := &frames[fi]
			s := &slots[j]
			s.Len = uint16(copy(pool.Buf(s.BufIdx), f.Data))
			s.Flags = 0
			nbytes += uint64(f.Len)
			if j++; j == n {
				j = 0
			}
		}
	} else {
		for _, fi := range order[:nframes] {
			f := &frames[fi]
			j = copyFrags(slots, pool, j, bufs[f.slot:f.slot+uint32(f.frags)], f.Len, bs)
			nbytes += uint64(f.Len)
		}
	}

	k.QLock.Lock()
	moved := k.LeaseComplete(lease, start, j)
	k.QLock.Unlock()
	if moved {
		k.NotifyNow()
	}
	return nframes, nbytes
}

// copyFrags copies one frame made of the source fragments frags (total
// length l) into consecutive destination slots from j, re-cutting it to the
// destination buffer size bs; every slot but the last gets MoreFrag. It
// returns the slot after the last one written.
func copyFrags(slots []netmap.Slot, pool *netmap.Pool, j uint32, frags [][]byte, l, bs int32) uint32 {
	n := uint32(len(slots))
	left := l
	fi, off := 0, 0
	for left > 0 {
		s := &slots[j]
		dst := pool.Buf(s.BufIdx)
		if int32(len(dst)) > bs {
			dst = dst[:bs]
		}
		w := 0
		for w < len(dst) && fi < len(frags) {
			c := copy(dst[w:], frags[fi][off:])
			w += c
			off += c
			if off == len(frags[fi]) {
				fi++
				off = 0
			}
		}
		if w == 0 { // invalid destination buffer: skip what it should hold
			w = int(min(left, bs))
			skipBytes(frags, &fi, &off, w)
		}
		left -= int32(w)
		s.Len = uint16(w)
		if left > 0 {
			s.Flags = netmap.MoreFrag
		} else {
			s.Flags = 0
		}
		if j++; j == n {
			j = 0
		}
	}
	return j
}

func skipBytes(frags [][]byte, fi, off *int, w int) {
	for w > 0 && *fi < len(frags) {
		r := len(frags[*fi]) - *off
		if r > w {
			*off += w
			return
		}
		w -= r
		*fi++
		*off = 0
	}
}
