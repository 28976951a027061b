package epair

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/epair-cni/epair/internal/sys"
	"github.com/epair-cni/epair/internal/testutil/netnsutil"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func TestParseHostName(t *testing.T) {
	good := map[string]int{"epair0a": 0, "epair7a": 7, "epair123a": 123, "epair32767a": 32767}
	for n, want := range good {
		got, err := ParseHostName(n)
		if err != nil || got != want {
			t.Errorf("ParseHostName(%q) = %d, %v; want %d", n, got, err, want)
		}
	}
	for _, n := range []string{"epair", "epaira", "epair0b", "epair05a", "epair-1a", "epairxa", "foo0a", "epair32768a", "eth0"} {
		if _, err := ParseHostName(n); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("ParseHostName(%q) err = %v; want EINVAL", n, err)
		}
	}
}

func FuzzParseHostName(f *testing.F) {
	for _, s := range []string{"epair0a", "epair05a", "epair32767a", "epair", "", "epair99999999999999999999a"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParseHostName(s)
		if err != nil {
			return
		}
		if u < 0 || u > MaxUnit || HostName(u) != s {
			t.Fatalf("ParseHostName(%q) = %d, but HostName(%d) = %q", s, u, u, HostName(u))
		}
	})
}

func TestMACScheme(t *testing.T) {
	h, p := MACs("node-a", 3)
	if h[0] != 0x02 || p[0] != 0x02 || h[5] != 0x0a || p[5] != 0x0b || !bytes.Equal(h[1:5], p[1:5]) {
		t.Fatalf("MACs = %s %s; want 02:x:x:x:x:0a/0b sharing bytes 1-4", h, p)
	}
	h2, _ := MACs("node-a", 3)
	if !bytes.Equal(h, h2) {
		t.Fatalf("MACs not stable: %s vs %s", h, h2)
	}
	seen := map[string]bool{}
	for _, node := range []string{"node-a", "node-b"} {
		for u := range 1000 {
			h, _ := MACs(node, u)
			if seen[h.String()] {
				t.Fatalf("MAC %s repeats (node %s unit %d)", h, node, u)
			}
			seen[h.String()] = true
		}
	}
}

func TestGatewayMAC(t *testing.T) {
	g := GatewayMAC("node-a", "vale0")
	if g[0] != 0x02 || g[5] != 0x01 {
		t.Fatalf("GatewayMAC = %s; want a locally administered unicast 02:x:x:x:x:01", g)
	}
	if g2 := GatewayMAC("node-a", "vale0"); !bytes.Equal(g, g2) {
		t.Fatalf("GatewayMAC not stable: %s vs %s", g, g2)
	}
	for _, other := range []net.HardwareAddr{GatewayMAC("node-b", "vale0"), GatewayMAC("node-a", "vale1")} {
		if bytes.Equal(g, other) {
			t.Fatalf("GatewayMAC %s repeats on another node or switch", g)
		}
	}
	id, err := NodeID("  configured\n")
	if err != nil || id != "configured" {
		t.Fatalf("NodeID(configured) = %q, %v", id, err)
	}
}

