package fastpath

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// MaxPorts bounds the ports one FastPath serves (the counter slots).
const MaxPorts = 4096

// Port is what the fast path knows of a pod's port.
type Port struct {
	// Ifindex is the port's host-side interface (a veth whose peer is the pod's), in
	// the namespace FastPath's methods are called in.
	Ifindex int
	// Switch tells apart the switches the agent runs: frames only take the fast path
	// between ports of the same switch.
	Switch uint16
	// MAC is the pod's interface address; frames from the pod must carry it as source,
	// frames to the pod carry it as destination.
	MAC net.HardwareAddr
	// IPv4 and IPv6 are the pod's addresses (the zero Addr: none). A frame from the pod
	// takes the fast path only with one of them as its source.
	IPv4, IPv6 netip.Addr
	// Source lets the frames the pod sends take the fast path; Dest lets the frames
	// sent to the pod take it. The switch clears them for a port whose frames it must
	// see (policies, mirror, capture).
	Source, Dest bool
	// Host marks a switch's host port (its TAP; MAC is the gateway's, no addresses):
	// with Dest, the pods' frames to the gateway MAC go into the interface's ingress,
	// to the node's stack; with Source, the frames the node's stack sends out of it to
	// a pod go to the pod's veth (a program at the TAP's egress).
	Host bool
}

// Stats counts the frames the fast path moved for a port: In from the pod, Out to it.
// A GSO super-frame counts once, with all its bytes.
type Stats struct {
	InFrames, InBytes, OutFrames, OutBytes uint64
}

// view is one copy of the two maps: the tc program reads one, the socket filter the
// other (see the package documentation for why).
type view struct{ ports, dests *ebpf.Map }

type entry struct {
	port Port
	slot uint32
	link link.Link
}

// FastPath is the kernel fast path of an agent's switches: its maps, its two programs,
// and the tc links on the ports' host-side interfaces.
type FastPath struct {
	tc, sk   view
	stats    *ebpf.Map
	tcProg   *ebpf.Program
	skProg   *ebpf.Program
	hostProg *ebpf.Program

	mu    sync.Mutex
	ports map[int]*entry
	free  []uint32 // counter slots not in use
}

// New creates the maps and loads the programs. It needs CAP_BPF and CAP_NET_ADMIN (or
// root) and a kernel with tcx (6.6 or later).
func New() (f *FastPath, err error) {
	f = &FastPath{ports: map[int]*entry{}}
	defer func() {
		if err != nil {
			f.closeObjects()
		}
	}()
	for _, v := range []*view{&f.tc, &f.sk} {
		if v.ports, err = ebpf.NewMap(&ebpf.MapSpec{Name: "epair_fp_ports", Type: ebpf.Hash, KeySize: 4, ValueSize: pvLen, MaxEntries: MaxPorts}); err != nil {
			return nil, fmt.Errorf("create the fast path's port map: %w", err)
		}
		if v.dests, err = ebpf.NewMap(&ebpf.MapSpec{Name: "epair_fp_dests", Type: ebpf.Hash, KeySize: 8, ValueSize: dvLen, MaxEntries: MaxPorts}); err != nil {
			return nil, fmt.Errorf("create the fast path's destination map: %w", err)
		}
	}
	if f.stats, err = ebpf.NewMap(&ebpf.MapSpec{Name: "epair_fp_stats", Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: stLen, MaxEntries: MaxPorts}); err != nil {
		return nil, fmt.Errorf("create the fast path's counters: %w", err)
	}
	if f.tcProg, err = newTCProgram(f.tc.ports, f.tc.dests, f.stats); err != nil {
		return nil, err
	}
	if f.skProg, err = newFilterProgram(f.sk.ports, f.sk.dests); err != nil {
		return nil, err
	}
	if f.hostProg, err = newHostProgram(f.tc.ports, f.tc.dests, f.stats); err != nil {
		return nil, err
	}
	for i := MaxPorts - 1; i >= 0; i-- {
		f.free = append(f.free, uint32(i))
	}
	return f, nil
}

// Filter is the socket filter to attach (SO_ATTACH_BPF) to the switch's packet socket
// on every port's host-side interface: it keeps the frames the fast path moves away
// from the switch. It stays valid until Close.
func (f *FastPath) Filter() *ebpf.Program { return f.skProg }

