package netmap

import (
	"context"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// probeBackend is a TEST DOUBLE GenericRxProber over memBackend that counts the RX
// waits in the poller and the looks without waiting.
type probeBackend struct {
	*memBackend
	waits, probes atomic.Int32
}

func (b *probeBackend) RxPending(q int) bool {
	b.probes.Add(1)
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.pending[q]) > 0
}

func (b *probeBackend) WaitReady(ctx context.Context, q int, dir Direction) error {
	if dir == RX {
		b.waits.Add(1)
	}
	return b.memBackend.WaitReady(ctx, q, dir)
}

// TestGenericRxSpin: with RxSpin, a frame that follows the last one within the spin is
// found by looking (yielding between looks), with no wait in the poller; without, every
// frame after an rxsync costs a wait.
func TestGenericRxSpin(t *testing.T) {
	for _, spin := range []time.Duration{0, 500 * time.Millisecond} {
		b := &probeBackend{memBackend: newMemBackend(1, 1)}
		var yields atomic.Int32
		g, err := NewGenericAdapter("spin0", b, GenericConfig{Slots: 64, RxSpin: spin,
			Yield: func() { yields.Add(1); runtime.Gosched() }})
		if err != nil {
			t.Fatal(err)
		}
		nm := New(Config{})
		if err := nm.Attach(g); err != nil {
			t.Fatal(err)
		}
		h := nm.Open()
		mustRegister(t, h, Req{Name: "spin0"})
		recv := func(what string) {
			t.Helper()
			for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(time.Millisecond) {
				if err := h.RxSync(); err != nil {
					t.Fatal(err)
				}
				if r := h.RxRing(0); !r.Empty() {
					r.Head, r.Cur = r.Tail, r.Tail
					return
				}
			}
			t.Fatalf("spin %v: %s not received", spin, what)
		}
		// The first frame: after the first spin (if any) found nothing, a wait.
		for b.waits.Load() == 0 {
			time.Sleep(time.Millisecond)
		}
		b.inject(0, frame(60, 1))
		recv("the first frame")
		// The next one, right after the rxsync re-armed the interrupt.
		b.inject(0, frame(60, 2))
		recv("the second frame")
		waits := b.waits.Load()
		if spin == 0 {
			// The loop goes back to the poller after the rxsync re-armed it.
			for end := time.Now().Add(2 * time.Second); waits < 2 && time.Now().Before(end); time.Sleep(time.Millisecond) {
				waits = b.waits.Load()
			}
		}
		switch {
		case spin > 0 && (waits != 1 || yields.Load() == 0):
			t.Errorf("spin %v: %d waits in all (want the first one only) and %d yields (want some)", spin, waits, yields.Load())
		case spin == 0 && (waits < 2 || b.probes.Load() != 0):
			t.Errorf("no spin: %d waits in all (want one per frame) and %d looks (want 0)", waits, b.probes.Load())
		}
		h.Close()
		nm.Detach(g.NA().Name)
	}
}
