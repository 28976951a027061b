package netnsutil

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/epair-cni/epair/internal/sys"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// RequireRoot skips the test unless it runs as root (network namespaces, veth and XDP need
// CAP_NET_ADMIN and CAP_SYS_ADMIN).
func RequireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("skipping: needs root (CAP_NET_ADMIN/CAP_SYS_ADMIN) to create network namespaces")
	}
}

// RequireTool skips the test when the named executable is not on PATH, naming the Debian
// package that provides it.
func RequireTool(tb testing.TB, tool, debPackage string) string {
	tb.Helper()
	p, err := exec.LookPath(tool)
	if err != nil {
		tb.Skipf("skipping: %s not found on PATH (apt-get install %s)", tool, debPackage)
	}
	return p
}

// NS is a named network namespace created for one test.
type NS struct {
	Name   string          // name under /var/run/netns
	Handle netns.NsHandle  // open handle, closed by the test cleanup
	NL     *netlink.Handle // netlink handle bound to the namespace
}

var seq atomic.Uint64

// Path is the namespace's bind-mount path, usable with setns(2) and by CNI-style callers.
func (n *NS) Path() string { return "/var/run/netns/" + n.Name }

// New creates a fresh named namespace with its loopback up. The namespace is deleted (with
// every link still inside it) when the test ends.
func New(tb testing.TB) *NS {
	tb.Helper()
	RequireRoot(tb)
	name := fmt.Sprintf("eptest-%d-%d", os.Getpid(), seq.Add(1))
	n, err := create(name)
	if err != nil {
		tb.Fatalf("create netns %s: %v", name, err)
	}
	tb.Cleanup(func() {
		if err := n.Remove(); err != nil {
			tb.Errorf("remove netns %s: %v", name, err)
		}
	})
	return n
}

func create(name string) (*NS, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("get current netns: %w", err)
	}
	defer orig.Close()
	h, err := netns.NewNamed(name) // switches this thread into the new namespace
	if serr := netns.Set(orig); serr != nil {
		// The thread is stuck in a foreign namespace: do not hand it back to the scheduler.
		panic(fmt.Sprintf("netnsutil: restore netns: %v", serr))
	}
	if err != nil {
		return nil, fmt.Errorf("create named netns: %w", err)
	}
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		h.Close()
		_ = netns.DeleteNamed(name)
		return nil, fmt.Errorf("open netlink handle in %s: %w", name, err)
	}
	n := &NS{Name: name, Handle: h, NL: nl}
	lo, err := nl.LinkByName("lo")
	if err == nil {
		err = nl.LinkSetUp(lo)
	}
	if err != nil {
		_ = n.Remove()
		return nil, fmt.Errorf("set lo up in %s: %w", name, err)
	}
	return n, nil
}

// Remove closes the handles and deletes the namespace. It is idempotent.
func (n *NS) Remove() error {
	if n.NL != nil {
		n.NL.Close()
		n.NL = nil
	}
	if n.Handle.IsOpen() {
		n.Handle.Close()
	}
	if err := netns.DeleteNamed(n.Name); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// Do runs f on a thread switched into the namespace and switches back before returning.
func (n *NS) Do(f func() error) error { return sys.InNetNS(n.Handle, n.Name, f) }

// Exec runs a command inside the namespace (ip netns exec) and returns its combined output.
func (n *NS) Exec(name string, args ...string) (string, error) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s in %s: %w: %s", name, strings.Join(args, " "), n.Name, err, out)
	}
	return string(out), nil
}

// LinkNames lists the names of the links in the namespace, sorted as the kernel returns them.
func (n *NS) LinkNames(tb testing.TB) []string {
	tb.Helper()
	links, err := n.NL.LinkList()
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		tb.Fatalf("list links in %s: %v", n.Name, err)
	}
	names := make([]string, 0, len(links))
	for _, l := range links {
		names = append(names, l.Attrs().Name)
	}
	return names
}

