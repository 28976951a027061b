package porttest

import (
	"context"
	"encoding/binary"
	"runtime"
	"testing"
	"time"

	"github.com/epair-cni/epair/pkg/netmap"
)

// Netmap drives two backends through pkg/netmap's generic adapter: frames written into the
// TX ring of the handle on x0 (TxSync) come out of the RX ring of the handle on x1 after a
// blocking Poll, in order and intact. Closing the handles and detaching the adapters closes
// the sockets and stops the adapter's goroutines.
func Netmap(t *testing.T, be Backend, toBackend func(Port) netmap.GenericBackend, native bool) {
	before := runtime.NumGoroutine()
	tx, rx := wire(t, be)
	nm := netmap.New(netmap.Config{})
	for _, p := range []struct {
		name string
		port Port
	}{{"x0", tx}, {"x1", rx}} {
		g, err := netmap.NewGenericAdapter(p.name, toBackend(p.port), netmap.GenericConfig{Slots: 256, Native: native})
		if err != nil {
			t.Fatal(err)
		}
		if err := nm.Attach(g); err != nil {
			t.Fatal(err)
		}
	}
	h0, h1 := nm.Open(), nm.Open()
	for _, r := range []struct {
		h    *netmap.Handle
		name string
	}{{h0, "x0"}, {h1, "x1"}} {
		if err := r.h.Register(&netmap.Req{Name: r.name, Version: netmap.API}); err != nil {
			t.Fatalf("register %s: %v", r.name, err)
		}
	}
	const n = 1000
	// At most inFlight frames are on the wire at once: fewer than the receiving socket
	// holds (an AF_XDP socket of the default 256-frame UMEM has 128 receive frames, and
	// one may be on its way back to the fill ring), so a lost frame is the backend's
	// fault, not the kernel's drop of a burst larger than the socket, as on a NIC.
	const inFlight = 64
	sent, got := 0, 0
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for got < n {
		txr := h0.TxRing(0)
		for sent < n && txr.Space() > 0 && sent-got < inFlight {
			b := txr.Buf(txr.Head)
			f := testFrames(1)[0]
			binary.BigEndian.PutUint32(f[14:], uint32(sent))
			copy(b, f)
			txr.Slot[txr.Head].Len = uint16(len(f))
			txr.Advance(txr.Next(txr.Head))
			sent++
		}
		if err := h0.TxSync(); err != nil {
			t.Fatal(err)
		}
		ev, err := h1.Poll(ctx, netmap.PollIn)
		if err != nil {
			t.Fatalf("poll x1 after %d/%d frames: %v", got, n, err)
		}
		if ev&netmap.PollIn == 0 {
			continue
		}
		rxr := h1.RxRing(0)
		for !rxr.Empty() {
			b := rxr.Buf(rxr.Cur)[:rxr.Slot[rxr.Cur].Len]
			if len(b) >= 18 && b[12] == 0x88 && b[13] == 0xb5 {
				if seq := binary.BigEndian.Uint32(b[14:]); seq != uint32(got) {
					t.Fatalf("frame %d arrived as %d (reordered or lost)", got, seq)
				}
				got++
			}
			rxr.Advance(rxr.Next(rxr.Cur))
		}
		if err := h1.RxSync(); err != nil {
			t.Fatal(err)
		}
	}
	h0.Close()
	h1.Close()
	for _, name := range []string{"x0", "x1"} {
		if err := nm.Detach(name); err != nil {
			t.Fatalf("detach %s: %v", name, err)
		}
	}
	if _, err := tx.Receive(make([][]byte, 1), make([]int, 1)); !be.IsClosed(err) {
		t.Fatalf("socket still open after detach (Receive = %v)", err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if g := runtime.NumGoroutine(); g > before {
		t.Errorf("goroutines leaked: %d > %d", g, before)
	}
	t.Logf("%d frames through netmap rings x0 → x1", got)
}

// WaitReadyCancel checks that a WaitReady parked on an idle queue returns ctx.Err() promptly
// when its context is cancelled, for both directions' RX wait and a cancelled-before-start
// TX wait.
func WaitReadyCancel(t *testing.T, gb netmap.GenericBackend) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		// Stray frames (IPv6 ND, MLD) may wake it: drain and wait again.
		bufs, lens := [][]byte{make([]byte, 2048)}, []int{0}
		for {
			if err := gb.WaitReady(ctx, 0, netmap.RX); err != nil {
				done <- err
				return
			}
			if _, err := gb.RxBatch(0, bufs, lens); err != nil {
				done <- err
				return
			}
		}
	}()
	time.Sleep(20 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if err != context.Canceled {
			t.Fatalf("WaitReady(RX) after cancel = %v; want context.Canceled", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("cancel did not wake WaitReady(RX)")
	}
	if err := gb.WaitReady(ctx, 0, netmap.TX); err != context.Canceled {
		t.Fatalf("WaitReady(TX) on a cancelled context = %v", err)
	}
	if err := gb.WaitReady(context.Background(), 1, netmap.RX); err == nil {
		t.Fatal("WaitReady on queue 1 succeeded")
	}
	// TX room is there on an idle port.
	tctx, tcancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer tcancel()
	if err := gb.WaitReady(tctx, 0, netmap.TX); err != nil {
		t.Fatalf("WaitReady(TX) on an idle port = %v", err)
	}
}
