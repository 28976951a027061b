package netmap

import (
	"context"
	"testing"
	"time"
)

// benchPipe moves b.N 64-byte frames through a pipe in batches of batch
// frames, producer and consumer on the same goroutine (TxSync, RxSync).
func benchPipe(b *testing.B, slots uint32, batch int) {
	nm, _ := newMem(b, g8(1, 1), false)
	m, s := nm.Open(), nm.Open()
	mustRegister(b, m, Req{Name: "m0", Flags: RegPipeMaster, RingID: 1, TxSlots: slots})
	mustRegister(b, s, Req{Name: "m0", Flags: RegPipeSlave, RingID: 1})
	defer m.Close()
	defer s.Close()
	tx, rx := m.TxRing(0), s.RxRing(0)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for done := 0; done < b.N; {
		k := min(batch, b.N-done, int(tx.Space()))
		for i := 0; i < k; i++ {
			tx.Slot[tx.Head].Len = 64
			tx.Buf(tx.Head)[0] = byte(i)
			tx.Head = tx.Next(tx.Head)
		}
		tx.Cur = tx.Head
		_ = m.TxSync()
		_ = s.RxSync()
		for rx.Cur != rx.Tail {
			if rx.Slot[rx.Cur].Len != 64 {
				b.Fatal("bad frame")
			}
			rx.Cur = rx.Next(rx.Cur)
			done++
		}
		rx.Head = rx.Cur
	}
	_ = s.RxSync()
	el := time.Since(start)
	b.ReportMetric(float64(b.N)/el.Seconds(), "pps")
}

func BenchmarkPipe64B(b *testing.B) {
	for _, c := range []struct {
		name  string
		slots uint32
		batch int
	}{
		{"slots=256/batch=32", 256, 32}, {"slots=256/batch=255", 256, 255},
		{"slots=1024/batch=32", 1024, 32}, {"slots=1024/batch=256", 1024, 256}, {"slots=1024/batch=1023", 1024, 1023},
	} {
		b.Run(c.name, func(b *testing.B) { benchPipe(b, c.slots, c.batch) })
	}
}

// BenchmarkPipe64BTwoGoroutines: producer and consumer on their own
// goroutines, blocking in Poll (the real deployment shape).
func BenchmarkPipe64BTwoGoroutines(b *testing.B) {
	for _, slots := range []uint32{256, 1024} {
		b.Run("slots="+itoa(int(slots)), func(b *testing.B) { benchPipe2(b, slots) })
	}
}

func benchPipe2(b *testing.B, slots uint32) {
	nm, _ := newMem(b, g8(1, 1), false)
	m, s := nm.Open(), nm.Open()
	mustRegister(b, m, Req{Name: "m0", Flags: RegPipeMaster, RingID: 1, TxSlots: slots})
	mustRegister(b, s, Req{Name: "m0", Flags: RegPipeSlave, RingID: 1})
	defer m.Close()
	defer s.Close()
	tx, rx := m.TxRing(0), s.RxRing(0)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for sent := 0; sent < b.N; {
			if tx.Space() == 0 {
				_, _ = m.Poll(ctx, PollOut)
				continue
			}
			k := min(256, b.N-sent, int(tx.Space()))
			for i := 0; i < k; i++ {
				tx.Slot[tx.Head].Len = 64
				tx.Head = tx.Next(tx.Head)
			}
			tx.Cur = tx.Head
			sent += k
			_ = m.TxSync()
		}
		for tx.TxPending() { // the consumer frees room; push the rest
			if _, err := m.Poll(ctx, PollOut); err != nil {
				return
			}
			_ = m.TxSync()
		}
	}()
	for got := 0; got < b.N; {
		if rx.Empty() {
			_, _ = s.Poll(ctx, PollIn)
		}
		for rx.Cur != rx.Tail {
			rx.Cur = rx.Next(rx.Cur)
			got++
		}
		rx.Head = rx.Cur
		_ = s.RxSync()
	}
	<-done
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "pps")
}

// BenchmarkMemPortCopy64B copies 64-byte frames between two connected memory
// ports (private pools: one copy per frame, leases on the destination). The
// receiver releases a batch in the rxsync after the next txsync, so a batch
// is at most half the ring (a full destination drops, as in VALE).
func BenchmarkMemPortCopy64B(b *testing.B) {
	for _, c := range []struct {
		slots uint32
		batch int
	}{{256, 32}, {256, 127}, {1024, 32}, {1024, 256}, {1024, 511}} {
		b.Run("slots="+itoa(int(c.slots))+"/batch="+itoa(c.batch), func(b *testing.B) {
			batch := c.batch
			nm := New(Config{})
			g := Geometry{1, 1, c.slots, c.slots}
			pa, _ := NewMemPort("a", g, 0, 0)
			pb, _ := NewMemPort("b", g, 0, 0)
			_ = ConnectMemPorts(pa, pb)
			_ = nm.Attach(pa)
			_ = nm.Attach(pb)
			ha, hb := nm.Open(), nm.Open()
			mustRegister(b, ha, Req{Name: "a"})
			mustRegister(b, hb, Req{Name: "b"})
			defer ha.Close()
			defer hb.Close()
			tx, rx := ha.TxRing(0), hb.RxRing(0)
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for done := 0; done < b.N; {
				k := min(batch, b.N-done, int(tx.Space()))
				for i := 0; i < k; i++ {
					tx.Slot[tx.Head].Len = 64
					tx.Head = tx.Next(tx.Head)
				}
				tx.Cur = tx.Head
				_ = ha.TxSync()
				_ = hb.RxSync()
				for rx.Cur != rx.Tail {
					rx.Cur = rx.Next(rx.Cur)
					done++
				}
				rx.Head = rx.Cur
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "pps")
			if pa.Dropped.Load() != 0 {
				b.Fatalf("dropped %d", pa.Dropped.Load())
			}
		})
	}
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b [20]byte
	n := len(b)
	for ; i > 0; i /= 10 {
		n--
		b[n] = byte('0' + i%10)
	}
	return string(b[n:])
}
