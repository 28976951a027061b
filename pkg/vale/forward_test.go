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
	batch := func(dsts ...uint16) {
		c.frames = c.frames[:0]
		c.st = batchStats{}
		for _, d := range dsts {
			b := make([]byte, 60)
			b[0], b[1] = byte(d>>8), byte(d)
			c.frames = append(c.frames, Frame{Data: b, Len: 60})
		}
		c.passOne(dstByFirstByte{}, 0, ports, 0)
	}
	check := func(what string, got, want []int32) {
		t.Helper()
		if len(got) != len(want) || (len(want) > 0 && !reflect.DeepEqual(got, want)) {
			t.Fatalf("%s: %v, want %v", what, got, want)
		}
	}
	const B, U, R = DstBroadcast, DstUnknown, DstRefused
	//     0  1  2  3  4  5 (src)  6        7 (absent)  8 (out of range)  9  10 11 12 13
	batch(2, B, 3, U, 2, 0, DstDrop, 4, 9, R, B, U, 3, 2)
	if got := c.st.drops[DropNoDest]; got != 4 {
		t.Fatalf("no-destination drops %d, want 4", got)
	}
	if got := c.st.drops[DropRefused]; got != 1 {
		t.Fatalf("refused drops %d, want 1", got)
	}
	if !reflect.DeepEqual(c.touched, []uint16{2, 3}) {
		t.Fatalf("touched %v", c.touched)
	}
	check("port 2 with unknown unicast", c.merge(c.heads[2], true), []int32{0, 1, 3, 4, 10, 11, 13})
	check("port 2 known-only", c.merge(c.heads[2], false), []int32{0, 1, 4, 10, 13})
	check("port 3 with unknown unicast", c.merge(c.heads[3], true), []int32{1, 2, 3, 10, 11, 12})
	check("port 3 known-only", c.merge(c.heads[3], false), []int32{1, 2, 10, 12})
	check("broadcast list", c.flattenBroadcast(), []int32{1, 10})
	check("flood list", c.flattenFlood(), []int32{1, 3, 10, 11})
	c.resetLists()
	for i, h := range c.heads {
		if h != listEmpty {
			t.Fatalf("head %d not reset: %d", i, h)
		}
	}

	// No broadcast: unicast and unknown unicast still merge in order.
	batch(U, 2, U, 2, 3)
	check("port 2 with unknown unicast", c.merge(c.heads[2], true), []int32{0, 1, 2, 3})
	check("port 2 known-only", c.merge(c.heads[2], false), []int32{1, 3})
	check("broadcast list", c.flattenBroadcast(), nil)
	check("flood list", c.flattenFlood(), []int32{0, 2})
	c.resetLists()
	// Broadcast and unknown only.
	batch(B, U, U, B)
	check("flood list", c.flattenFlood(), []int32{0, 1, 2, 3})
	check("broadcast list", c.flattenBroadcast(), []int32{0, 3})
	c.resetLists()
}
