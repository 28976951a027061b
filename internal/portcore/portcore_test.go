package portcore

import (
	"context"
	"errors"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/epair-cni/epair/internal/sys"
	"github.com/epair-cni/epair/pkg/netmap"
	"golang.org/x/sys/unix"
)

var errTestClosed = errors.New("test socket closed")

// pipeSock is a socket over a pipe: readable when the pipe has bytes; writable always.
type pipeSock struct {
	Core
	r, w   int
	pfd    *sys.PollFD
	undos  atomic.Int32
	sent   atomic.Int32
	pfdOut atomic.Bool // the descriptor was closed when Undo ran
}

func (p *pipeSock) Transmit(frames [][]byte) (int, error) {
	if err := p.Enter(); err != nil {
		return 0, err
	}
	defer p.Exit()
	p.sent.Add(int32(len(frames)))
	return len(frames), nil
}

func (p *pipeSock) Receive(bufs [][]byte, lens []int) (int, error) {
	if err := p.Enter(); err != nil {
		return 0, err
	}
	defer p.Exit()
	n, err := unix.Read(p.r, bufs[0])
	if err != nil {
		if errors.Is(err, unix.EAGAIN) {
			return 0, nil
		}
		return 0, err
	}
	lens[0] = n
	return 1, nil
}

func newPipeSock(t *testing.T) *pipeSock {
	t.Helper()
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		t.Fatal(err)
	}
	p := &pipeSock{r: fds[0], w: fds[1]}
	var err error
	p.pfd, err = sys.NewPollFD(fds[0], "pipe")
	if err != nil {
		t.Fatal(err)
	}
	poll := []unix.PollFd{{Fd: int32(fds[0]), Events: unix.POLLIN}}
	p.Init(p, Config{
		Name: "pipe0", PFD: p.pfd, ErrClosed: errTestClosed,
		Undo: func() error {
			p.undos.Add(1)
			_, err := unix.FcntlInt(uintptr(fds[0]), unix.F_GETFD, 0)
			p.pfdOut.Store(errors.Is(err, unix.EBADF))
			return unix.Close(fds[1])
		},
		RxReady: func() bool {
			poll[0].Revents = 0
			n, err := unix.Poll(poll, 0)
			return err == nil && n > 0
		},
		TxReady: func() bool { return true },
	})
	t.Cleanup(func() { p.Close() })
	return p
}

func TestLifecycle(t *testing.T) {
	p := newPipeSock(t)
	if p.Name() != "pipe0" {
		t.Fatalf("Name = %q", p.Name())
	}
	if tx, rx := p.Queues(); tx != 1 || rx != 1 {
		t.Fatalf("Queues = %d, %d", tx, rx)
	}
	if n, err := p.TxBatch(0, make([][]byte, 3)); n != 3 || err != nil || p.sent.Load() != 3 {
		t.Fatalf("TxBatch = %d, %v (sent %d)", n, err, p.sent.Load())
	}
	if _, err := p.TxBatch(1, nil); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("TxBatch on queue 1 err = %v; want EINVAL", err)
	}
	if err := p.WaitRX(20 * time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("WaitRX on an empty pipe = %v; want a deadline error", err)
	}
	if _, err := unix.Write(p.w, []byte("frame")); err != nil {
		t.Fatal(err)
	}
	if err := p.WaitReady(context.Background(), 0, netmap.RX); err != nil {
		t.Fatalf("WaitReady(RX) with a frame pending = %v", err)
	}
	bufs, lens := [][]byte{make([]byte, 64)}, []int{0}
	if n, err := p.RxBatch(0, bufs, lens); n != 1 || lens[0] != 5 || err != nil {
		t.Fatalf("RxBatch = %d (len %d), %v", n, lens[0], err)
	}
	if err := p.WaitTX(time.Second); err != nil {
		t.Fatalf("WaitTX = %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(20 * time.Millisecond); cancel() }()
	if err := p.WaitReady(ctx, 0, netmap.RX); !errors.Is(err, context.Canceled) {
		t.Fatalf("WaitReady after cancel = %v; want context.Canceled", err)
	}

	// A parked waiter wakes with the closed error; Close runs Undo once, after the
	// descriptor is closed, and calls after it fail.
	done := make(chan error, 1)
	go func() { done <- p.WaitRX(0) }()
	time.Sleep(20 * time.Millisecond)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, errTestClosed) {
			t.Fatalf("parked WaitRX after Close = %v; want the closed error", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Close did not wake the parked waiter")
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
	if p.undos.Load() != 1 || !p.pfdOut.Load() {
		t.Fatalf("Undo ran %d times (descriptor closed first: %v); want once, after", p.undos.Load(), p.pfdOut.Load())
	}
	if !p.Closed() {
		t.Fatal("Closed() false after Close")
	}
	if _, err := p.TxBatch(0, make([][]byte, 1)); !errors.Is(err, errTestClosed) {
		t.Fatalf("TxBatch after Close = %v", err)
	}
	if err := p.WaitTX(0); !errors.Is(err, errTestClosed) {
		t.Fatalf("WaitTX after Close = %v", err)
	}
}
