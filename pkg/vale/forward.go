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
	frames  []Frame  // the batch, in source order
	bufs    [][]byte // fragment data, one per source slot; Frame.slot indexes it
	maxLen  int32    // longest frame in the batch
	hdrLen  int      // the switch's virtio-net header length (Config.VnetHdrLen)
	heads   []int32  // per destination port: first frame, or listEmpty/listDone
	tails   []int32  // per destination port: last frame
	touched []uint16 // destinations with a list, in first-seen order
	bcHead  int32    // broadcast list
	bcTail  int32
	bcOrder []int32 // the broadcast list flattened, for flood-only ports
	order   []int32 // the merged list of the destination being delivered
	all     []int32 // 0, 1, … batch-1: every frame, for an RX mirror
	st      batchStats
	sink    byte // keeps the touch loops from being optimised away
}

func newFwdCtx(batch, maxPorts int) *fwdCtx {
	c := &fwdCtx{
		frames:  make([]Frame, 0, batch),
		bufs:    make([][]byte, batch+maxFrags),
		heads:   make([]int32, maxPorts),
		tails:   make([]int32, maxPorts),
		touched: make([]uint16, 0, maxPorts),
		bcOrder: make([]int32, 0, batch),
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
// list of its destination (or the broadcast list). ports is the switch's
// port table, read under the shared lock.
func (c *fwdCtx) passOne(lk Lookup, src uint16, ports []*Port, now int64) {
	c.touched = c.touched[:0]
	c.bcHead, c.bcTail = -1, -1
	if len(c.frames) == 0 {
		return
	}
	lk.Lookup(src, c.frames, now)
	frames := c.frames
	heads, tails := c.heads, c.tails
	for i := range frames {
		f := &frames[i]
		f.next = -1
		d := f.Dst
		idx := int32(i)
		if d == DstBroadcast {
			if c.bcHead < 0 {
				c.bcHead = idx
			} else {
				frames[c.bcTail].next = idx
			}
			c.bcTail = idx
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

// merge flattens the unicast list starting at u and the broadcast list into
// c.order, keeping the source order.
func (c *fwdCtx) merge(u int32) []int32 {
	o := c.order[:0]
	b := c.bcHead
	frames := c.frames
	for u >= 0 || b >= 0 {
		if b < 0 || (u >= 0 && u < b) {
			o = append(o, u)
			u = frames[u].next
		} else {
			o = append(o, b)
			b = frames[b].next
		}
	}
	c.order = o
	return o
}

func (c *fwdCtx) flattenBroadcast() []int32 {
	o := c.bcOrder[:0]
	for b := c.bcHead; b >= 0; b = c.frames[b].next {
		o = append(o, b)
	}
	c.bcOrder = o
	return o
}

// resetLists clears the per-destination heads touched by this batch.
func (c *fwdCtx) resetLists() {
	for _, d := range c.touched {
		c.heads[d] = listEmpty
	}
	c.touched = c.touched[:0]
}
