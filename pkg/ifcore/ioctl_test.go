package ifcore

import (
	"errors"
	"net/netip"
	"slices"
	"syscall"
	"testing"
)

var root = Cred{Privileged: true}

func TestIT07_Groups(t *testing.T) {
	n, _ := newTestNet(t, Config{})
	a := attach(t, n, "g0", &sinkDriver{})
	b := attach(t, n, "g1", &sinkDriver{})
	if err := n.AddGroup(a, "epair"); err != nil {
		t.Fatal(err)
	}
	wantErrno(t, n.AddGroup(a, "grp1"), syscall.EINVAL)
	wantErrno(t, n.AddGroup(a, "epair"), syscall.EEXIST)
	wantErrno(t, n.AddGroup(a, ""), syscall.EINVAL)                  // D-I7
	wantErrno(t, n.AddGroup(a, "abcdefghijklmnopq"), syscall.EINVAL) // D-I7
	wantErrno(t, n.DelGroup(b, "epair"), syscall.ENOENT)
	_ = n.AddGroup(b, "epair")
	_ = n.AddGroup(a, "pods")
	if m, _, err := n.GroupMembers("epair", 10); err != nil || !slices.Equal(m, []string{"g0", "g1"}) {
		t.Fatalf("members %v %v", m, err)
	}
	_, need, err := n.Groups(a, 0)
	if err != nil || need != 2 {
		t.Fatalf("size query: %d %v", need, err)
	}
	part, need, err := n.Groups(a, 1)
	wantErrno(t, err, syscall.EINVAL)
	if len(part) != 1 || need != 2 { // D-I10
		t.Fatalf("partial %v need %d", part, need)
	}
	_ = n.DelGroup(a, "epair")
	_ = n.DelGroup(b, "epair")
	_, _, err = n.GroupMembers("epair", 10)
	wantErrno(t, err, syscall.ENOENT) // last member left: group gone
	// Through the ioctl.
	r := &Ifreq{Name: "g0", Group: "web"}
	if err := n.Ioctl(root, SIOCAIFGROUP, r); err != nil {
		t.Fatal(err)
	}
	r = &Ifreq{Name: "g0", Len: 0}
	if err := n.Ioctl(Cred{}, SIOCGIFGROUP, r); err != nil || r.Len != 2 {
		t.Fatalf("SIOCGIFGROUP size %d %v", r.Len, err)
	}
	wantErrno(t, n.Ioctl(Cred{}, SIOCAIFGROUP, &Ifreq{Name: "g0", Group: "x"}), syscall.EPERM)
}

func TestIT08_SetFlags(t *testing.T) {
	n, rec := newTestNet(t, Config{})
	d := &ioctlDriver{}
	d.full.Store(true)
	ifp := attach(t, n, "f0", d)
	r := &Ifreq{Name: "f0", Flags: ifp.Flags() | IFF_UP}
	wantErrno(t, n.Ioctl(Cred{}, SIOCSIFFLAGS, r), syscall.EPERM)
	if err := n.Ioctl(root, SIOCSIFFLAGS, r); err != nil {
		t.Fatal(err)
	}
	if ifp.Flags()&IFF_UP == 0 {
		t.Fatal("not up")
	}
	_ = ifp.Dispatch(nil, pkt(10, 0))
	if ifp.Snd().Len() != 1 {
		t.Fatal("not queued")
	}
	rec.reset()
	// Down: purge + sync; CANTCHANGE bits (RUNNING, MULTICAST) survive a
	// request that clears them; PPROMISC forces PROMISC.
	r.Flags = IFF_PPROMISC | IFF_LINK0
	if err := n.Ioctl(root, SIOCSIFFLAGS, r); err != nil {
		t.Fatal(err)
	}
	f := ifp.Flags()
	if f&IFF_UP != 0 || ifp.Snd().Len() != 0 {
		t.Fatal("down did not purge")
	}
	if f&IFF_RUNNING == 0 || f&IFF_MULTICAST == 0 || f&IFF_LINK0 == 0 || f&IFF_PROMISC == 0 {
		t.Fatalf("flags %#x", f)
	}
	r.Flags = 0
	_ = n.Ioctl(root, SIOCSIFFLAGS, r)
	if ifp.Flags()&IFF_PROMISC != 0 {
		t.Fatal("PROMISC not cleared with pcount 0")
	}
	if !slices.Contains(d.cmds(), SIOCSIFFLAGS) {
		t.Fatal("driver not told")
	}
	// IFF_SMART: no if_up/if_down (no purge).
	s := attach(t, n, "smart0", &ioctlDriver{})
	s.SetFlagBits(IFF_SMART | IFF_UP)
	s.Snd().Subqueue(0).Prepend(pkt(1, 0))
	_ = n.Ioctl(root, SIOCSIFFLAGS, &Ifreq{Name: "smart0", Flags: 0})
	if s.Snd().Len() != 1 {
		t.Fatal("IFF_SMART interface was purged")
	}
	s.Snd().PurgeAll()
	// D-I4: driver errors propagate.
	d.ioctlErr = syscall.EIO
	wantErrno(t, n.Ioctl(root, SIOCSIFFLAGS, &Ifreq{Name: "f0", Flags: IFF_UP}), syscall.EIO)
}

