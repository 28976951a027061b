package appport

import (
	"bytes"
	"encoding/binary"
	"os"
	"runtime/pprof"
	"testing"
	"time"

	"github.com/epair-cni/epair/pkg/nmport"
)

// TestMonitorOfOwnPort: a copy monitor ("/r") of a port sees the frames the
// port receives.
func TestMonitorOfOwnPort(t *testing.T) {
	w := newWorld(t, Options{})
	a := w.open(t, "vale0:a")
	b := w.open(t, "vale0:b")
	mon := w.open(t, "vale0:b/r")
	if mon.NumTxRings() != 0 || mon.NumRxRings() != 1 {
		t.Fatalf("monitor has %d TX and %d RX rings, want 0 and 1", mon.NumTxRings(), mon.NumRxRings())
	}
	f := frame(0xff, 0xa, 42, 100)
	send(t, a, f)
	got := recv(t, b, 1, 2*time.Second)
	if !bytes.Equal(got[0], f) {
		t.Fatal("b received a different frame")
	}
	// The monitor's copy is made when b's RX ring is synced.
	copies := recv(t, mon, 1, 2*time.Second)
	if !bytes.Equal(copies[0], f) {
		t.Fatalf("monitor copy differs: %x", copies[0][:20])
	}
}

// FuzzSharedRings writes what the fuzzer chooses into a port's shared
// rings (head, cur, slot indexes, lengths, flags) and syncs, while the
// switch runs. The agent must survive, the port must either work or be put
// in error (never another port), and two other ports keep exchanging
// frames.
func FuzzSharedRings(f *testing.F) {
	f.Add([]byte{0, 5, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{1, 0xff, 0xff, 0xff, 0xff, 3, 0, 0, 0, 1, 0, 0, 0})
	f.Add([]byte{2, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x40, 0x00, 0, 0, 9})
	f.Add([]byte{3, 0, 0, 1, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0})
	w := newWorld(f, Options{})
	a := w.open(f, "vale0:a")
	b := w.open(f, "vale0:b")
	send(f, b, frame(0xff, 0xb, 0, 60))
	recv(f, a, 1, 2*time.Second)
	seq := uint32(1)
	f.Fuzz(func(t *testing.T, data []byte) {
		// A hang is a failure with every goroutine's stack (the fuzzer would
		// only report a worker that stopped answering).
		watchdog := time.AfterFunc(20*time.Second, func() {
			pprof.Lookup("goroutine").WriteTo(os.Stderr, 2)
			panic("FuzzSharedRings: one input ran for 20s")
		})
		defer watchdog.Stop()
		v, err := nmport.Open(w.sock, "vale0:victim", 0)
		if err != nil {
			t.Fatalf("open victim: %v", err)
		}
		defer v.Close()
		le := binary.LittleEndian
		for len(data) >= 9 {
			op, x, y := data[0], le.Uint32(data[1:]), le.Uint32(data[5:])
			data = data[9:]
			var r *nmport.Ring
			if op&1 == 0 {
				r = v.TxRing(0)
			} else {
				r = v.RxRing(0)
			}
			switch op % 8 / 2 {
			case 0: // head and cur
				r.SetHead(x)
				r.SetCur(y)
			case 1: // a slot's buffer index
				s := r.Slot(x % r.NumSlots())
				s.BufIdx = y
			case 2: // a slot's length and flags
				s := r.Slot(x % r.NumSlots())
				s.Len, s.Flags = uint16(y), uint16(y>>16)
			case 3: // a plausible frame: advance by up to 64 slots
				n := x % 64
				for i := uint32(0); i < n && r.Space() > 0 && r.Cur() < r.NumSlots(); i++ {
					c := r.Cur()
					if buf := r.Buf(c); buf != nil {
						fr := frame(byte(y), 0xc, y, 60)
						r.Slot(c).Len = uint16(copy(buf, fr))
					}
					r.Advance(r.Next(c))
				}
			}
			if op&0x10 != 0 {
				v.TxSync()
			} else {
				v.RxSync()
			}
		}
		v.Poll(nmport.PollIn|nmport.PollOut, time.Millisecond)
		// The other ports still work.
		seq++
		fr := frame(0xb, 0xa, seq, 80)
		send(t, a, fr)
		deadline := time.Now().Add(2 * time.Second)
		for {
			got := recv(t, b, 1, time.Until(deadline))
			if bytes.Equal(got[0], fr) {
				break
			}
			// Frames the victim flooded may arrive first.
		}
	})
}