// Veth creates a veth pair aName (in a) ↔ bName (in b), both up, with optional IPv4
// prefixes (e.g. "10.9.0.1/24"; empty for none) and returns the two links' indexes.
func Veth(tb testing.TB, a *NS, aName, aAddr string, b *NS, bName, bAddr string) (aIndex, bIndex int) {
	tb.Helper()
	v := &netlink.Veth{
		LinkAttrs:       netlink.LinkAttrs{Name: aName, TxQLen: -1, NumTxQueues: 1, NumRxQueues: 1},
		PeerName:        bName,
		PeerTxQLen:      -1,
		PeerNumTxQueues: 1,
		PeerNumRxQueues: 1,
		PeerNamespace:   netlink.NsFd(int(b.Handle)),
	}
	if err := a.NL.LinkAdd(v); err != nil {
		tb.Fatalf("add veth %s/%s: %v", aName, bName, err)
	}
	aIndex = setup(tb, a, aName, aAddr)
	bIndex = setup(tb, b, bName, bAddr)
	return aIndex, bIndex
}

func setup(tb testing.TB, n *NS, name, addr string) int {
	tb.Helper()
	l, err := n.NL.LinkByName(name)
	if err != nil {
		tb.Fatalf("find %s in %s: %v", name, n.Name, err)
	}
	if addr != "" {
		a, err := netlink.ParseAddr(addr)
		if err != nil {
			tb.Fatalf("parse address %q: %v", addr, err)
		}
		if err := n.NL.AddrAdd(l, a); err != nil {
			tb.Fatalf("add %s to %s in %s: %v", addr, name, n.Name, err)
		}
	}
	if err := n.NL.LinkSetUp(l); err != nil {
		tb.Fatalf("set %s up in %s: %v", name, n.Name, err)
	}
	return l.Attrs().Index
}

// DisableTxChecksum turns off transmit checksum offload of a link, so that the frames it
// sends carry complete checksums when they cross a userspace switch (see sys.SetTxChecksum).
func DisableTxChecksum(tb testing.TB, n *NS, name string) {
	tb.Helper()
	fd, err := sys.SocketAt(n.Handle, unix.AF_INET, unix.SOCK_DGRAM, 0)
	if err != nil {
		tb.Fatalf("socket in %s: %v", n.Name, err)
	}
	defer unix.Close(fd)
	if err := sys.SetTxChecksum(fd, name, false); err != nil {
		tb.Fatalf("in %s: %v", n.Name, err)
	}
}

// TxChecksumOn reports whether a link's transmit checksum offload is on.
func TxChecksumOn(tb testing.TB, n *NS, name string) bool {
	tb.Helper()
	fd, err := sys.SocketAt(n.Handle, unix.AF_INET, unix.SOCK_DGRAM, 0)
	if err != nil {
		tb.Fatalf("socket in %s: %v", n.Name, err)
	}
	defer unix.Close(fd)
	on, err := sys.TxChecksum(fd, name)
	if err != nil {
		tb.Fatalf("in %s: %v", n.Name, err)
	}
	return on
}

// SetMAC sets a link's hardware address.
func SetMAC(tb testing.TB, n *NS, name string, mac net.HardwareAddr) {
	tb.Helper()
	l, err := n.NL.LinkByName(name)
	if err != nil {
		tb.Fatalf("find %s in %s: %v", name, n.Name, err)
	}
	if err := n.NL.LinkSetHardwareAddr(l, mac); err != nil {
		tb.Fatalf("set MAC of %s in %s: %v", name, n.Name, err)
	}
}

// Main runs the package's tests and then fails the run if any namespace this process
// created is still present (every test must remove what it made). Use it as
//
//	func TestMain(m *testing.M) { netnsutil.Main(m) }
func Main(m *testing.M) {
	code := m.Run()
	prefix := fmt.Sprintf("eptest-%d-", os.Getpid())
	ents, _ := os.ReadDir("/var/run/netns")
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) {
			fmt.Fprintf(os.Stderr, "netnsutil: namespace %s left behind\n", e.Name())
			code = 1
		}
	}
	os.Exit(code)
}
