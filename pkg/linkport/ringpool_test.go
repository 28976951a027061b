package linkport

import (
	"errors"
	"fmt"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/epair-cni/epair/internal/testutil/netnsutil"
	"github.com/epair-cni/epair/internal/testutil/netnsutil/porttest"
	"github.com/epair-cni/epair/pkg/netmap/afpacket"
)

// waitPool waits until pool holds n prepared sockets.
func waitPool(tb testing.TB, pool *RingPool, n int) {
	tb.Helper()
	for deadline := time.Now().Add(10 * time.Second); pool.Len() != n; {
		if time.Now().After(deadline) {
			tb.Fatalf("ring pool holds %d sockets after 10 s, want %d (last error: %v)", pool.Len(), n, pool.Err())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestRingPool: a pool fills to its size in the background, an offload Open takes a
// prepared socket from it (the port receives) and the pool fills again; a pool made for
// another configuration is left alone, Backend Ringless opens without a ring, and
// Close releases every socket still pooled. Bad sizes and configurations are refused.
func TestRingPool(t *testing.T) {
	for _, n := range []int{0, -1, MaxRingPool + 1} {
		if _, err := NewRingPool(afpacket.Config{}, n, nil, nil); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("NewRingPool(size %d) = %v; want EINVAL", n, err)
		}
	}
	if _, err := NewRingPool(afpacket.Config{BlockSize: 4096}, 1, nil, nil); !errors.Is(err, afpacket.ErrBadConfig) {
		t.Errorf("NewRingPool(4 KiB blocks) = %v; want ErrBadConfig", err)
	}

	p := netnsutil.TwoPods(t)
	before := porttest.FDCount(t)
	pool, err := NewRingPool(afpacket.Config{}, 3, p.Host.Do, nil)
	if err != nil {
		t.Fatal(err)
	}
	waitPool(t, pool, 3)
	open := func(ifname string, opts Options) Opened {
		t.Helper()
		var o Opened
		if err := p.Host.Do(func() error {
			var err error
			o, err = Open(ifname, opts)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return o
	}
	o := open(p.HostA, Options{Offload: true, Rings: pool})
	if o.Backend != Packet || o.Fallback != nil || pool.Taken() != 1 {
		t.Fatalf("offload port: backend %v, fallback %v, %d taken from the pool; want af_packet from the pool", o.Backend, o.Fallback, pool.Taken())
	}
	waitPool(t, pool, 3) // refilled
	if _, err := p.A.Exec("ping", "-c", "1", "-W", "1", p.IPB); err == nil {
		t.Log("ping crossed without a switch") // nothing forwards; only the frames matter
	}
	s := o.Port.(*afpacket.Socket)
	if err := s.WaitRX(5 * time.Second); err != nil {
		t.Fatalf("the pooled port received nothing from its pod: %v", err)
	}
	if err := o.Port.Close(); err != nil {
		t.Fatal(err)
	}

	other := open(p.HostB, Options{Offload: true, Rings: pool, Packet: afpacket.Config{VnetRxSlots: 64}})
	if other.Backend != Packet || pool.Taken() != 1 {
		t.Fatalf("port of another config: backend %v, %d taken; want af_packet, none taken", other.Backend, pool.Taken())
	}
	other.Port.Close()
	rl := open(p.HostB, Options{Offload: true, Rings: pool, Backend: Ringless})
	if rl.Backend != Ringless || pool.Taken() != 1 {
		t.Fatalf("ring-less offload port: backend %v, %d taken; want af_packet_ringless, none taken", rl.Backend, pool.Taken())
	}
	rl.Port.Close()

	if err := pool.Close(); err != nil {
		t.Fatal(err)
	}
	if err := pool.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if after := porttest.FDCount(t); after != before {
		t.Fatalf("open descriptors %d before the pool, %d after it closed", before, after)
	}
}

// TestRingPoolErrors: a pool that cannot prepare sockets reports it once per spell of
// failures (not at every retry), says why in Err, and fills once it can again.
func TestRingPoolErrors(t *testing.T) {
	var failing atomic.Bool
	failing.Store(true)
	var reports atomic.Int32
	in := func(f func() error) error {
		if failing.Load() {
			return fmt.Errorf("namespace gone: %w", syscall.ENOENT)
		}
		return f()
	}
	pool, err := NewRingPool(afpacket.Config{}, 1, in, func(err error) {
		if !errors.Is(err, syscall.ENOENT) {
			t.Errorf("reported %v; want the namespace's ENOENT", err)
		}
		reports.Add(1)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	time.Sleep(ringPoolRetry + ringPoolRetry/2) // the first try and one retry
	if n := reports.Load(); n != 1 || !errors.Is(pool.Err(), syscall.ENOENT) || pool.Len() != 0 {
		t.Fatalf("while failing: %d reports, Err %v, %d ready; want 1 report, ENOENT, none", n, pool.Err(), pool.Len())
	}
	failing.Store(false)
	waitPool(t, pool, 1)
	if pool.Err() != nil || reports.Load() != 1 {
		t.Fatalf("after recovering: Err %v, %d reports", pool.Err(), reports.Load())
	}
}