func TestIT09_SetMTU(t *testing.T) {
	n, rec := newTestNet(t, Config{})
	attach(t, n, "m0", &ioctlDriver{})
	attach(t, n, "m1", &sinkDriver{})
	wantErrno(t, n.Ioctl(root, SIOCSIFMTU, &Ifreq{Name: "m0", MTU: 71}), syscall.EINVAL)
	wantErrno(t, n.Ioctl(root, SIOCSIFMTU, &Ifreq{Name: "m0", MTU: 65536}), syscall.EINVAL)
	wantErrno(t, n.Ioctl(root, SIOCSIFMTU, &Ifreq{Name: "m1", MTU: 9000}), syscall.EOPNOTSUPP)
	rec.reset()
	if err := n.Ioctl(root, SIOCSIFMTU, &Ifreq{Name: "m0", MTU: 9000}); err != nil {
		t.Fatal(err)
	}
	r := &Ifreq{Name: "m0"}
	_ = n.Ioctl(Cred{}, SIOCGIFMTU, r)
	if r.MTU != 9000 || joinKinds(rec.kinds("m0")) != "ifmsg" {
		t.Fatalf("mtu %d events %v", r.MTU, rec.kinds("m0"))
	}
}

func TestIT10_CapAndTSO(t *testing.T) {
	n, _ := newTestNet(t, Config{})
	ifp, err := n.Attach(IfConfig{Name: "c0", Driver: &ioctlDriver{}, Capabilities: 0x3})
	if err != nil {
		t.Fatal(err)
	}
	wantErrno(t, n.Ioctl(root, SIOCSIFCAP, &Ifreq{Name: "c0", ReqCap: 0x4}), syscall.EINVAL)
	if err := n.Ioctl(root, SIOCSIFCAP, &Ifreq{Name: "c0", ReqCap: 0x1}); err != nil {
		t.Fatal(err)
	}
	r := &Ifreq{Name: "c0"}
	_ = n.Ioctl(Cred{}, SIOCGIFCAP, r)
	if r.ReqCap != 0x3 || r.CurCap != 0x1 {
		t.Fatalf("cap %#x/%#x", r.ReqCap, r.CurCap)
	}
	wantErrno(t, n.Ioctl(root, SIOCSIFTSOLEN, &Ifreq{Name: "c0", TSOLen: 0}), syscall.EINVAL)
	_ = ifp
}