// Set adds a port or changes what the fast path does for it. On a new port it first
// attaches the tc program to the port's interface. Frames never go missing while a
// port changes: a frame is either moved by the fast path or seen by the switch, and
// only while the change is applied can one be both.
func (f *FastPath) Set(p Port) error {
	if len(p.MAC) != 6 {
		return fmt.Errorf("fast path: port %d: MAC %q is not 6 bytes", p.Ifindex, p.MAC)
	}
	if p.IPv4.IsValid() && !p.IPv4.Is4() {
		return fmt.Errorf("fast path: port %d: IPv4 address %s is not IPv4", p.Ifindex, p.IPv4)
	}
	if p.IPv6.IsValid() && (!p.IPv6.Is6() || p.IPv6.Is4In6()) {
		return fmt.Errorf("fast path: port %d: IPv6 address %s is not IPv6", p.Ifindex, p.IPv6)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	e := f.ports[p.Ifindex]
	if e == nil {
		if len(f.free) == 0 {
			return fmt.Errorf("fast path: port %d: all %d ports in use", p.Ifindex, MaxPorts)
		}
		e = &entry{slot: f.free[len(f.free)-1]}
		if err := f.clearStats(e.slot); err != nil {
			return err
		}
		opts := link.TCXOptions{Interface: p.Ifindex, Program: f.tcProg, Attach: ebpf.AttachTCXIngress}
		if p.Host {
			opts.Program, opts.Attach = f.hostProg, ebpf.AttachTCXEgress
		}
		l, err := link.AttachTCX(opts)
		if err != nil {
			return fmt.Errorf("fast path: attach to interface %d: %w", p.Ifindex, err)
		}
		e.link = l
		f.free = f.free[:len(f.free)-1]
		f.ports[p.Ifindex] = e
	} else if samePort(e.port, p) {
		return nil // nothing changes: no grace periods, no window for duplicates
	} else if err := f.withdraw(e); err != nil {
		return err
	}
	e.port = p
	e.port.MAC = append(net.HardwareAddr(nil), p.MAC...)
	return f.publish(e)
}

// Remove takes a port out of the fast path and detaches the tc program from its
// interface. Removing a port that is not there is not an error.
func (f *FastPath) Remove(ifindex int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	e := f.ports[ifindex]
	if e == nil {
		return nil
	}
	err := f.withdraw(e)
	if e.link != nil {
		if cerr := e.link.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("fast path: detach from interface %d: %w", ifindex, cerr)
		}
	}
	delete(f.ports, ifindex)
	f.free = append(f.free, e.slot)
	return err
}

// Stats returns a port's counters (all zero for a port the fast path does not know).
func (f *FastPath) Stats(ifindex int) (Stats, error) {
	f.mu.Lock()
	e := f.ports[ifindex]
	f.mu.Unlock()
	if e == nil {
		return Stats{}, nil
	}
	var per [][stLen]byte
	if err := f.stats.Lookup(e.slot, &per); err != nil {
		return Stats{}, fmt.Errorf("fast path: read the counters of interface %d: %w", ifindex, err)
	}
	var s Stats
	for _, c := range per {
		s.InFrames += binary.LittleEndian.Uint64(c[stInFrames:])
		s.InBytes += binary.LittleEndian.Uint64(c[stInBytes:])
		s.OutFrames += binary.LittleEndian.Uint64(c[stOutFrames:])
		s.OutBytes += binary.LittleEndian.Uint64(c[stOutBytes:])
	}
	return s, nil
}

// Close removes every port (detaching the tc program everywhere) and frees the maps and
// programs. Sockets that still hold Filter keep a reference of their own.
func (f *FastPath) Close() error {
	f.mu.Lock()
	var ifs []int
	for i := range f.ports {
		ifs = append(ifs, i)
	}
	f.mu.Unlock()
	var errs []error
	for _, i := range ifs {
		errs = append(errs, f.Remove(i))
	}
	f.closeObjects()
	return errors.Join(errs...)
}

func (f *FastPath) closeObjects() {
	for _, p := range []*ebpf.Program{f.tcProg, f.skProg, f.hostProg} {
		if p != nil {
			p.Close()
		}
	}
	for _, m := range []*ebpf.Map{f.stats, f.tc.ports, f.tc.dests, f.sk.ports, f.sk.dests} {
		if m != nil {
			m.Close()
		}
	}
}

// publish makes e's entries live: the tc view first, then, after a grace period, the
// socket filter's view. A frame the filter leaves to the fast path is then always one
// the tc program moves (it is read after the tc view changed); the reverse window
// (the switch and the fast path both take a frame) lasts one grace period.
func (f *FastPath) publish(e *entry) error {
	pk, pv, dk, dv := f.entries(e)
	put := func(v view) error {
		if e.port.Source {
			if err := v.ports.Put(pk, pv); err != nil {
				return fmt.Errorf("fast path: port %d: %w", e.port.Ifindex, err)
			}
		}
		if e.port.Dest {
			if err := v.dests.Put(dk, dv); err != nil {
				return fmt.Errorf("fast path: port %d: %w", e.port.Ifindex, err)
			}
		}
		return nil
	}
	if !e.port.Source && !e.port.Dest {
		return nil
	}
	if err := put(f.tc); err != nil {
		return errors.Join(err, f.withdraw(e))
	}
	rcuGracePeriod()
	if err := put(f.sk); err != nil {
		return errors.Join(err, f.withdraw(e))
	}
	return nil
}

