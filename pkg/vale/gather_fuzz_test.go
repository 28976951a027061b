package vale

import (
	"testing"

	"github.com/epair-cni/epair/pkg/netmap"
)

// FuzzGather feeds arbitrary slot layouts (lengths, fragment flags, bad
// buffer indexes, wrap-around) to the first step of forwarding and checks
// its accounting: every consumed chain is either a frame or one counted
// drop, frames are made of their fragments, and an unfinished chain is
// left in the ring.
func FuzzGather(f *testing.F) {
	f.Add([]byte{0x40, 0x00, 0x00}, uint8(0), uint8(32))
	f.Add([]byte{0xff, 0x07, 0x20, 0x00, 0x02, 0x00, 0x0d, 0x00, 0x00}, uint8(62), uint8(4))
	f.Add([]byte{0x00, 0x08, 0x20, 0x00, 0x08, 0x20, 0x00, 0x08, 0x20}, uint8(10), uint8(1))
	f.Add([]byte{0x10, 0x00, 0x01, 0x10, 0x00, 0x10}, uint8(63), uint8(64))
	f.Fuzz(func(t *testing.T, data []byte, start, batch uint8) {
		const n = 64
		pool, err := netmap.NewPool(n+2, 2048)
		if err != nil {
			t.Fatal(err)
		}
		slots := make([]netmap.Slot, n)
		for i := range slots {
			slots[i].BufIdx = uint32(i + 2)
		}
		from := uint32(start) % n
		used := uint32(0)
		for j := 0; j+2 < len(data) && used < n-1; j += 3 {
			s := &slots[(from+used)%n]
			s.Len = uint16(data[j]) | uint16(data[j+1]&0x0f)<<8
			if data[j+2]&0x20 != 0 {
				s.Flags = netmap.MoreFrag
			}
			if data[j+2]&0x01 != 0 {
				s.BufIdx = 1 // invalid
			}
			used++
		}
		to := (from + used) % n
		b := int(batch)%80 + 1
		c := newFwdCtx(b, 4)
		next := c.gather(slots, pool, from, to, b, 9014)
		consumed := (next + n - from) % n
		if consumed > used {
			t.Fatalf("consumed %d of %d slots", consumed, used)
		}
		var drops uint64
		for _, d := range c.st.drops {
			drops += d
		}
		if c.st.inFrames != uint64(len(c.frames))+drops {
			t.Fatalf("in %d != frames %d + drops %d", c.st.inFrames, len(c.frames), drops)
		}
		for _, fr := range c.frames {
			if fr.frags == 0 || fr.frags > maxFrags || fr.Len < ethHeaderLen || fr.Len > 9014 {
				t.Fatalf("bad frame %+v", fr)
			}
			sum := 0
			for _, p := range c.bufs[fr.slot : fr.slot+uint32(fr.frags)] {
				sum += len(p)
			}
			if int32(sum) != fr.Len || len(fr.Data) < ethHeaderLen {
				t.Fatalf("frame of %d bytes from fragments of %d", fr.Len, sum)
			}
		}
		// Whatever is left starts a chain that is not complete yet (or
		// the batch ended).
		if next != to && consumed < uint32(b) {
			for i := next; i != to; i = (i + 1) % n {
				if slots[i].Flags&netmap.MoreFrag == 0 {
					t.Fatalf("left a complete chain at %d (consumed %d, batch %d)", next, consumed, b)
				}
			}
		}
	})
}
