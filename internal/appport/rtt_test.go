package appport

import (
	"slices"
	"testing"
	"time"
)

// TestPingPongNoLostWakeup: two applications bounce one frame back and forth
// 200 times, both sleeping in Poll between frames, so every hop needs a
// wake-up (the application's kick, the switch's notify through OnWake, the
// agent's notify eventfd). A lost one shows as a 2 s timeout. The round
// trips are logged.
func TestPingPongNoLostWakeup(t *testing.T) {
	w := newWorld(t, Options{})
	a := w.open(t, "vale0:a")
	b := w.open(t, "vale0:b")
	send(t, b, frame(0xff, 0xb, 0, 60))
	recv(t, a, 1, 2*time.Second)
	send(t, a, frame(0xff, 0xa, 0, 60))
	recv(t, b, 1, 2*time.Second)
	const n = 200
	errc := make(chan error, 1)
	go func() {
		for i := 0; i < n; i++ {
			if _, err := recvErr(b, 1, 2*time.Second); err != nil {
				errc <- err
				return
			}
			if err := sendErr(b, frame(0xa, 0xb, uint32(i), 60)); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	rtts := make([]time.Duration, 0, n)
	for i := 0; i < n; i++ {
		t0 := time.Now()
		send(t, a, frame(0xb, 0xa, uint32(i), 60))
		if _, err := recvErr(a, 1, 2*time.Second); err != nil {
			t.Fatalf("round trip %d: %v (pong side: %v)", i, err, <-errc)
		}
		rtts = append(rtts, time.Since(t0))
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	slices.Sort(rtts)
	t.Logf("%d round trips: p50 %v, p99 %v, max %v", n, rtts[n/2], rtts[n*99/100], rtts[n-1])
}
