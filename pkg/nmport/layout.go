// Package nmport is the client side of the node agent's netmap ports for
// applications (libnetmap's nmport_d in Go): Open registers a port by its
// netmap name on the agent's netmap socket and maps its rings and buffers;
// the application fills or drains slots between head and tail, and TxSync,
// RxSync and Poll hand them over, as with netmap. The package also holds
// what both sides share: the memory layout (netmap's netmap_if, netmap_ring
// and netmap_slot, and the CSB of netmap's sync kloop), the registration
// protocol, and the agent's view of a region (Region).
//
//	p, err := nmport.Open("/run/epair/netmap.sock", "vale0:app0", 0)
//	r := p.TxRing(0)
//	i := r.Cur()
//	r.Slot(i).Len = uint16(copy(r.Buf(i), frame))
//	r.Advance(r.Next(i))
//	p.TxSync()
package nmport

import (
	"fmt"
	"syscall"
	"unsafe"

	"github.com/epair-cni/epair/pkg/netmap"
)

// The shared region of one registration, laid out as netmap's own memory
// (net/netmap.h, API 14): a struct netmap_if, then one struct netmap_ring per
// ring with its netmap_slot array, then the CSB (struct nm_csb_atok /
// nm_csb_ktoa per ring, as netmap's sync kloop uses), then the buffers.
// Offsets follow netmap: ring_ofs[] are relative to the netmap_if and a
// ring's buf_ofs is relative to the ring, so NETMAP_BUF(ring, idx) =
// ring + buf_ofs + idx*nr_buf_size.
//
//	0                 netmap_if (64 bytes) + ring_ofs[ntx+nrx] (8 bytes each)
//	RingOff[i]        netmap_ring (256 bytes) + num_slots * netmap_slot (16)
//	CSBOff            port header (64 bytes), then per ring: atok (64), ktoa (64);
//	                  TX rings first, then RX rings
//	BufOff            NumBufs buffers of BufSize bytes; index 0 and 1 reserved
const (
	ifHdrSize    = 56  // sizeof(struct netmap_if) without ring_ofs
	ringHdrSize  = 256 // sizeof(struct netmap_ring): sem[] is 128-byte aligned
	slotSize     = 16  // sizeof(struct netmap_slot)
	csbEntrySize = 64  // sizeof(struct nm_csb_atok) == sizeof(struct nm_csb_ktoa)
	portHdrSize  = 64
	pageSize     = 4096

	// MaxRings is the most rings per direction a registration may have.
	MaxRings = 16
	// MaxSlots and MinSlots bound a ring's num_slots.
	MaxSlots = 16384
	MinSlots = 8
	// MaxExtraBufs bounds nr_arg3 (extra buffers) of one registration.
	MaxExtraBufs = 4096
	// MaxRegion bounds the shared region of one registration (1 GiB).
	MaxRegion = 1 << 30
)

// Version is the netmap API version this layout follows (NETMAP_API).
const Version = 14

// Slot is struct netmap_slot. Flags are netmap's NS_* bits (see pkg/netmap).
type Slot struct {
	BufIdx uint32 // buf_idx
	Len    uint16 // len
	Flags  uint16 // flags
	Ptr    uint64 // ptr (unused)
}

// NS_* flags an application may set on a slot. Other bits are ignored.
const (
	BufChanged = netmap.BufChanged // NS_BUF_CHANGED: buf_idx was changed (swapped)
	MoreFrag   = netmap.MoreFrag   // NS_MOREFRAG: the frame continues in the next slot
)

// ringHdr is struct netmap_ring without its slots.
type ringHdr struct {
	BufOfs     int64  // buf_ofs, relative to the ring
	NumSlots   uint32 // num_slots
	BufSize    uint32 // nr_buf_size
	RingID     uint16 // ringid
	Dir        uint16 // dir: 0 TX, 1 RX
	Head       uint32 // head (application)
	Cur        uint32 // cur (application)
	Tail       uint32 // tail (copied from the CSB on every sync)
	Flags      uint32 // flags
	_          uint32
	TsSec      int64 // ts.tv_sec
	TsUsec     int64 // ts.tv_usec
	OffsetMask uint64
	BufAlign   uint64
	_          [56]byte
	Sem        [128]byte
}