func newEnv(t *testing.T) (*Cloner, *netnsutil.NS, *netnsutil.NS) {
	t.Helper()
	host := netnsutil.New(t)
	pod := netnsutil.New(t)
	c, err := New(Options{HostNetNS: host.Path(), NodeID: "test-node"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, host, pod
}

func TestCreateDestroy(t *testing.T) {
	c, host, pod := newEnv(t)
	// Random link-local addresses by default in the pod's namespace: the pod end must
	// still get the EUI-64 one (anti-spoofing relies on it).
	if out, err := pod.Exec("sysctl", "-qw", "net.ipv6.conf.default.addr_gen_mode=3"); err != nil {
		t.Fatalf("sysctl: %v %s", err, out)
	}
	p, err := c.Create(Request{PodNetNS: pod.Path(), IfName: "eth0", MTU: 1400, Owner: "ctr1/eth0"})
	if err != nil {
		t.Fatal(err)
	}
	if p.Unit != 0 || p.HostName != "epair0a" || p.PodName != "eth0" || p.MTU != 1400 {
		t.Fatalf("pair = %+v; want unit 0, epair0a, eth0, MTU 1400", p)
	}
	hl, err := host.NL.LinkByName("epair0a")
	if err != nil {
		t.Fatal(err)
	}
	pl, err := pod.NL.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	wantH, wantP := MACs("test-node", 0)
	if !bytes.Equal(hl.Attrs().HardwareAddr, wantH) || !bytes.Equal(pl.Attrs().HardwareAddr, wantP) {
		t.Fatalf("MACs = %s/%s; want %s/%s", hl.Attrs().HardwareAddr, pl.Attrs().HardwareAddr, wantH, wantP)
	}
	if hl.Attrs().Alias != AliasPrefix+"ctr1/eth0" {
		t.Fatalf("alias = %q", hl.Attrs().Alias)
	}
	if hl.Attrs().MTU != 1400 || pl.Attrs().MTU != 1400 {
		t.Fatalf("MTU = %d/%d; want 1400", hl.Attrs().MTU, pl.Attrs().MTU)
	}
	wantLL := "fe80::" // EUI-64 of the pod MAC: U/L bit flipped, ff:fe in the middle
	wantLL += fmt.Sprintf("%x:%xff:fe%x:%x", uint16(wantP[0]^2)<<8|uint16(wantP[1]), wantP[2], wantP[3], uint16(wantP[4])<<8|uint16(wantP[5]))
	deadline := time.Now().Add(3 * time.Second)
	for {
		addrs, err := pod.NL.AddrList(pl, netlink.FAMILY_V6)
		if err != nil {
			t.Fatal(err)
		}
		if len(addrs) > 0 {
			if got := addrs[0].IP.String(); got != netip.MustParseAddr(wantLL).String() {
				t.Fatalf("pod end link-local %s; want the EUI-64 %s", got, wantLL)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no IPv6 link-local address on the pod end")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if hl.Attrs().Flags&(1<<0) == 0 || pl.Attrs().Flags&(1<<0) == 0 {
		t.Fatalf("ends not up: %v / %v", hl.Attrs().Flags, pl.Attrs().Flags)
	}
	if _, err := pod.NL.LinkByName("epair0b"); err == nil {
		t.Fatal("epair0b still exists after rename")
	}
	if pl.Attrs().NumTxQueues != 1 || pl.Attrs().NumRxQueues != 1 || hl.Attrs().NumRxQueues != 1 {
		t.Fatalf("queues: pod %d/%d host rx %d; want single-queue ends", pl.Attrs().NumTxQueues, pl.Attrs().NumRxQueues, hl.Attrs().NumRxQueues)
	}
	fd, err := sys.SocketAt(pod.Handle, unix.AF_INET, unix.SOCK_DGRAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	on, err := sys.TxChecksum(fd, "eth0")
	unix.Close(fd)
	if err != nil || on {
		t.Fatalf("pod end tx checksum offload = %v, %v; want off", on, err)
	}
	// A second pair takes unit 1; lookups by owner find each.
	p2, err := c.Create(Request{PodNetNS: pod.Path(), IfName: "net1", Owner: "ctr1/net1"})
	if err != nil {
		t.Fatal(err)
	}
	if p2.Unit != 1 {
		t.Fatalf("second unit = %d; want 1", p2.Unit)
	}
	got, err := c.LookupOwner("ctr1/net1")
	if err != nil || got.HostName != "epair1a" {
		t.Fatalf("LookupOwner = %+v, %v", got, err)
	}
	if _, err := c.LookupOwner("nobody"); !errors.Is(err, syscall.ENXIO) {
		t.Fatalf("LookupOwner(nobody) err = %v; want ENXIO", err)
	}
	list, err := c.List()
	if err != nil || len(list) != 2 || list[0].Owner != "ctr1/eth0" || list[1].Owner != "ctr1/net1" {
		t.Fatalf("List = %+v, %v", list, err)
	}
	// Destroy through the host end removes both ends; again is success.
	if err := c.Destroy("epair0a"); err != nil {
		t.Fatal(err)
	}
	if _, err := pod.NL.LinkByName("eth0"); err == nil {
		t.Fatal("pod end survived destroy of host end")
	}
	if err := c.Destroy("epair0a"); err != nil {
		t.Fatalf("second destroy: %v", err)
	}
	// Unit 0 is free again: the lowest free unit is reused.
	p3, err := c.Create(Request{PodNetNS: pod.Path(), IfName: "eth0", Owner: "ctr2/eth0"})
	if err != nil || p3.Unit != 0 {
		t.Fatalf("recreate = %+v, %v; want unit 0", p3, err)
	}
	// Destroy through the pod end removes both; again (and on a missing netns) is success.
	if err := c.DestroyPodEnd(pod.Path(), "net1"); err != nil {
		t.Fatal(err)
	}
	if _, err := host.NL.LinkByName("epair1a"); err == nil {
		t.Fatal("host end survived destroy of pod end")
	}
	if err := c.DestroyPodEnd(pod.Path(), "net1"); err != nil {
		t.Fatalf("second pod-end destroy: %v", err)
	}
	if err := c.DestroyPodEnd("/var/run/netns/does-not-exist", "eth0"); err != nil {
		t.Fatalf("destroy in missing netns: %v", err)
	}
	if err := c.Destroy("epair0a"); err != nil {
		t.Fatal(err)
	}
	if names := host.LinkNames(t); len(names) != 1 || names[0] != "lo" {
		t.Fatalf("host links left: %v", names)
	}
	if names := pod.LinkNames(t); len(names) != 1 || names[0] != "lo" {
		t.Fatalf("pod links left: %v", names)
	}
}

func TestKeepPodNameAndRefuseForeign(t *testing.T) {
	c, host, pod := newEnv(t)
	p, err := c.Create(Request{PodNetNS: pod.Path(), Owner: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if p.PodName != "epair0b" {
		t.Fatalf("pod name = %q; want epair0b", p.PodName)
	}
	// A link named like ours but without our alias is not ours.
	if err := host.NL.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "epair9a", TxQLen: -1}, PeerName: "foreign9", PeerTxQLen: -1}); err != nil {
		t.Fatal(err)
	}
	if err := c.Destroy("epair9a"); !errors.Is(err, ErrNotOwned) || !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("destroy foreign = %v; want ErrNotOwned/EINVAL", err)
	}
	if err := c.Destroy("lo"); !errors.Is(err, ErrNotOwned) {
		t.Fatalf("destroy lo = %v; want ErrNotOwned", err)
	}
	if err := c.DestroyPodEnd(pod.Path(), "lo"); !errors.Is(err, ErrNotOwned) {
		t.Fatalf("destroy pod lo = %v; want ErrNotOwned", err)
	}
	// SetHostMTU changes ours only, within bounds.
	if err := c.SetHostMTU(p.HostName, 1400); err != nil {
		t.Fatal(err)
	}
	if l, err := host.NL.LinkByName(p.HostName); err != nil || l.Attrs().MTU != 1400 {
		t.Fatalf("host end after SetHostMTU(1400): %v, %v", l, err)
	}
	if err := c.SetHostMTU("epair9a", 1400); !errors.Is(err, ErrNotOwned) {
		t.Fatalf("SetHostMTU on a foreign link = %v; want ErrNotOwned", err)
	}
	if err := c.SetHostMTU(p.HostName, 40); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("SetHostMTU(40) = %v; want EINVAL", err)
	}
	// The foreign epair9a is skipped by List and by the allocator's own destroy.
	list, err := c.List()
	if err != nil || len(list) != 1 || list[0].HostName != "epair0a" {
		t.Fatalf("List = %+v, %v", list, err)
	}
	// The name is taken: the allocator skips unit 9 when it gets there and never deletes it.
	if err := c.Destroy(p.HostName); err != nil {
		t.Fatal(err)
	}
}

func TestRequestValidation(t *testing.T) {
	c, _, pod := newEnv(t)
	bad := []Request{
		{IfName: "eth0", Owner: "o"},
		{PodNetNS: pod.Path(), IfName: "this-name-is-too-long", Owner: "o"},
		{PodNetNS: pod.Path(), IfName: "a/b", Owner: "o"},
		{PodNetNS: pod.Path(), MTU: 10, Owner: "o"},
		{PodNetNS: pod.Path(), MTU: 70000, Owner: "o"},
		{PodNetNS: pod.Path()},
		{PodNetNS: pod.Path(), Owner: strings.Repeat("x", 300)},
	}
	for _, r := range bad {
		if _, err := c.Create(r); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("Create(%+v) err = %v; want EINVAL", r, err)
		}
	}
	if _, err := c.Create(Request{PodNetNS: "/var/run/netns/missing-ns", Owner: "o"}); err == nil || !strings.Contains(err.Error(), "missing-ns") {
		t.Errorf("Create in missing netns err = %v; want one naming the path", err)
	}
	// Existing ifname in the pod: EEXIST, nothing left behind.
	if _, err := c.Create(Request{PodNetNS: pod.Path(), IfName: "lo", Owner: "o"}); !errors.Is(err, syscall.EEXIST) {
		t.Errorf("Create(IfName lo) err = %v; want EEXIST", err)
	}
	if list, _ := c.List(); len(list) != 0 {
		t.Errorf("links left after failed create: %+v", list)
	}
}

func TestUnitExhaustion(t *testing.T) {
	host := netnsutil.New(t)
	pod := netnsutil.New(t)
	c, err := New(Options{HostNetNS: host.Path(), NodeID: "n", MaxUnit: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range 2 {
		if _, err := c.Create(Request{PodNetNS: pod.Path(), IfName: fmt.Sprintf("eth%d", i), Owner: "o"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Create(Request{PodNetNS: pod.Path(), IfName: "eth9", Owner: "o"}); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("third create err = %v; want ENOSPC", err)
	}
	if _, err := New(Options{MaxUnit: MaxUnit + 1, NodeID: "n"}); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("New(MaxUnit too big) err = %v; want EINVAL", err)
	}
}

func TestConcurrentClones(t *testing.T) {
	c, host, _ := newEnv(t)
	const n = 50
	pods := make([]*netnsutil.NS, n)
	for i := range pods {
		pods[i] = netnsutil.New(t)
	}
	var wg sync.WaitGroup
	pairs := make([]*Pair, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			pairs[i], errs[i] = c.Create(Request{PodNetNS: pods[i].Path(), IfName: "eth0", MTU: 1500, Owner: fmt.Sprintf("ctr%d/eth0", i)})
		})
	}
	wg.Wait()
	units := map[int]bool{}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("clone %d: %v", i, errs[i])
		}
		if units[pairs[i].Unit] {
			t.Fatalf("unit %d allocated twice", pairs[i].Unit)
		}
		units[pairs[i].Unit] = true
	}
	for u := range n {
		if !units[u] {
			t.Fatalf("units are not 0..%d: %d missing", n-1, u)
		}
	}
	list, err := c.List()
	if err != nil || len(list) != n {
		t.Fatalf("List: %d pairs, %v; want %d", len(list), err, n)
	}
	for i := range n {
		wg.Go(func() {
			if i%2 == 0 {
				errs[i] = c.Destroy(pairs[i].HostName)
			} else {
				errs[i] = c.DestroyPodEnd(pods[i].Path(), "eth0")
			}
		})
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("destroy %d: %v", i, errs[i])
		}
	}
	if names := host.LinkNames(t); len(names) != 1 {
		t.Fatalf("host links left: %v", names)
	}
	for i := range pods {
		if names := pods[i].LinkNames(t); len(names) != 1 {
			t.Fatalf("pod %d links left: %v", i, names)
		}
	}
}

