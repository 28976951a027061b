package netmap

import (
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"testing"
	"time"
)

var stressDuration = flag.Duration("netmap.stress", 0, "duration of TestStressPipe (default 2s, or $NETMAP_STRESS)")

func stressTime() time.Duration {
	if *stressDuration > 0 {
		return *stressDuration
	}
	if v := os.Getenv("NETMAP_STRESS"); v != "" {
		if d, err := time.ParseDuration(v); err == nil {
			return d
		}
	}
	if testing.Short() {
		return 200 * time.Millisecond
	}
	return 2 * time.Second
}

// startAt moves a freshly registered pipe (no traffic yet) so that both
// krings start at slot pos: the stress test then crosses the index wrap
// within its first few frames.
func startAt(tx, rx *Kring, pos uint32) {
	tx.NrHwcur.Store(pos)
	tx.NrHwtail.Store(tx.Prev(pos))
	tx.RHead, tx.RCur, tx.RTail = pos, pos, tx.Prev(pos)
	tx.Ring.Head, tx.Ring.Cur, tx.Ring.Tail = pos, pos, tx.Prev(pos)
	rx.NrHwcur.Store(pos)
	rx.NrHwtail.Store(pos)
	rx.RHead, rx.RCur, rx.RTail = pos, pos, pos
	rx.Ring.Head, rx.Ring.Cur, rx.Ring.Tail = pos, pos, pos
	rx.monTail = pos
}

// TestStressPipe runs a seeded producer and consumer on two goroutines over a
// pipe, with random batch sizes, blocking in Poll when full/empty, starting
// near the index wrap. The consumer checks every frame's sequence number and
// content; at the end both rings' invariants hold and no buffer leaks. Its
// length is 2s by default; set -netmap.stress=1m or NETMAP_STRESS=1m to run
// longer.
func TestStressPipe(t *testing.T) {
	for _, n := range []uint32{2, 7, 256} {
		runStress(t, n, stressTime()/3)
	}
}

func runStress(t *testing.T, n uint32, d time.Duration) {
	seed := time.Now().UnixNano()
	if v := os.Getenv("NETMAP_SEED"); v != "" { // reproduce a logged run
		if _, err := fmt.Sscan(v, &seed); err != nil {
			t.Fatalf("NETMAP_SEED: %v", err)
		}
	}
	t.Logf("n=%d seed=%d duration=%v", n, seed, d)
	nm, _ := newMem(t, g8(1, 1), false)
	m, s := nm.Open(), nm.Open()
	mustRegister(t, m, Req{Name: "m0", Flags: RegPipeMaster, RingID: 2, TxSlots: n})
	mustRegister(t, s, Req{Name: "m0", Flags: RegPipeSlave, RingID: 2})
	pool := PipePool(m.Adapter())
	startAt(m.Kring(TX, 0), s.Kring(RX, 0), n-2)

	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var sent uint32
	prodDone := make(chan error, 1)
	go func() {
		rng := rand.New(rand.NewSource(seed))
		r := m.TxRing(0)
		for ctx.Err() == nil {
			if r.Space() == 0 {
				if _, err := m.Poll(ctx, PollOut); err != nil {
					break
				}
				continue
			}
			for k := rng.Intn(int(n)) + 1; k > 0 && r.Space() > 0; k-- {
				buf := r.Buf(r.Head)
				binary.LittleEndian.PutUint32(buf, sent)
				buf[4] = byte(sent * 7)
				r.Slot[r.Head].Len = uint16(5 + sent%60)
				sent++
				r.Advance(r.Next(r.Head))
			}
			if err := m.TxSync(); err != nil {
				prodDone <- err
				return
			}
			if err := m.Kring(TX, 0).CheckInvariants(); err != nil {
				prodDone <- err
				return
			}
		}
		// Flush what is still pending so the consumer can finish.
		for i := 0; i < 1000 && m.Kring(TX, 0).NrHwcur.Load() != r.Head; i++ {
			_ = m.TxSync()
			time.Sleep(time.Millisecond)
		}
		prodDone <- nil
	}()

	rng := rand.New(rand.NewSource(seed + 1))
	r := s.RxRing(0)
	var got uint32
	producerDone := false
	var perr error
	for {
		if !producerDone {
			select {
			case perr = <-prodDone:
				producerDone = true
			default:
			}
		}
		if r.Empty() {
			if producerDone {
				_ = s.RxSync()
				if r.Empty() {
					break
				}
			} else {
				pctx, pcancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
				_, _ = s.Poll(pctx, PollIn)
				pcancel()
				continue
			}
		}
		for k := rng.Intn(int(n)) + 1; k > 0 && !r.Empty(); k-- {
			buf := r.Buf(r.Cur)
			seq := binary.LittleEndian.Uint32(buf)
			if seq != got || buf[4] != byte(seq*7) || r.Slot[r.Cur].Len != uint16(5+seq%60) {
				t.Fatalf("n=%d seed=%d: got seq %d len %d, want %d", n, seed, seq, r.Slot[r.Cur].Len, got)
			}
			got++
			r.Advance(r.Next(r.Cur))
		}
		if err := s.RxSync(); err != nil {
			t.Fatal(err)
		}
		if err := s.Kring(RX, 0).CheckInvariants(); err != nil {
			t.Fatal(err)
		}
	}
	if perr != nil {
		t.Fatal(perr)
	}
	if got != sent || got == 0 {
		t.Fatalf("n=%d seed=%d: received %d of %d", n, seed, got, sent)
	}
	t.Logf("n=%d: %d frames", n, got)
	m.Close()
	s.Close()
	if o := pool.Outstanding(); o != 0 {
		t.Fatalf("leak: %d", o)
	}
}