// ifHdr is struct netmap_if without ring_ofs[].
type ifHdr struct {
	Name        [16]byte // ni_name
	Version     uint32   // ni_version
	Flags       uint32   // ni_flags
	TxRings     uint32   // ni_tx_rings
	RxRings     uint32   // ni_rx_rings
	BufsHead    uint32   // ni_bufs_head: first extra buffer (a chain through each buffer's first 4 bytes)
	HostTxRings uint32   // ni_host_tx_rings (always 0: applications get no host rings)
	HostRxRings uint32   // ni_host_rx_rings
	_           [3]uint32
}

// csbAtok is struct nm_csb_atok (application to kernel): written by the
// application only.
type csbAtok struct {
	Head         uint32
	Cur          uint32
	ApplNeedKick uint32
	SyncFlags    uint32
	_            [12]uint32
}

// csbKtoa is struct nm_csb_ktoa (kernel to application): written by the
// agent only.
type csbKtoa struct {
	Hwcur        uint32
	Hwtail       uint32
	KernNeedKick uint32
	_            [13]uint32
}

// portHdr is the registration's state word, written by the agent: 0 while
// the port works, an errno once the agent put the port in error.
type portHdr struct {
	State uint32
	_     [15]uint32
}

func init() {
	// The layout is the ABI: a change here is a change of the wire format.
	if unsafe.Sizeof(ringHdr{}) != ringHdrSize || unsafe.Offsetof(ringHdr{}.Sem) != 128 ||
		unsafe.Offsetof(ringHdr{}.TsSec) != 40 || unsafe.Sizeof(ifHdr{}) != ifHdrSize ||
		unsafe.Sizeof(Slot{}) != slotSize || unsafe.Sizeof(csbAtok{}) != csbEntrySize ||
		unsafe.Sizeof(csbKtoa{}) != csbEntrySize || unsafe.Sizeof(portHdr{}) != portHdrSize {
		panic("nmport: shared-memory layout does not match netmap's")
	}
}

// Geometry is what a registration gets: rings, slots, buffer size and extra
// buffers.
type Geometry struct {
	TxRings, RxRings int
	TxSlots, RxSlots uint32
	BufSize          uint32
	ExtraBufs        uint32
}

// Validate checks a geometry; errors wrap EINVAL and name the field.
func (g Geometry) Validate() error {
	switch {
	case g.TxRings < 1 || g.TxRings > MaxRings:
		return fmt.Errorf("tx rings %d not in [1, %d]: %w", g.TxRings, MaxRings, syscall.EINVAL)
	case g.RxRings < 1 || g.RxRings > MaxRings:
		return fmt.Errorf("rx rings %d not in [1, %d]: %w", g.RxRings, MaxRings, syscall.EINVAL)
	case g.TxSlots < MinSlots || g.TxSlots > MaxSlots:
		return fmt.Errorf("tx slots %d not in [%d, %d]: %w", g.TxSlots, MinSlots, MaxSlots, syscall.EINVAL)
	case g.RxSlots < MinSlots || g.RxSlots > MaxSlots:
		return fmt.Errorf("rx slots %d not in [%d, %d]: %w", g.RxSlots, MinSlots, MaxSlots, syscall.EINVAL)
	case g.BufSize < 64 || g.BufSize > 65535 || g.BufSize%64 != 0:
		return fmt.Errorf("buffer size %d not a multiple of 64 in [64, 65535]: %w", g.BufSize, syscall.EINVAL)
	case g.ExtraBufs > MaxExtraBufs:
		return fmt.Errorf("extra buffers %d above %d: %w", g.ExtraBufs, MaxExtraBufs, syscall.EINVAL)
	}
	if _, err := g.Layout(); err != nil {
		return err
	}
	return nil
}

// Layout is where everything sits in a registration's region.
type Layout struct {
	Geometry
	RingOff []uint64 // TX rings, then RX rings
	CSBOff  uint64
	BufOff  uint64
	NumBufs uint32 // buffers, the two reserved ones included
	Size    uint64 // bytes of the region (page-aligned)
}

