package appport

import (
	"testing"
	"time"
)

func TestPingPongLatency(t *testing.T) {
	w := newWorld(t, Options{})
	a := w.open(t, "vale0:a")
	b := w.open(t, "vale0:b")
	send(t, b, frame(0xff, 0xb, 0, 60))
	recv(t, a, 1, 2*time.Second)
	send(t, a, frame(0xff, 0xa, 0, 60))
	recv(t, b, 1, 2*time.Second)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 200; i++ {
			recv(t, b, 1, 2*time.Second)
			send(t, b, frame(0xa, 0xb, uint32(i), 60))
		}
	}()
	var worst time.Duration
	start := time.Now()
	for i := 0; i < 200; i++ {
		t0 := time.Now()
		send(t, a, frame(0xb, 0xa, uint32(i), 60))
		recv(t, a, 1, 2*time.Second)
		worst = max(worst, time.Since(t0))
	}
	<-done
	t.Logf("200 round trips in %v, worst %v", time.Since(start), worst)
}