// TestDI4_SetCapErrors: SIOCSIFCAP returns the driver's error (the seed
// ignores it, 002:1898-1900) and is EOPNOTSUPP when the driver has no ioctl
// (the seed calls a possibly NULL if_ioctl). A refused request enables
// nothing; EPERM and the EINVAL check for unsupported bits come first.
func TestDI4_SetCapErrors(t *testing.T) {
	n, _ := newTestNet(t, Config{})
	d := &ioctlDriver{}
	if _, err := n.Attach(IfConfig{Name: "cap0", Driver: d, Capabilities: 0x3}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Attach(IfConfig{Name: "cap1", Driver: &sinkDriver{}, Capabilities: 0x3}); err != nil {
		t.Fatal(err)
	}
	curcap := func(name string) uint32 {
		t.Helper()
		r := &Ifreq{Name: name}
		if err := n.Ioctl(Cred{}, SIOCGIFCAP, r); err != nil {
			t.Fatal(err)
		}
		return r.CurCap
	}
	setErr := func(err error) {
		d.mu.Lock()
		d.ioctlErr = err
		d.mu.Unlock()
	}
	// The driver refuses: its error comes back and nothing is enabled.
	setErr(syscall.EIO)
	wantErrno(t, n.Ioctl(root, SIOCSIFCAP, &Ifreq{Name: "cap0", ReqCap: 0x1}), syscall.EIO)
	if !slices.Contains(d.cmds(), SIOCSIFCAP) {
		t.Fatal("driver not asked")
	}
	if c := curcap("cap0"); c != 0 {
		t.Fatalf("capenable %#x after the driver refused, want 0", c)
	}
	// The driver accepts.
	setErr(nil)
	if err := n.Ioctl(root, SIOCSIFCAP, &Ifreq{Name: "cap0", ReqCap: 0x1}); err != nil {
		t.Fatal(err)
	}
	if c := curcap("cap0"); c != 0x1 {
		t.Fatalf("capenable %#x, want 0x1", c)
	}
	// Refused again: the enabled set stays as it was.
	setErr(syscall.ENODEV)
	wantErrno(t, n.Ioctl(root, SIOCSIFCAP, &Ifreq{Name: "cap0", ReqCap: 0x3}), syscall.ENODEV)
	if c := curcap("cap0"); c != 0x1 {
		t.Fatalf("capenable %#x after a refused change, want 0x1", c)
	}
	// No driver ioctl: EOPNOTSUPP, nothing enabled.
	wantErrno(t, n.Ioctl(Cred{}, SIOCSIFCAP, &Ifreq{Name: "cap1", ReqCap: 0x1}), syscall.EPERM)
	wantErrno(t, n.Ioctl(root, SIOCSIFCAP, &Ifreq{Name: "cap1", ReqCap: 0x4}), syscall.EINVAL)
	wantErrno(t, n.Ioctl(root, SIOCSIFCAP, &Ifreq{Name: "cap1", ReqCap: 0x1}), syscall.EOPNOTSUPP)
	if c := curcap("cap1"); c != 0 {
		t.Fatalf("capenable %#x without a driver ioctl, want 0", c)
	}
}

func TestIT11_Rename(t *testing.T) {
	n, rec := newTestNet(t, Config{})
	attach(t, n, "old0", &sinkDriver{})
	attach(t, n, "other0", &sinkDriver{})
	wantErrno(t, n.Ioctl(root, SIOCSIFNAME, &Ifreq{Name: "old0", NewName: ""}), syscall.EINVAL)
	wantErrno(t, n.Ioctl(root, SIOCSIFNAME, &Ifreq{Name: "old0", NewName: "0123456789abcdef"}), syscall.EINVAL) // D-I5
	wantErrno(t, n.Ioctl(root, SIOCSIFNAME, &Ifreq{Name: "old0", NewName: "other0"}), syscall.EEXIST)
	rec.reset()
	if err := n.Ioctl(root, SIOCSIFNAME, &Ifreq{Name: "old0", NewName: "new0"}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Unit("old0"); err == nil {
		t.Fatal("old name still found")
	}
	if _, err := n.Unit("new0"); err != nil {
		t.Fatal("new name not found")
	}
	if got := joinKinds(rec.kinds("")); got != "detach,departure,attach,arrival" {
		t.Fatalf("events %q", got)
	}
}

func TestIT12_UnknownInterfaceAndPollCPU(t *testing.T) {
	n, _ := newTestNet(t, Config{})
	attach(t, n, "p0", &sinkDriver{})
	for _, cmd := range []IoctlCmd{SIOCGIFFLAGS, SIOCSIFFLAGS, SIOCSIFMTU, SIOCGIFINDEX, SIOCADDMULTI} {
		wantErrno(t, n.Ioctl(root, cmd, &Ifreq{Name: "nope0"}), syscall.ENXIO)
	}
	r := &Ifreq{Name: "p0"}
	if err := n.Ioctl(Cred{}, SIOCGIFPOLLCPU, r); err != nil || r.PollCPU != -1 {
		t.Fatal("SIOCGIFPOLLCPU")
	}
	wantErrno(t, n.Ioctl(Cred{}, SIOCSIFPOLLCPU, r), syscall.EPERM) // D-I6
	wantErrno(t, n.Ioctl(root, SIOCGIFMEDIA, r), syscall.EOPNOTSUPP)
	wantErrno(t, n.Ioctl(root, IoctlCmd(999), r), syscall.EOPNOTSUPP)
	_ = n.Ioctl(Cred{}, SIOCGIFINDEX, r)
	if r.Index != 1 {
		t.Fatal("index")
	}
}

func TestIT13_Promisc(t *testing.T) {
	n, _ := newTestNet(t, Config{})
	d := &ioctlDriver{}
	ifp := attach(t, n, "pr0", d)
	wantErrno(t, ifp.Promisc(true), syscall.ENETDOWN)
	ifp.SetFlagBits(IFF_UP)
	_ = ifp.Promisc(true)
	_ = ifp.Promisc(true)
	_ = ifp.Promisc(false)
	if ifp.Flags()&IFF_PROMISC == 0 {
		t.Fatal("cleared with count 1")
	}
	_ = ifp.Promisc(false)
	if ifp.Flags()&IFF_PROMISC != 0 {
		t.Fatal("not cleared at 0")
	}
	_ = ifp.Promisc(false) // D-I3: clamped
	if pc, _ := ifp.Counts(); pc != 0 {
		t.Fatalf("pcount %d", pc)
	}
	// PPROMISC: only the count.
	ifp.SetFlagBits(IFF_PPROMISC | IFF_PROMISC)
	before := len(d.cmds())
	_ = ifp.Promisc(true)
	if pc, _ := ifp.Counts(); pc != 1 || len(d.cmds()) != before {
		t.Fatal("PPROMISC must only count")
	}
	_ = ifp.Promisc(false)
	ifp.ClearFlagBits(IFF_PPROMISC | IFF_PROMISC)
	// Driver failure rolls back flag and count (D-I3).
	d.ioctlErr = syscall.EIO
	wantErrno(t, ifp.Promisc(true), syscall.EIO)
	if pc, _ := ifp.Counts(); pc != 0 || ifp.Flags()&IFF_PROMISC != 0 {
		t.Fatal("no rollback")
	}
}

func TestIT14_Allmulti(t *testing.T) {
	n, _ := newTestNet(t, Config{})
	d := &ioctlDriver{}
	ifp := attach(t, n, "am0", d)
	_ = ifp.Allmulti(true)
	_ = ifp.Allmulti(true)
	_ = ifp.Allmulti(false)
	if len(d.cmds()) != 1 || ifp.Flags()&IFF_ALLMULTI == 0 {
		t.Fatal("first on only")
	}
	_ = ifp.Allmulti(false)
	if len(d.cmds()) != 2 || ifp.Flags()&IFF_ALLMULTI != 0 {
		t.Fatal("last off")
	}
}

func TestIT15_Multicast(t *testing.T) {
	n, _ := newTestNet(t, Config{})
	d := &ioctlDriver{}
	ifp := attach(t, n, "mc0", d)
	grp := LinkSockaddr([]byte{0x01, 0x00, 0x5e, 0, 0, 1})
	add := &Ifreq{Name: "mc0", Addr: grp}
	_ = n.Ioctl(root, SIOCADDMULTI, add)
	_ = n.Ioctl(root, SIOCADDMULTI, add)
	if m := ifp.Multiaddrs(); len(m) != 1 || m[0].Refcount != 2 || len(d.cmds()) != 1 {
		t.Fatalf("add twice: %+v, driver %v", m, d.cmds())
	}
	_ = n.Ioctl(root, SIOCDELMULTI, add)
	if m := ifp.Multiaddrs(); m[0].Refcount != 1 {
		t.Fatal("del: refcount")
	}
	_ = n.Ioctl(root, SIOCDELMULTI, add)
	if len(ifp.Multiaddrs()) != 0 || d.cmds()[1] != SIOCDELMULTI {
		t.Fatal("removed + driver")
	}
	wantErrno(t, n.Ioctl(root, SIOCDELMULTI, add), syscall.ENOENT)
	// IPv4 group: resolved to an LL entry, shared and refcounted.
	g1 := IPSockaddr(netip.MustParseAddr("224.1.2.3"))
	g2 := IPSockaddr(netip.MustParseAddr("225.1.2.3")) // same LL group
	if _, err := ifp.AddMulti(g1); err != nil {
		t.Fatal(err)
	}
	_, _ = ifp.AddMulti(g2)
	var ll *Multiaddr
	for _, m := range ifp.Multiaddrs() {
		if m.Addr.Family == AF_LINK {
			mm := m
			ll = &mm
		}
	}
	if ll == nil || ll.Refcount != 2 || ll.HasLL {
		t.Fatalf("LL entry %+v (D-I2: zero lladdr)", ll)
	}
	_ = ifp.DelMulti(g1)
	if len(ifp.Multiaddrs()) != 2 {
		t.Fatal("LL entry removed too early")
	}
	_ = ifp.DelMulti(g2)
	if len(ifp.Multiaddrs()) != 0 {
		t.Fatal("LL entry not removed with the last network entry")
	}
	wantErrno(t, n.Ioctl(root, SIOCADDMULTI, &Ifreq{Name: "mc0", Addr: g1}), syscall.EINVAL)
	nm, err := n.Attach(IfConfig{Name: "nomc0", Driver: &ioctlDriver{}})
	if err != nil {
		t.Fatal(err)
	}
	_ = nm
	wantErrno(t, n.Ioctl(root, SIOCADDMULTI, &Ifreq{Name: "nomc0", Addr: grp}), syscall.EOPNOTSUPP)
	// D-I9: delete-all flushes entries with refcount > 1 entirely.
	_, _ = ifp.AddMulti(grp)
	_, _ = ifp.AddMulti(grp)
	_ = ifp.DelAllMulti()
	if len(ifp.Multiaddrs()) != 0 {
		t.Fatal("DelAllMulti left entries")
	}
}

func TestIT16_SetLladdr(t *testing.T) {
	n, rec := newTestNet(t, Config{})
	d := &ioctlDriver{}
	ifp := attach(t, n, "ll0", d)
	wantErrno(t, ifp.SetLladdr([]byte{1, 2, 3}), syscall.EINVAL)
	other, _ := n.Attach(IfConfig{Name: "lo9", Type: IFT_LOOP, Driver: &sinkDriver{}, Lladdr: []byte{1, 2, 3, 4, 5, 6}})
	wantErrno(t, other.SetLladdr([]byte{1, 2, 3, 4, 5, 7}), syscall.ENODEV)
	ifp.SetFlagBits(IFF_UP)
	_ = ifp.AddAddr(Ifaddr{Addr: IPSockaddr(netip.MustParseAddr("10.9.0.1")), Prefix: netip.MustParsePrefix("10.9.0.0/24")})
	_ = ifp.AddAddr(Ifaddr{Addr: IPSockaddr(netip.MustParseAddr("10.9.1.1")), Prefix: netip.MustParsePrefix("10.9.1.0/24")})
	rec.reset()
	mac := []byte{2, 0, 0, 0, 0, 0x42}
	if err := n.Ioctl(root, SIOCSIFLLADDR, &Ifreq{Name: "ll0", Lladdr: mac}); err != nil {
		t.Fatal(err)
	}
	if got := joinKinds(rec.kinds("ll0")); got != "driver-flags,driver-flags,garp,garp,lladdr" {
		t.Fatalf("events %q", got)
	}
	if !slices.Equal(ifp.Lladdr(), mac) || ifp.Addrs()[0].Addr.Data[5] != 0x42 {
		t.Fatal("address not stored")
	}
	// D-I11 / D-I12: failure → no event, rolled back.
	d.ioctlErr = syscall.EIO
	rec.reset()
	err := ifp.SetLladdr([]byte{2, 0, 0, 0, 0, 0x43})
	if !errors.Is(err, syscall.EIO) || slices.Contains(rec.kinds("ll0"), "lladdr") || ifp.Lladdr()[5] != 0x42 {
		t.Fatalf("failure: %v %v %x", err, rec.kinds("ll0"), ifp.Lladdr())
	}
}