// withdraw takes e's entries out, in the opposite order to publish: the filter's view,
// a grace period, then the tc view. A frame the tc program no longer moves is then
// always one the filter kept for the switch.
func (f *FastPath) withdraw(e *entry) error {
	if len(e.port.MAC) == 0 {
		return nil // never published
	}
	pk, _, dk, _ := f.entries(e)
	del := func(v view) error {
		var errs []error
		if err := v.ports.Delete(pk); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, err)
		}
		if err := v.dests.Delete(dk); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, err)
		}
		if err := errors.Join(errs...); err != nil {
			return fmt.Errorf("fast path: port %d: %w", e.port.Ifindex, err)
		}
		return nil
	}
	if err := del(f.sk); err != nil {
		return err
	}
	rcuGracePeriod()
	return del(f.tc)
}

// entries encodes e's port-map and destination-map entries.
func (f *FastPath) entries(e *entry) (pk uint32, pv [pvLen]byte, dk [8]byte, dv [dvLen]byte) {
	p := e.port
	pk = uint32(p.Ifindex)
	copy(pv[pvMAC:], p.MAC)
	binary.LittleEndian.PutUint16(pv[pvSwitch:], p.Switch)
	if p.IPv4.IsValid() {
		a := p.IPv4.As4()
		copy(pv[pvIPv4:], a[:])
	}
	if p.IPv6.IsValid() {
		a := p.IPv6.As16()
		copy(pv[pvIPv6:], a[:])
	}
	binary.LittleEndian.PutUint32(pv[pvSlot:], e.slot)
	copy(dk[:], p.MAC)
	binary.LittleEndian.PutUint16(dk[6:], p.Switch)
	binary.LittleEndian.PutUint32(dv[dvIfindex:], uint32(p.Ifindex))
	binary.LittleEndian.PutUint32(dv[dvSlot:], e.slot)
	if p.Host {
		binary.LittleEndian.PutUint32(dv[dvFlags:], dfIngress)
	}
	return
}

func (f *FastPath) clearStats(slot uint32) error {
	zero := make([][stLen]byte, ebpf.MustPossibleCPU())
	if err := f.stats.Put(slot, zero); err != nil {
		return fmt.Errorf("fast path: clear counters: %w", err)
	}
	return nil
}

// rcuGracePeriod waits for an RCU grace period: membarrier(MEMBARRIER_CMD_GLOBAL) is
// synchronize_rcu() in the kernel, and a frame's way through the socket filter and the
// tc program (__netif_receive_skb) is one RCU read-side section. Where the command is
// refused (nohz_full CPUs), it sleeps for far longer than a frame takes.
func rcuGracePeriod() {
	const membarrierCmdGlobal = 1
	if _, _, e := unix.Syscall(unix.SYS_MEMBARRIER, membarrierCmdGlobal, 0, 0); e != 0 {
		time.Sleep(50 * time.Millisecond)
	}
}

// samePort says whether a and b ask the fast path for the same entries.
func samePort(a, b Port) bool {
	return a.Ifindex == b.Ifindex && a.Switch == b.Switch && bytes.Equal(a.MAC, b.MAC) && a.IPv4 == b.IPv4 &&
		a.IPv6 == b.IPv6 && a.Source == b.Source && a.Dest == b.Dest && a.Host == b.Host
}

// Moves says whether the fast path would move frame (from its Ethernet header) arriving
// on interface ifindex, as it stands now: the socket filter's decision, run by the kernel
// on the frame (BPF_PROG_RUN) without sending it. The interface is looked up in the
// network namespace of the calling thread.
func (f *FastPath) Moves(frame []byte, ifindex int) (bool, error) {
	if len(frame) < 14 {
		return false, nil // not a frame the kernel takes in: never on the fast path
	}
	ctx := skbContext{Ifindex: uint32(ifindex)}
	r, err := f.skProg.Run(&ebpf.RunOptions{Data: frame, Context: ctx})
	if err != nil {
		return false, fmt.Errorf("fast path: run the decision on a frame from interface %d: %w", ifindex, err)
	}
	return r == 0, nil
}

// skbContext is the head of struct __sk_buff as BPF_PROG_RUN takes it (the fields up to
// ifindex; the kernel allows only a few of them to be set).
type skbContext struct {
	Len, PktType, Mark, QueueMapping, Protocol, VlanPresent, VlanTCI, VlanProto, Priority, IngressIfindex, Ifindex uint32
}
