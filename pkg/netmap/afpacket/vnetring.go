package afpacket

import (
	"fmt"
	"sync/atomic"

	"github.com/epair-cni/epair/internal/sys"
	"golang.org/x/sys/unix"
)

// Offload receive ring (Config.VnetRxRing): a TPACKET_V2 ring of fixed slots with
// PACKET_VNET_HDR and PACKET_COPY_THRESH.
//
// The kernel writes each frame into the next free slot, its virtio_net_hdr just before
// the MAC header (at tp_mac-VnetHdrLen), and hands the slot over by storing
// TP_STATUS_USER in tp_status; it raises sk_data_ready for every frame (TPACKET_V2 has no
// block retire timer, so a lone frame is not held back). A frame longer than a slot (a
// GSO super-frame, a jumbo frame) is cut to the slot, and, because of PACKET_COPY_THRESH,
// also queued whole on the socket's receive queue under the same lock, the slot's
// tp_status then carrying TP_STATUS_COPY: the receiver, walking the slots in order,
// takes it from the queue with recvmsg(2) when it reaches that slot, so the order of
// short and long frames holds. A cut slot without TP_STATUS_COPY means the receive
// queue was full: the frame is lost (counted in RxTruncated). When no slot is free the
// kernel drops the frame (tp_drops, KernelStats).
//
// So a short frame is received, and a port looked at for frames, without a system
// call: readiness is one atomic load of the current slot's tp_status. Slots are small,
// made for what waits on latency (ACKs, requests, pings, small datagrams); longer
// frames, which carry more bytes per system call, are taken from the queue with
// recvmmsg(2), a run of them at once. The slot count bounds the frames in flight, long
// ones included.
const (
	// VnetRingSlotSize is the size of one slot: header, virtio_net_hdr and a frame of
	// up to 180 bytes (ACKs, pings, DNS, small datagrams); longer frames take the
	// receive queue.
	VnetRingSlotSize = 256
	// VnetRingSlots is the default number of slots (256 KiB per socket, all of it
	// mapped into the process: 64 MiB of resident memory for 250 ports): a burst of
	// 1024 frames waits without a loss.
	VnetRingSlots = 1024
	// tpStatusOff is where tp_status is in struct tpacket2_hdr.
	tpStatusOff = 0
)

// setupVnetRing sets the TPACKET_V2 receive ring up on fd (PACKET_VERSION and
// PACKET_VNET_HDR must be set already) and maps it.
func (s *Socket) setupVnetRing(fd int, slots uint32) error {
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_COPY_THRESH, 1); err != nil {
		return fmt.Errorf("set PACKET_COPY_THRESH: %w", err)
	}
	page := uint32(unix.Getpagesize())
	block := max(page, VnetRingSlotSize)
	req := unix.TpacketReq{
		Block_size: block, Block_nr: slots * VnetRingSlotSize / block,
		Frame_size: VnetRingSlotSize, Frame_nr: slots,
	}
	if err := unix.SetsockoptTpacketReq(fd, unix.SOL_PACKET, unix.PACKET_RX_RING, &req); err != nil {
		return fmt.Errorf("set up %d-slot RX ring: %w", slots, err)
	}
	// The kernel maps every page of the ring at once (packet_mmap), so the whole ring
	// counts in the process's resident size.
	mem, err := unix.Mmap(fd, 0, int(slots*VnetRingSlotSize), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("map %d-slot RX ring: %w", slots, err)
	}
	s.vring, s.vslots = mem, slots
	return nil
}

func (s *Socket) vslotStatus(i uint32) *atomic.Uint32 {
	return sys.Uint32At(s.vring, uint64(i)*VnetRingSlotSize+tpStatusOff)
}

// vringReady reports (one atomic load) whether the current slot holds a frame.
func (s *Socket) vringReady() bool {
	return s.vslotStatus(s.vcur.Load()).Load()&unix.TP_STATUS_USER != 0
}