func TestCheck(t *testing.T) {
	c, host, pod := newEnv(t)
	p, err := c.Create(Request{PodNetNS: pod.Path(), IfName: "eth0", Owner: "ctr/eth0"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.Check("ctr/eth0", pod.Path(), "eth0")
	if err != nil || got.PodIndex != p.PodIndex || got.HostName != p.HostName {
		t.Fatalf("Check = %+v, %v", got, err)
	}
	if _, err := c.Check("other", pod.Path(), "eth0"); !errors.Is(err, syscall.ENXIO) {
		t.Fatalf("Check(unknown owner) = %v; want ENXIO", err)
	}
	if _, err := c.Check("ctr/eth0", pod.Path(), "eth1"); !errors.Is(err, syscall.ENXIO) {
		t.Fatalf("Check(missing pod end) = %v; want ENXIO", err)
	}
	pl, _ := pod.NL.LinkByName("eth0")
	if err := pod.NL.LinkSetHardwareAddr(pl, net.HardwareAddr{2, 9, 9, 9, 9, 9}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Check("ctr/eth0", pod.Path(), "eth0"); !errors.Is(err, ErrMismatch) {
		t.Fatalf("Check(wrong pod MAC) = %v; want ErrMismatch", err)
	}
	hl, _ := host.NL.LinkByName(p.HostName)
	if err := host.NL.LinkSetDown(hl); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Check("ctr/eth0", pod.Path(), "eth0"); !errors.Is(err, ErrMismatch) {
		t.Fatalf("Check(host end down) = %v; want ErrMismatch", err)
	}
	if err := c.Destroy(p.HostName); err != nil {
		t.Fatal(err)
	}
}

// TestCreateWithoutIPv6: a pod namespace with IPv6 disabled still gets its pair (there is
// no link-local addressing to pin).
func TestCreateWithoutIPv6(t *testing.T) {
	c, _, pod := newEnv(t)
	for _, k := range []string{"all", "default"} {
		if out, err := pod.Exec("sysctl", "-qw", "net.ipv6.conf."+k+".disable_ipv6=1"); err != nil {
			t.Fatalf("sysctl: %v %s", err, out)
		}
	}
	p, err := c.Create(Request{PodNetNS: pod.Path(), IfName: "eth0", Owner: "nov6/eth0"})
	if err != nil {
		t.Fatalf("Create in a namespace without IPv6: %v", err)
	}
	if err := c.Destroy(p.HostName); err != nil {
		t.Fatal(err)
	}
}

func TestOwnerKey(t *testing.T) {
	if k := OwnerKey("podnet", "abc", "eth0"); k != "podnet/abc/eth0" {
		t.Error(k)
	}
	if n, c, i, ok := ParseOwnerKey("podnet/abc/eth0"); !ok || n != "podnet" || c != "abc" || i != "eth0" {
		t.Errorf("ParseOwnerKey = %q %q %q %v", n, c, i, ok)
	}
	long := strings.Repeat("x", 300)
	k := OwnerKey("podnet", long, "eth0")
	if len(k) > 255-len(AliasPrefix) || !strings.HasPrefix(k, "podnet/sha256:") || k != OwnerKey("podnet", long, "eth0") {
		t.Errorf("long id: %q", k)
	}
	if _, _, _, ok := ParseOwnerKey(k); ok {
		t.Errorf("ParseOwnerKey(%q) claims to invert a hashed container ID", k)
	}
	k = OwnerKey(long, long, "eth0")
	if len(k) > 255-len(AliasPrefix) || !strings.HasPrefix(k, "sha256:") {
		t.Errorf("long network: %q", k)
	}
	for _, bad := range []string{"", "x", "a/b", k} {
		if _, _, _, ok := ParseOwnerKey(bad); ok {
			t.Errorf("ParseOwnerKey(%q) ok", bad)
		}
	}
}