// Layout computes the region for g; it fails (EINVAL) when the region would
// exceed MaxRegion.
func (g Geometry) Layout() (Layout, error) {
	l := Layout{Geometry: g}
	n := g.TxRings + g.RxRings
	off := align(uint64(ifHdrSize+8*n), 64)
	for i := 0; i < n; i++ {
		slots := g.TxSlots
		if i >= g.TxRings {
			slots = g.RxSlots
		}
		l.RingOff = append(l.RingOff, off)
		off = align(off+ringHdrSize+uint64(slots)*slotSize, 128)
	}
	l.CSBOff = off
	off += portHdrSize + uint64(n)*2*csbEntrySize
	l.BufOff = align(off, pageSize)
	nbufs := uint64(g.TxRings)*uint64(g.TxSlots) + uint64(g.RxRings)*uint64(g.RxSlots) + 2 + uint64(g.ExtraBufs)
	size := align(l.BufOff+nbufs*uint64(g.BufSize), pageSize)
	if size > MaxRegion {
		return Layout{}, fmt.Errorf("shared region of %d bytes above %d: %w", size, MaxRegion, syscall.EINVAL)
	}
	l.NumBufs = uint32(nbufs)
	l.Size = size
	return l, nil
}

// RingSlots is num_slots of ring i (TX rings first).
func (l *Layout) RingSlots(i int) uint32 {
	if i < l.TxRings {
		return l.TxSlots
	}
	return l.RxSlots
}

// SlotOff is the offset of slot s of ring i.
func (l *Layout) SlotOff(i int, s uint32) uint64 {
	return l.RingOff[i] + ringHdrSize + uint64(s)*slotSize
}

// AtokOff and KtoaOff are the offsets of ring i's CSB entries.
func (l *Layout) AtokOff(i int) uint64 { return l.CSBOff + portHdrSize + uint64(i)*2*csbEntrySize }

// KtoaOff: see AtokOff.
func (l *Layout) KtoaOff(i int) uint64 { return l.AtokOff(i) + csbEntrySize }

// BufAt is the offset of buffer idx.
func (l *Layout) BufAt(idx uint32) uint64 { return l.BufOff + uint64(idx)*uint64(l.BufSize) }

// Init writes the netmap_if, the rings (every slot with its own buffer,
// RX rings empty, TX rings with all slots but one free), the CSB and the
// extra-buffer chain into mem, a fresh region of l.Size bytes. It returns
// the head of the extra-buffer chain (0: none).
func (l *Layout) Init(mem []byte, name string) uint32 {
	nifp := ptr[ifHdr](mem, 0)
	copy(nifp.Name[:len(nifp.Name)-1], name)
	nifp.Version = Version
	nifp.TxRings, nifp.RxRings = uint32(l.TxRings), uint32(l.RxRings)
	next := uint32(2)
	for i := range l.RingOff {
		*ptr[int64](mem, ifHdrSize+8*uint64(i)) = int64(l.RingOff[i])
		r := ptr[ringHdr](mem, l.RingOff[i])
		n := l.RingSlots(i)
		r.BufOfs = int64(l.BufOff) - int64(l.RingOff[i])
		r.NumSlots, r.BufSize = n, l.BufSize
		if i < l.TxRings {
			r.RingID, r.Dir = uint16(i), 0
			r.Tail = n - 1
		} else {
			r.RingID, r.Dir = uint16(i-l.TxRings), 1
		}
		for s := uint32(0); s < n; s++ {
			sl := ptr[Slot](mem, l.SlotOff(i, s))
			sl.BufIdx = next
			next++
		}
		k := ptr[csbKtoa](mem, l.KtoaOff(i))
		k.Hwtail = r.Tail
		a := ptr[csbAtok](mem, l.AtokOff(i))
		a.Head, a.Cur = 0, 0
	}
	// The extra buffers: a chain through each buffer's first word, 0-terminated.
	head := uint32(0)
	for j := uint32(0); j < l.ExtraBufs; j++ {
		idx := l.NumBufs - 1 - j
		*ptr[uint32](mem, l.BufAt(idx)) = head
		head = idx
	}
	nifp.BufsHead = head
	return head
}

func align(v, a uint64) uint64 { return (v + a - 1) &^ (a - 1) }

// ptr is a typed view of mem at off; the caller guarantees bounds (every
// offset comes from a Layout validated against len(mem)).
func ptr[T any](mem []byte, off uint64) *T {
	var z T
	if off+uint64(unsafe.Sizeof(z)) > uint64(len(mem)) {
		panic(fmt.Sprintf("nmport: %d-byte structure at %d outside the %d-byte region", unsafe.Sizeof(z), off, len(mem)))
	}
	return (*T)(unsafe.Pointer(&mem[off]))
}

// unsafeSlots is the slot array of n slots starting at first.
func unsafeSlots(first *Slot, n uint32) []Slot { return unsafe.Slice(first, n) }
