package netmap

import (
	"bytes"
	"context"
	"errors"
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

// countBackend is a TEST DOUBLE over memBackend that counts every RxBatch call, the
// empty ones too (each is a system call on a real backend).
type countBackend struct {
	*memBackend
	calls atomic.Int32
}

func (b *countBackend) RxBatch(q int, bufs [][]byte, lens []int) (int, error) {
	b.calls.Add(1)
	return b.memBackend.RxBatch(q, bufs, lens)
}

// WaitReady returns for RX only with frames pending, as the real backends do (they check
// readiness before they return); memBackend's own may return on a signal whose frames
// an earlier receive already took.
func (b *countBackend) WaitReady(ctx context.Context, q int, dir Direction) error {
	for {
		if err := b.memBackend.WaitReady(ctx, q, dir); err != nil || dir != RX {
			return err
		}
		b.mu.Lock()
		has := len(b.pending[q]) > 0
		b.mu.Unlock()
		if has {
			return nil
		}
	}
}

// TestGenericRxSyncAsksWhenFramesMayWait: an rxsync asks the backend for frames when the
// caller forces it, when the RX loop saw frames since the last one (NKR_PENDINTR), or when
// the last receive did not empty the backend; a sync that only releases slots after a
// receive that emptied it asks nothing. No frame is left behind: frames that did not fit
// the ring come with the next syncs.
func TestGenericRxSyncAsksWhenFramesMayWait(t *testing.T) {
	b := &countBackend{memBackend: newMemBackend(1, 1)}
	g, _ := openGeneric(t, "ask0", b, GenericConfig{Slots: 64})
	k := g.RxRings[0]
	// sync is the ring user's rxsync with flags; it returns the frames in the ring.
	sync := func(flags SyncFlags) uint32 {
		t.Helper()
		if err := k.TryGet(); err != nil {
			t.Fatal(err)
		}
		defer k.Put()
		if err := k.SyncRx(flags); err != nil {
			t.Fatal(err)
		}
		return k.Dist(k.Ring.Head, k.Ring.Tail)
	}
	release := func() { k.Ring.Head, k.Ring.Cur = k.Ring.Tail, k.Ring.Tail }
	waitIntr := func(what string) {
		t.Helper()
		for end := time.Now().Add(5 * time.Second); k.NrKflags.Load()&KringPendIntr == 0; time.Sleep(time.Millisecond) {
			if time.Now().After(end) {
				t.Fatalf("%s: the RX loop never announced the frames", what)
			}
		}
	}
	calls := func(want int32, what string) {
		t.Helper()
		if got := b.calls.Load(); got != want {
			t.Fatalf("%s: %d RxBatch calls in all, want %d", what, got, want)
		}
	}

	// arrive injects frames, waits for the RX loop's word and syncs once.
	arrive := func(what string, frames ...[]byte) {
		t.Helper()
		b.inject(0, frames...)
		waitIntr(what)
		if n := sync(0); int(n) != len(frames) {
			t.Fatalf("%s: %d frames in the ring, want %d", what, n, len(frames))
		}
	}

	arrive("three frames", frame(60, 1), frame(60, 2), frame(60, 3))
	calls(1, "a receive that came back short")
	release()
	sync(0)
	sync(0)
	calls(1, "syncs that only release slots after the backend came up empty")
	sync(ForceRead)
	calls(2, "a forced read")

	arrive("a fourth frame", frame(60, 4))
	calls(3, "a read announced by the RX loop")
	release()
	sync(0)

	// More frames than the ring holds: the rest come with the next syncs.
	var more [][]byte
	for i := range 100 {
		more = append(more, frame(60, byte(i)))
	}
	b.inject(0, more...)
	waitIntr("100 frames")
	got := 0
	for end := time.Now().Add(5 * time.Second); got < len(more) && time.Now().Before(end); {
		got += int(sync(0))
		release()
	}
	if got != len(more) {
		t.Fatalf("%d of %d frames came through a 64-slot ring", got, len(more))
	}
}

// lookBackend is a TEST DOUBLE GenericFragBackend and GenericRxProber over memBackend;
// with failOnce set, its next RxBatch that receives frames also returns an error.
type lookBackend struct {
	fragMem
	failOnce atomic.Bool
}

func (b *lookBackend) RxBatch(q int, bufs [][]byte, lens []int) (int, error) {
	n, err := b.memBackend.RxBatch(q, bufs, lens)
	if n > 0 && b.failOnce.Swap(false) {
		return n, errors.New("injected receive error")
	}
	return n, err
}

func (b *lookBackend) RxPending(q int) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.pending[q]) > 0
}

// TestGenericRxSpinLookReceives: in batch mode, a spinning RX loop's look is the receive
// itself: a frame that comes while it spins is taken from the backend before any rxsync,
// announced, and placed into the ring by the next sync, in order, also when the receive
// that took it reported an error; until then further looks find it stashed and leave it.
func TestGenericRxSpinLookReceives(t *testing.T) {
	mem := newMemBackend(1, 1)
	mem.frame = 20000 // chain mode, so the adapter batches short frames
	b := &lookBackend{fragMem: fragMem{mem}}
	g, h := openGeneric(t, "look0", b, GenericConfig{Slots: 64, Native: true, RxSpin: 2 * time.Second, Yield: runtime.Gosched})
	k, rx := g.RxRings[0], h.RxRing(0)
	recv := func(want []byte) {
		t.Helper()
		if err := h.RxSync(); err != nil {
			t.Fatal(err)
		}
		if rx.Empty() || !bytes.Equal(rx.Buf(rx.Head)[:rx.Slot[rx.Head].Len], want) {
			t.Fatalf("the ring does not hold the %d-byte frame (empty: %v)", len(want), rx.Empty())
		}
		rx.Head, rx.Cur = rx.Next(rx.Head), rx.Next(rx.Head)
		if err := h.RxSync(); err != nil {
			t.Fatal(err)
		}
	}
	// A short frame alone puts the queue in batch mode.
	first := frame(60, 1)
	mem.inject(0, first)
	recv(first)
	for i := byte(2); i < 5; i++ {
		f := frame(60, i)
		b.failOnce.Store(i == 4)
		mem.inject(0, f)
		for end := time.Now().Add(5 * time.Second); k.NrKflags.Load()&KringPendIntr == 0; time.Sleep(time.Millisecond) {
			if time.Now().After(end) {
				t.Fatalf("frame %d: the spinning RX loop never announced it", i)
			}
		}
		mem.mu.Lock()
		left := len(mem.pending[0])
		mem.mu.Unlock()
		if left != 0 {
			t.Fatalf("frame %d announced with %d frames still in the backend: the look did not receive it", i, left)
		}
		// Until a sync places it, a look finds the stashed frame (so the loop hands
		// over at once instead of spinning) and leaves it where it is.
		if !g.lookRX(0) {
			t.Fatalf("frame %d: a look with a frame stashed found nothing", i)
		}
		recv(f)
	}
}
