package appport

import (
	"bytes"
	"testing"
	"time"

	"github.com/epair-cni/epair/pkg/ifcore"
)

// TestReceiveRate: a registration's receive rate (Options.Shape at open, SetRate live)
// lets frames into the application's rings at that rate, in order and whole, holding the
// rest in the port's rings; lifting it lets the rest through at once.
func TestReceiveRate(t *testing.T) {
	rate := &ifcore.Rate{PktsPerSec: 2000, BurstPkts: 20}
	w := newWorld(t, Options{Shape: func(adapter string) *ifcore.Rate {
		if adapter == "vale0:b" {
			return rate
		}
		return nil
	}})
	a := w.open(t, "vale0:a")
	b := w.open(t, "vale0:b")
	send(t, b, frame(0xff, 0xb, 0, 60))
	recv(t, a, 1, 2*time.Second)

	const n = 400
	var want [][]byte
	for i := range n {
		want = append(want, frame(0xb, 0xa, uint32(i+1), 60+i%3*700))
	}
	t0 := time.Now()
	send(t, a, want...)
	got := recv(t, b, n, 5*time.Second)
	took := time.Since(t0)
	// 20 at once, then 2000/s: 190 ms for the other 380.
	if took < 150*time.Millisecond || took > 2*time.Second {
		t.Fatalf("%d frames at 2000 frames/s (burst 20) took %v, want about 190ms", n, took)
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("frame %d differs or is out of order", i)
		}
	}
	t.Logf("%d frames under a 2000 frames/s limit: %v", n, took)

	// Lifted live: the next 400 pass at once.
	if err := w.srv.SetRate("vale0:b", nil); err != nil {
		t.Fatal(err)
	}
	t0 = time.Now()
	send(t, a, want...)
	recv(t, b, n, 5*time.Second)
	if took := time.Since(t0); took > 100*time.Millisecond {
		t.Fatalf("without a limit %d frames took %v", n, took)
	}
	// Set live again, in bits: 1514-byte frames at 12.1 Mbit/s are 1000 frames/s.
	if err := w.srv.SetRate("vale0:b", &ifcore.Rate{BitsPerSec: 1514 * 8 * 1000, BurstBytes: 1514 * 10}); err != nil {
		t.Fatal(err)
	}
	big := make([][]byte, 200)
	for i := range big {
		big[i] = frame(0xb, 0xa, uint32(i), 1514)
	}
	t0 = time.Now()
	send(t, a, big...)
	recv(t, b, len(big), 5*time.Second)
	if took := time.Since(t0); took < 150*time.Millisecond {
		t.Fatalf("200 frames at 1000 frames/s worth of bits (burst 10) took %v, want about 190ms", took)
	}
	if err := w.srv.SetRate("vale0:b", &ifcore.Rate{}); err == nil {
		t.Fatal("an empty rate was accepted")
	}
}
