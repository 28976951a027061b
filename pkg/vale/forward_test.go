package vale

import (
	"reflect"
	"testing"
)

// dstByFirstByte is a test lookup: the destination is in the frame's first
// two bytes (so the engine's list building can be checked exactly).
type dstByFirstByte struct{}

func (dstByFirstByte) Lookup(src uint16, frames []Frame, now int64) {
	for i := range frames {
		frames[i].Dst = uint16(frames[i].Data[0])<<8 | uint16(frames[i].Data[1])
	}
}
func (dstByFirstByte) PortDetached(uint16) {}

func TestPassOneListsAndMerge(t *testing.T) {
	const nports = 6
	ports := make([]*Port, nports)
	for i := range ports {
		if i != 4 { // port 4 is not attached
			ports[i] = &Port{idx: uint16(i)}
		}
	}
	c := newFwdCtx(16, nports)
	dsts := []uint16{2, DstBroadcast, 3, 2, 0 /* src */, DstDrop, 4 /* absent */, 9 /* out of range */, DstBroadcast, 3, 2}
	for _, d := range dsts {
		b := make([]byte, 60)
		b[0], b[1] = byte(d>>8), byte(d)
		c.frames = append(c.frames, Frame{Data: b, Len: 60})
	}
	c.passOne(dstByFirstByte{}, 0, ports, 0)
	if got := c.st.drops[DropNoDest]; got != 4 {
		t.Fatalf("no-destination drops %d, want 4", got)
	}
	if !reflect.DeepEqual(c.touched, []uint16{2, 3}) {
		t.Fatalf("touched %v", c.touched)
	}
	if o := c.merge(c.heads[2]); !reflect.DeepEqual(o, []int32{0, 1, 3, 8, 10}) {
		t.Fatalf("merged list for port 2: %v", o)
	}
	if o := c.merge(c.heads[3]); !reflect.DeepEqual(o, []int32{1, 2, 8, 9}) {
		t.Fatalf("merged list for port 3: %v", o)
	}
	if o := c.flattenBroadcast(); !reflect.DeepEqual(o, []int32{1, 8}) {
		t.Fatalf("broadcast list: %v", o)
	}
	c.resetLists()
	for i, h := range c.heads {
		if h != listEmpty {
			t.Fatalf("head %d not reset: %d", i, h)
		}
	}
}