// vringFrame is the current slot's frame, if it holds one: whole (header and frame,
// in the slot) or long (on the receive queue: take it with recvmsg); neither, with
// ok, means the frame was lost or its slot is inconsistent (counted; release the slot).
func (s *Socket) vringFrame() (whole []byte, long, ok bool) {
	i := s.vcur.Load()
	st := s.vslotStatus(i).Load()
	if st&unix.TP_STATUS_USER == 0 {
		return nil, false, false
	}
	if st&unix.TP_STATUS_COPY != 0 {
		// Whatever else the slot says, the whole frame is on the queue.
		return nil, true, true
	}
	slot := s.vring[uint64(i)*VnetRingSlotSize : uint64(i+1)*VnetRingSlotSize]
	h := sys.PointerAt[unix.Tpacket2Hdr](slot, 0)
	mac, snap := uint64(h.Mac), uint64(h.Snaplen)
	// The layout comes from the kernel; it is still checked, so that a corrupt slot
	// costs a counted error, never a panic or a stray read.
	if mac < VnetHdrLen || mac+snap > uint64(len(slot)) || snap < 14 {
		s.rxErrors.Add(1)
		return nil, false, true
	}
	if snap == uint64(h.Len) {
		return slot[mac-VnetHdrLen : mac+snap], false, true
	}
	s.rxTrunc.Add(1) // cut, and the receive queue had no room for the whole frame
	return nil, false, true
}

// vringRelease gives the current slot back to the kernel and moves on.
func (s *Socket) vringRelease() {
	i := s.vcur.Load()
	s.vslotStatus(i).Store(unix.TP_STATUS_KERNEL)
	s.vcur.Store((i + 1) % s.vslots)
}

// receiveVnetRing is Receive over the ring: each frame with its virtio_net_hdr into one
// buffer, until the buffers are full or the ring has no more; a run of long frames is
// taken from the queue with one recvmmsg(2). A frame longer than its buffer is dropped
// (counted in RxTruncated) and its lens entry is 0.
func (s *Socket) receiveVnetRing(bufs [][]byte, lens []int) (int, error) {
	want := min(len(bufs), len(lens))
	n := 0
	var bytes, got uint64
	defer func() {
		if got > 0 {
			s.rxPackets.Add(got)
			s.rxBytes.Add(bytes)
		}
	}()
	for n < want {
		whole, long, ok := s.vringFrame()
		if !ok {
			break
		}
		if long {
			k := s.vringLongRun(min(want-n, rxBatchMax))
			m, err := s.recvVnetBatch(bufs[n:n+k], lens[n:n+k]) // counts what it takes
			if err != nil {
				if n > 0 {
					return n, nil // the slots stay: the next call reports the error
				}
				return 0, err
			}
			for i := range k {
				if i >= m { // the slot said TP_STATUS_COPY and the queue had no frame
					lens[n+i] = 0
					s.rxErrors.Add(1)
				}
				s.vringRelease()
			}
			n += k
			continue
		}
		l := 0
		if whole != nil && len(whole) <= len(bufs[n]) {
			l = copy(bufs[n], whole)
		} else if whole != nil {
			s.rxTrunc.Add(1)
		}
		s.vringRelease()
		lens[n] = l
		if l > 0 {
			bytes += uint64(l)
			got++
		}
		n++
	}
	return n, nil
}

// vringLongRun counts the slots from the current one on, at most most, whose frames are on
// the receive queue (TP_STATUS_COPY); the current one is.
func (s *Socket) vringLongRun(most int) int {
	k, i := 1, s.vcur.Load()
	for k < most {
		i = (i + 1) % s.vslots
		st := s.vslotStatus(i).Load()
		if st&unix.TP_STATUS_USER == 0 || st&unix.TP_STATUS_COPY == 0 {
			break
		}
		k++
	}
	return k
}

// scatterVnetRing is RxScatter over the ring: the next frame over bufs.
func (s *Socket) scatterVnetRing(bufs [][]byte) (int, bool, error) {
	whole, long, ok := s.vringFrame()
	if !ok {
		return 0, false, nil
	}
	l := 0
	switch {
	case whole != nil:
		rest := whole
		for _, b := range bufs {
			if len(rest) == 0 {
				break
			}
			rest = rest[copy(b, rest):]
		}
		if len(rest) > 0 {
			s.rxTrunc.Add(1)
		} else {
			l = len(whole)
		}
	case long:
		var err error
		if l, err = s.recvLong(bufs); err != nil {
			return 0, false, err
		}
	}
	s.vringRelease()
	if l > 0 {
		s.rxPackets.Add(1)
		s.rxBytes.Add(uint64(l))
	}
	return l, true, nil
}

// recvLong takes the whole copy of the current slot's long frame from the receive queue
// over bufs: its length, 0 when it was dropped (longer than bufs, counted in
// RxTruncated; or missing, counted in RxErrors).
func (s *Socket) recvLong(bufs [][]byte) (int, error) {
	n, ok, err := s.recvScatterCount(bufs, false)
	switch {
	case err != nil:
		return 0, err
	case !ok:
		s.rxErrors.Add(1) // the slot said TP_STATUS_COPY and the queue was empty
		return 0, nil
	}
	return n, nil
}
