package agentapi

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestIdleSlowConnectionsAndFlood (issue 16): 1000 connections that send nothing, 100
// that send half a request header and stop, then a flood of 2000 requests from 64 clients
// at once: every request of the flood is answered correctly and promptly, the server
// closes the half-sent requests when their header time is up, and nothing is left after
// the clients go.
func TestIdleSlowConnectionsAndFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("1100 connections and 2000 requests (-short)")
	}
	fb := newFake()
	c, _ := serve(t, fb, 10*time.Second)
	path := c.Socket()
	var held []net.Conn
	defer func() {
		for _, h := range held {
			h.Close()
		}
	}()
	for i := range 1100 {
		h, err := net.Dial("unix", path)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		held = append(held, h)
		if i >= 1000 { // slow: half a header, never finished
			fmt.Fprintf(h, "GET /v1/status HTTP/1.1\r\nHost: agent\r\n")
		}
	}

	// The flood.
	t0 := time.Now()
	var wg sync.WaitGroup
	var failed atomic.Int32
	var firstErr atomic.Value
	next := atomic.Int32{}
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := NewClient(path, 10*time.Second)
			defer cl.Close()
			for next.Add(1) <= 2000 {
				st, err := cl.Status(context.Background())
				if err != nil || !st.Ready {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("%+v %v", st, err))
				}
			}
		}()
	}
	wg.Wait()
	took := time.Since(t0)
	if n := failed.Load(); n != 0 {
		t.Fatalf("%d of 2000 requests failed, first: %v", n, firstErr.Load())
	}
	if took > 20*time.Second {
		t.Fatalf("2000 requests with 1100 idle or slow connections open took %v", took)
	}
	t.Logf("2000 requests from 64 clients, 1100 idle or slow connections open: %v", took.Round(time.Millisecond))

	// The half-sent headers are cut off after the server's ReadHeaderTimeout (5 s).
	deadline := time.Now().Add(15 * time.Second)
	for _, h := range held[1000:] {
		h.SetReadDeadline(deadline)
		b := make([]byte, 512)
		for {
			if _, err := h.Read(b); err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					t.Fatal("a half-sent request header was kept open for 15 s")
				}
				break // closed by the server (after a 408, or at once)
			}
		}
	}
	for _, h := range held {
		h.Close()
	}
	held = nil
	// Still serving, and nothing leaks when it stops (serve's cleanup, and TestNoGoroutineLeak's check).
	if st, err := c.Status(context.Background()); err != nil || !st.Ready {
		t.Fatalf("after the storm: %+v %v", st, err)
	}
}
