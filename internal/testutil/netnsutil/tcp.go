package netnsutil

import (
	"bytes"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"testing"
	"time"
)

// TCPTransfer sends n pseudo-random bytes over one TCP connection from namespace from to
// toIP:port in namespace to, checks that they arrived intact, and returns the rate in
// bit/s.
func TCPTransfer(tb testing.TB, from, to *NS, toIP string, port, n int) float64 {
	tb.Helper()
	addr := net.JoinHostPort(toIP, strconv.Itoa(port))
	var ln net.Listener
	if err := to.Do(func() (err error) { ln, err = net.Listen("tcp", addr); return }); err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		sum [32]byte
		n   int64
		err error
	}
	got := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- result{err: err}
			return
		}
		defer c.Close()
		h := sha256.New()
		m, err := io.Copy(h, c)
		var r result
		copy(r.sum[:], h.Sum(nil))
		r.n, r.err = m, err
		got <- r
	}()
	var c net.Conn
	if err := from.Do(func() (err error) { c, err = net.DialTimeout("tcp", addr, 5*time.Second); return }); err != nil {
		tb.Fatal(err)
	}
	data := make([]byte, n)
	rng := rand.New(rand.NewPCG(7, 9))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	want := sha256.Sum256(data)
	start := time.Now()
	if _, err := io.Copy(c, bytes.NewReader(data)); err != nil {
		tb.Fatalf("TCP transfer to %s: send: %v", addr, err)
	}
	c.Close()
	var r result
	select {
	case r = <-got:
	case <-time.After(60 * time.Second):
		tb.Fatalf("TCP transfer to %s: the receiver did not finish", addr)
	}
	el := time.Since(start)
	if r.err != nil || r.n != int64(n) || r.sum != want {
		tb.Fatalf("TCP transfer to %s: received %d of %d bytes (err %v), intact %v", addr, r.n, n, r.err, r.sum == want)
	}
	return float64(n) * 8 / el.Seconds()
}
