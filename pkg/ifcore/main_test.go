package ifcore

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestMain checks that, once every test has closed what it opened, no
// goroutine and no packet is left behind.
func TestMain(m *testing.M) {
	before := runtime.NumGoroutine()
	code := m.Run()
	fuzzing := flag.Lookup("test.fuzz").Value.String() != "" || flag.Lookup("test.fuzzworker").Value.String() == "true"
	if code == 0 && !fuzzing {
		deadline := time.Now().Add(3 * time.Second)
		for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if n := runtime.NumGoroutine(); n > before {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			fmt.Fprintf(os.Stderr, "goroutine leak: %d before, %d after\n%s\n", before, n, buf)
			code = 1
		}
		if n := DefaultPool.Outstanding(); n != 0 {
			fmt.Fprintf(os.Stderr, "packet leak: %d packets outstanding\n", n)
			code = 1
		}
	}
	os.Exit(code)
}

type evRec struct {
	mu  sync.Mutex
	evs []Event
}

func (r *evRec) add(e Event) {
	r.mu.Lock()
	r.evs = append(r.evs, e)
	r.mu.Unlock()
}

func (r *evRec) kinds(name string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, e := range r.evs {
		if name == "" || e.Name == name {
			out = append(out, e.Kind.String())
		}
	}
	return out
}

func (r *evRec) reset() {
	r.mu.Lock()
	r.evs = nil
	r.mu.Unlock()
}

func newTestNet(t testing.TB, cfg Config) (*Net, *evRec) {
	t.Helper()
	rec := &evRec{}
	if cfg.Events == nil {
		cfg.Events = rec.add
	}
	if cfg.Workers == 0 {
		cfg.Workers = 2
	}
	if cfg.Clock == nil {
		cfg.Clock = NewManualClock(time.Unix(1e9, 0))
	}
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return n, rec
}

// sinkDriver is a test if_start: it drains the subqueue and records what it
// saw. It can refuse (OACTIVE) and measures self-concurrency.
type sinkDriver struct {
	mu       sync.Mutex
	got      []int // packet lengths in order
	workers  []int
	calls    atomic.Int64
	in       atomic.Int32
	maxIn    atomic.Int32
	full     atomic.Bool // set OACTIVE instead of draining
	pkts     atomic.Int64
	slow     time.Duration
	ioctls   []IoctlCmd
	ioctlErr error
}

func (d *sinkDriver) Start(w *Worker, sq *Subqueue) {
	d.calls.Add(1)
	v := d.in.Add(1)
	for {
		m := d.maxIn.Load()
		if v <= m || d.maxIn.CompareAndSwap(m, v) {
			break
		}
	}
	defer d.in.Add(-1)
	if d.slow > 0 {
		time.Sleep(d.slow)
	}
	if d.full.Load() {
		sq.SetOActive()
		return
	}
	for {
		p := sq.Dequeue()
		if p == nil {
			return
		}
		d.mu.Lock()
		d.got = append(d.got, p.Len)
		if w != nil {
			d.workers = append(d.workers, w.id)
		} else {
			d.workers = append(d.workers, -1)
		}
		d.mu.Unlock()
		d.pkts.Add(1)
		p.Free()
	}
}

// ioctlDriver adds an if_ioctl to sinkDriver.
type ioctlDriver struct{ sinkDriver }

func (d *ioctlDriver) Ioctl(ifp *Ifnet, cmd IoctlCmd, r *Ifreq) error {
	d.mu.Lock()
	d.ioctls = append(d.ioctls, cmd)
	err := d.ioctlErr
	d.mu.Unlock()
	return err
}

func (d *ioctlDriver) cmds() []IoctlCmd {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]IoctlCmd(nil), d.ioctls...)
}

func attach(t testing.TB, n *Net, name string, d Driver) *Ifnet {
	t.Helper()
	ifp, err := n.Attach(IfConfig{Name: name, Type: IFT_ETHER, Driver: d,
		Flags: IFF_BROADCAST | IFF_MULTICAST | IFF_RUNNING, Lladdr: []byte{2, 0, 0, 0, 0, 1}})
	if err != nil {
		t.Fatalf("attach %s: %v", name, err)
	}
	return ifp
}

func wantErrno(t testing.TB, err error, want syscall.Errno) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("got error %v, want %v", err, want)
	}
}

func pkt(n int, flags PktFlags) *Packet {
	p := DefaultPool.Get()
	p.Len = n
	p.Flags = flags
	return p
}

func eventually(t testing.TB, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func joinKinds(k []string) string { return strings.Join(k, ",") }
