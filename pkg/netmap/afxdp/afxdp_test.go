package afxdp

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/epair-cni/epair/internal/sys"
	"github.com/epair-cni/epair/internal/testutil/netnsutil"
	"github.com/epair-cni/epair/internal/testutil/netnsutil/porttest"
	"github.com/epair-cni/epair/pkg/netmap"
)

// testConfig gives the stream test generous rings; the suite itself bounds the window.
var testConfig = Config{FrameCount: 1024}

func open(tb testing.TB, ns *netnsutil.NS, ifname string, cfg Config) *Socket {
	tb.Helper()
	var s *Socket
	err := ns.Do(func() error {
		var err error
		s, err = Open(ifname, cfg)
		return err
	})
	if err != nil {
		tb.Fatalf("open AF_XDP on %s in %s: %v", ifname, ns.Name, err)
	}
	tb.Cleanup(func() { s.Close() })
	openedMu.Lock()
	openedProgs = append(openedProgs, uint32(s.ProgramID()))
	openedMaps = append(openedMaps, uint32(s.MapID()))
	openedMu.Unlock()
	return s
}

// Every program and map any test socket attached, for the end-of-suite leak check (other
// test binaries may load programs of the same name at the same time, so counting by name
// would not do).
var (
	openedMu                sync.Mutex
	openedProgs, openedMaps []uint32
)

// xdpObjects lists the IDs of the programs and maps this package loads.
func xdpObjects(tb testing.TB) (progs, maps []uint32) {
	tb.Helper()
	for id := ebpf.ProgramID(0); ; {
		next, err := ebpf.ProgramGetNextID(id)
		if err != nil {
			break
		}
		id = next
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue
		}
		if info, err := p.Info(); err == nil && info.Name == "epair_xsk_redir" {
			progs = append(progs, uint32(id))
		}
		p.Close()
	}
	for id := ebpf.MapID(0); ; {
		next, err := ebpf.MapGetNextID(id)
		if err != nil {
			break
		}
		id = next
		m, err := ebpf.NewMapFromID(id)
		if err != nil {
			continue
		}
		if info, err := m.Info(); err == nil && info.Name == "epair_xsks" {
			maps = append(maps, uint32(id))
		}
		m.Close()
	}
	return progs, maps
}

