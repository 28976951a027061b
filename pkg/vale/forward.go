package vale

// maxFrags bounds the slots of one frame (VALE's NM_MULTISEG). A longer
// NS_MOREFRAG chain is a bad frame.
const maxFrags = 64

// ethHeaderLen is the shortest frame the switch forwards: the first
// fragment must hold the whole Ethernet header, which the lookup reads.
const ethHeaderLen = 14

// Marks in fwdCtx.heads.
const (
	listEmpty = -1 // no frame for this destination in this batch
	listDone  = -2 // delivered (so the flood loop skips it)
)

// fwdCtx is the scratch state of one forwarding pass: VALE's nm_bdg_fwd
// array (the batch) and its per-destination queues. A pass owns one
// context from gather to the end of pass two; contexts are recycled
// through the switch, so forwarding allocates nothing.
type fwdCtx struct {
	dl      Delivery // the Delivery handed to Deliverers and Taps, reused (no allocation per call)
	frames  []Frame  // the batch, in source order
	bufs    [][]byte // fragment data, one per source slot; Frame.slot indexes it
	maxLen  int32    // longest frame in the batch
	hdrLen  int      // the switch's virtio-net header length (Config.VnetHdrLen)
	heads   []int32  // per destination port: first frame, or listEmpty/listDone
	tails   []int32  // per destination port: last frame
	touched []uint16 // destinations with a list, in first-seen order
	bcHead  int32    // broadcast list (DstBroadcast)
	bcTail  int32
	unHead  int32 // unknown-unicast list (DstUnknown)
	unTail  int32
	bcOrder []int32 // the broadcast list flattened, for known-only flood ports
	flOrder []int32 // the broadcast and unknown lists merged, for other flood ports
	order   []int32 // the merged list of the destination being delivered
	all     []int32 // 0, 1, … batch-1: every frame, for an RX mirror
	st      batchStats
	trace   *Trace // set by Switch.Trace: pass two records what it would deliver instead
	sink    byte   // keeps the touch loops from being optimised away
}

func newFwdCtx(batch, maxPorts int) *fwdCtx {
	c := &fwdCtx{
		frames:  make([]Frame, 0, batch),
		bufs:    make([][]byte, batch+maxFrags),
		heads:   make([]int32, maxPorts),
		tails:   make([]int32, maxPorts),
		touched: make([]uint16, 0, maxPorts),
		bcOrder: make([]int32, 0, batch),
		flOrder: make([]int32, 0, batch),
		order:   make([]int32, 0, batch),
		all:     make([]int32, batch),
	}
	for i := range c.all {
		c.all[i] = int32(i)
	}
	for i := range c.heads {
		c.heads[i] = listEmpty
	}
	return c
}

// passOne runs the lookup over the batch and threads every frame onto the
// list of its destination, the broadcast list or the unknown-unicast list.
// ports is the switch's port table, read under the shared lock.
func (c *fwdCtx) passOne(lk Lookup, src uint16, ports []*Port, now int64) {
	if len(c.frames) > 0 {
		lk.Lookup(src, c.frames, now)
	}
	c.thread(src, ports)
}

// thread puts every frame of the batch, with the lookup's decision in Dst, on the list of its
// destination, the broadcast list or the unknown-unicast list, and counts the frames dropped
// there (refused, or no destination).
func (c *fwdCtx) thread(src uint16, ports []*Port) {
	c.touched = c.touched[:0]
	c.bcHead, c.bcTail = -1, -1
	c.unHead, c.unTail = -1, -1
	frames := c.frames
	heads, tails := c.heads, c.tails
	for i := range frames {
		f := &frames[i]
		f.next = -1
		d := f.Dst
		idx := int32(i)
		switch d {
		case DstBroadcast:
			c.push(&c.bcHead, &c.bcTail, idx)
			continue
		case DstUnknown:
			c.push(&c.unHead, &c.unTail, idx)
			continue
		case DstRefused:
			c.st.drops[DropRefused]++
			continue
		}
		if int(d) >= len(ports) || d == src || ports[d] == nil {
			c.st.drops[DropNoDest]++
			continue
		}
		if heads[d] == listEmpty {
			heads[d] = idx
			c.touched = append(c.touched, d)
		} else {
			frames[tails[d]].next = idx
		}
		tails[d] = idx
	}
}

// push appends frame idx to the flood list head/tail (−1 when empty).
func (c *fwdCtx) push(head, tail *int32, idx int32) {
	if *head < 0 {
		*head = idx
	} else {
		c.frames[*tail].next = idx
	}
	*tail = idx
}

// merge flattens the unicast list starting at u, the broadcast list and,
// with unknown, the unknown-unicast list into c.order, keeping the source
// order.
func (c *fwdCtx) merge(u int32, unknown bool) []int32 {
	x := int32(-1)
	if unknown {
		x = c.unHead
	}
	c.order = c.mergeLists(c.order[:0], u, c.bcHead, x)
	return c.order
}

// mergeLists appends the frames of up to three lists (heads a, b, x; −1
// for an empty one) to o in source order. Each frame is on one list and
// every list is in source order, so this is a merge of sorted lists.
func (c *fwdCtx) mergeLists(o []int32, a, b, x int32) []int32 {
	frames := c.frames
	if x >= 0 {
		if a < 0 {
			a, x = x, -1
		} else if b < 0 {
			b, x = x, -1
		}
	}
	if x >= 0 {
		// Three lists: −1 as uint32 is larger than every index, so the
		// smallest of the three is the next frame.
		for {
			m := int32(min(uint32(a), uint32(b), uint32(x)))
			switch {
			case m < 0:
				return o
			case m == a:
				a = frames[a].next
			case m == b:
				b = frames[b].next
			default:
				x = frames[x].next
			}
			o = append(o, m)
		}
	}
	for a >= 0 || b >= 0 {
		if b < 0 || (a >= 0 && a < b) {
			o = append(o, a)
			a = frames[a].next
		} else {
			o = append(o, b)
			b = frames[b].next
		}
	}
	return o
}

// flattenBroadcast returns the broadcast list alone: what a known-only
// port gets when flooding.
func (c *fwdCtx) flattenBroadcast() []int32 {
	o := c.bcOrder[:0]
	for b := c.bcHead; b >= 0; b = c.frames[b].next {
		o = append(o, b)
	}
	c.bcOrder = o
	return o
}

// flattenFlood returns the broadcast and unknown-unicast lists merged:
// what every other port gets when flooding.
func (c *fwdCtx) flattenFlood() []int32 {
	c.flOrder = c.mergeLists(c.flOrder[:0], c.bcHead, c.unHead, -1)
	return c.flOrder
}

// resetLists clears the per-destination heads touched by this batch.
func (c *fwdCtx) resetLists() {
	for _, d := range c.touched {
		c.heads[d] = listEmpty
	}
	c.touched = c.touched[:0]
}

// delivery is c's reusable Delivery of frames order from port src: a Deliverer or Tap may
// use it only during its call, and calls do not nest.
func (c *fwdCtx) delivery(order []int32, src uint16) *Delivery {
	c.dl = Delivery{c: c, order: order, src: src}
	return &c.dl
}
