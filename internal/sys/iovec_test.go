package sys

import (
	"testing"

	"golang.org/x/sys/unix"
)

// TestRawReadWrite: the raw packet-path calls move bytes through a non-blocking pipe, report
// EAGAIN (not a short success) when there is nothing to read, and Writev gathers its
// vector in order.
func TestRawReadWrite(t *testing.T) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	buf := make([]byte, 16)
	if n, e := Read(p[0], buf); e != unix.EAGAIN {
		t.Fatalf("Read of an empty pipe = %d, %v; want EAGAIN", n, e)
	}
	if n, e := Write(p[1], []byte("frame")); e != 0 || n != 5 {
		t.Fatalf("Write = %d, %v", n, e)
	}
	iov := make([]unix.Iovec, 2)
	SetIovecs(iov, [][]byte{[]byte("-one"), []byte("-two")})
	if e := Writev(p[1], iov); e != 0 {
		t.Fatalf("Writev = %v", e)
	}
	if n, e := Read(p[0], buf); e != 0 || string(buf[:n]) != "frame-one-two" {
		t.Fatalf("Read = %q, %v; want \"frame-one-two\"", buf[:n], e)
	}
	if _, e := Write(-1, buf); e != unix.EBADF {
		t.Fatalf("Write to a bad descriptor = %v; want EBADF", e)
	}
}