func backend() porttest.Backend {
	return porttest.Backend{
		Open: func(tb testing.TB, ns *netnsutil.NS, ifname string) porttest.Port {
			return open(tb, ns, ifname, testConfig)
		},
		IsClosed: func(err error) bool { return errors.Is(err, ErrClosed) },
		CheckGone: func(tb testing.TB, p porttest.Port) {
			s := p.(*Socket)
			// The UMEM is private anonymous memory (the kernel may merge it with a
			// neighbouring mapping): no mapping may cover any of it any more.
			if mapped(tb, sys.Addr(s.umem), len(s.umem)) {
				tb.Fatalf("UMEM at %#x still mapped after Close", sys.Addr(s.umem))
			}
			if s.ProgramID() == 0 || s.MapID() == 0 {
				tb.Fatalf("socket did not record its program/map IDs")
			}
			// Programs and maps are freed by RCU after their last reference goes.
			deadline := time.Now().Add(3 * time.Second)
			for {
				p, perr := ebpf.NewProgramFromID(s.ProgramID())
				if perr == nil {
					p.Close()
				}
				m, merr := ebpf.NewMapFromID(s.MapID())
				if merr == nil {
					m.Close()
				}
				if errors.Is(perr, syscall.ENOENT) && errors.Is(merr, syscall.ENOENT) {
					return
				}
				if time.Now().After(deadline) {
					tb.Fatalf("after Close: XDP program %d (%v) or XSKMAP %d (%v) still exists", s.ProgramID(), perr, s.MapID(), merr)
				}
				time.Sleep(20 * time.Millisecond)
			}
		},
		CheckClean: func(tb testing.TB, _ any) {
			// Programs and maps are freed by RCU after their last reference goes.
			deadline := time.Now().Add(3 * time.Second)
			for {
				progs, maps := xdpObjects(tb)
				openedMu.Lock()
				var left []uint32
				for _, id := range openedProgs {
					if slices.Contains(progs, id) {
						left = append(left, id)
					}
				}
				for _, id := range openedMaps {
					if slices.Contains(maps, id) {
						left = append(left, id)
					}
				}
				n := len(openedProgs)
				openedMu.Unlock()
				if len(left) == 0 {
					tb.Logf("all %d XDP programs and XSK maps the suite created are gone", n)
					return
				}
				if time.Now().After(deadline) {
					tb.Errorf("XDP programs/XSK maps still loaded after the suite: ids %v", left)
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
		},
	}
}

func TestConformance(t *testing.T) { porttest.Run(t, backend()) }

func TestConfigValidation(t *testing.T) {
	bad := []Config{
		{FrameSize: 1000},
		{FrameCount: 100},
		{FrameCount: 8},
		{FrameCount: 256, RingSize: 64},
		{RingSize: 100},
		{Attach: 7},
		{TXRecheck: -1},
	}
	for _, c := range bad {
		if _, err := Open("lo", c); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("Open(%+v) err = %v; want EINVAL", c, err)
		}
	}
	if _, err := Open("no-such-if0", Config{}); err == nil {
		t.Error("Open on a missing interface succeeded")
	}
}

func TestOversizeAndStats(t *testing.T) {
	p := netnsutil.TwoPods(t)
	s := open(t, p.Host, p.HostA, Config{})
	big := make([]byte, 4000)
	small := make([]byte, 60)
	copy(small, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 9, 0x88, 0xb5})
	n, err := s.Transmit([][]byte{big, small, {}})
	if err != nil || n != 3 {
		t.Fatalf("Transmit = %d, %v; want 3 consumed", n, err)
	}
	st := s.Stats()
	if st.TxDropped != 2 || st.TxPackets != 1 || st.TxBytes != 60 {
		t.Fatalf("stats = %+v; want 2 dropped, 1 sent of 60 bytes", st)
	}
	ks, err := s.KernelStats()
	if err != nil {
		t.Fatal(err)
	}
	// While open, the UMEM is mapped (the leak check after Close looks for it).
	if !mapped(t, sys.Addr(s.umem), len(s.umem)) {
		t.Fatalf("UMEM at %#x not found in /proc/self/maps", sys.Addr(s.umem))
	}
	t.Logf("kernel stats: %+v", ks)
}

func TestMultiQueueRefused(t *testing.T) {
	host := netnsutil.New(t)
	if out, err := host.Exec("ip", "link", "add", "mq0", "numtxqueues", "4", "numrxqueues", "4", "type", "veth", "peer", "name", "mq1", "numtxqueues", "4", "numrxqueues", "4"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	err := host.Do(func() error { _, err := Open("mq0", Config{}); return err })
	if !errors.Is(err, syscall.EOPNOTSUPP) {
		t.Fatalf("Open on a 4-queue veth = %v; want EOPNOTSUPP", err)
	}
}

func BenchmarkTransmitReceive(b *testing.B) { porttest.Benchmark(b, backend()) }

func TestNetmapGenericAdapter(t *testing.T) {
	porttest.Netmap(t, backend(), func(p porttest.Port) netmap.GenericBackend { return p.(*Socket) }, true)
}

func TestWaitReadyCancel(t *testing.T) {
	p := netnsutil.TwoPods(t)
	s := open(t, p.Host, p.HostA, Config{})
	// Keep pod A quiet so that the RX wait really parks.
	if _, err := p.A.Exec("ip", "link", "set", "eth0", "down"); err != nil {
		t.Fatal(err)
	}
	porttest.WaitReadyCancel(t, s)
}

// mapped reports whether any mapping of the process overlaps [addr, addr+n).
func mapped(tb testing.TB, addr uintptr, n int) bool {
	tb.Helper()
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		tb.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		var lo, hi uintptr
		if _, err := fmt.Sscanf(line, "%x-%x", &lo, &hi); err != nil {
			continue
		}
		if lo < addr+uintptr(n) && addr < hi {
			return true
		}
	}
	return false
}
