package sys

import (
	"errors"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func pipe(t *testing.T) (*PollFD, int) {
	t.Helper()
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	r, err := NewPollFD(p[0], "pipe")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); unix.Close(p[1]) })
	return r, p[1]
}

func TestPollFDWaitReadAndInterrupt(t *testing.T) {
	r, w := pipe(t)
	readable := func(fd uintptr) bool {
		var p = []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, _ := unix.Poll(p, 0)
		return n > 0
	}
	if err := r.WaitRead(20*time.Millisecond, readable); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("WaitRead on an empty pipe = %v; want deadline exceeded", err)
	}
	go func() { time.Sleep(20 * time.Millisecond); unix.Write(w, []byte{1}) }()
	if err := r.WaitRead(0, readable); err != nil {
		t.Fatalf("WaitRead after a write = %v", err)
	}
	var b [1]byte
	unix.Read(r.FD(), b[:])
	go func() { time.Sleep(20 * time.Millisecond); r.InterruptRead() }()
	if err := r.WaitRead(0, readable); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("WaitRead after InterruptRead = %v; want deadline exceeded", err)
	}
	// The next wait clears the interrupt's past deadline.
	go func() { time.Sleep(20 * time.Millisecond); unix.Write(w, []byte{1}) }()
	if err := r.WaitRead(0, readable); err != nil {
		t.Fatalf("WaitRead after an interrupt = %v", err)
	}
	unix.Read(r.FD(), b[:])
	go func() { time.Sleep(20 * time.Millisecond); r.Close() }()
	if err := r.WaitRead(0, readable); !IsClosed(err) {
		t.Fatalf("WaitRead across Close = %v; want closed", err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
}

func TestViewsCheckBounds(t *testing.T) {
	mem := make([]byte, 64)
	Uint32At(mem, 60).Store(7)
	if mem[60] != 7 && mem[63] != 7 {
		t.Fatal("Uint32At does not alias the mapping")
	}
	for name, f := range map[string]func(){
		"word past end":  func() { Uint32At(mem, 64) },
		"misaligned":     func() { Uint32At(mem, 2) },
		"descs past end": func() { DescsAt(mem, 0, 5) },
		"addrs past end": func() { Uint64sAt(mem, 8, 8) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			f()
		}()
	}
	if len(DescsAt(mem, 0, 4)) != 4 || len(Uint64sAt(mem, 0, 8)) != 8 {
		t.Fatal("views have the wrong length")
	}
}

func TestIfIndex(t *testing.T) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	for _, f := range []int{fd, -1} {
		if i, err := IfIndex(f, "lo"); err != nil || i != 1 {
			t.Errorf("IfIndex(%d, lo) = %d, %v; want 1", f, i, err)
		}
		if _, err := IfIndex(f, "no-such-if0"); !errors.Is(err, unix.ENODEV) {
			t.Errorf("IfIndex(%d, no-such-if0) err = %v; want ENODEV", f, err)
		}
	}
	if _, err := IfIndex(-1, "a-name-longer-than-ifnamsiz"); err == nil {
		t.Error("IfIndex accepted a name longer than IFNAMSIZ")
	}
}

func TestSetIovecsWritev(t *testing.T) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	var iov [4]unix.Iovec
	n, total := SetIovecs(iov[:], [][]byte{[]byte("ab"), nil, []byte("cde"), []byte("f"), []byte("not taken")})
	if n != 4 || total != 6 {
		t.Fatalf("SetIovecs = %d, %d; want 4 entries, 6 bytes", n, total)
	}
	if e := Writev(p[1], iov[:n]); e != 0 {
		t.Fatalf("Writev: %v", e)
	}
	buf := make([]byte, 16)
	m, err := unix.Read(p[0], buf)
	if err != nil || string(buf[:m]) != "abcdef" {
		t.Fatalf("read %q, %v; want abcdef", buf[:m], err)
	}
	if e := Writev(-1, iov[:n]); e != unix.EBADF {
		t.Fatalf("Writev on a bad descriptor = %v; want EBADF", e)
	}
	if e := Writev(p[1], nil); e != 0 {
		t.Fatalf("Writev of nothing = %v", e)
	}
}
