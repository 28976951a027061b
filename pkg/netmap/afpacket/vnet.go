package afpacket

import (
	"encoding/binary"
	"fmt"
	"unsafe"

	"github.com/epair-cni/epair/internal/sys"

	"golang.org/x/sys/unix"
)

// Offload (PACKET_VNET_HDR) mode: sizes and the virtio-net header.
const (
	// VnetHdrLen is sizeof(struct virtio_net_hdr), the header before each frame.
	VnetHdrLen = 10
	// MaxVnetFrame is the largest header + frame the socket carries in VnetHdr mode: a
	// 64 KB GSO super-frame (the netmap/VALE frame limit).
	MaxVnetFrame = 65535
	// MinVnetBlockSize is the smallest BlockSize accepted in VnetHdr mode (the receive
	// buffer, BlockSize×BlockCount, must hold several super-frames).
	MinVnetBlockSize = 128 << 10
	// VnetBlockSize and VnetBlockCount size the receive buffer in VnetHdr mode (8 MiB).
	VnetBlockSize  = 256 << 10
	VnetBlockCount = 32
	// vnetSndBuf is the send buffer asked for in VnetHdr mode.
	vnetSndBuf = 4 << 20
)

// virtio_net_hdr flags and GSO types (include/uapi/linux/virtio_net.h).
const (
	VnetFlagNeedsCsum = 1 // VIRTIO_NET_HDR_F_NEEDS_CSUM: csum_start/csum_offset are valid
	VnetFlagDataValid = 2 // VIRTIO_NET_HDR_F_DATA_VALID: the checksum was verified
	VnetGSONone       = 0
	VnetGSOTCPv4      = 1
	VnetGSOUDP        = 3
	VnetGSOTCPv6      = 4
	VnetGSOUDPL4      = 5
	VnetGSOECN        = 0x80
)

// VnetHdr is struct virtio_net_hdr (native byte order, as PACKET_VNET_HDR uses on
// little-endian hosts and as the TAP uses without TUNSETVNETBE).
type VnetHdr struct {
	Flags, GSOType                         uint8
	HdrLen, GSOSize, CsumStart, CsumOffset uint16
}

// Decode reads h from the first VnetHdrLen bytes of b (false if b is shorter).
func (h *VnetHdr) Decode(b []byte) bool {
	if len(b) < VnetHdrLen {
		return false
	}
	h.Flags, h.GSOType = b[0], b[1]
	h.HdrLen = binary.NativeEndian.Uint16(b[2:])
	h.GSOSize = binary.NativeEndian.Uint16(b[4:])
	h.CsumStart = binary.NativeEndian.Uint16(b[6:])
	h.CsumOffset = binary.NativeEndian.Uint16(b[8:])
	return true
}

// Encode writes h into the first VnetHdrLen bytes of b (false if b is shorter).
func (h VnetHdr) Encode(b []byte) bool {
	if len(b) < VnetHdrLen {
		return false
	}
	b[0], b[1] = h.Flags, h.GSOType
	binary.NativeEndian.PutUint16(b[2:], h.HdrLen)
	binary.NativeEndian.PutUint16(b[4:], h.GSOSize)
	binary.NativeEndian.PutUint16(b[6:], h.CsumStart)
	binary.NativeEndian.PutUint16(b[8:], h.CsumOffset)
	return true
}

// VnetHdr reports whether the socket runs in offload (PACKET_VNET_HDR) mode.
func (s *Socket) VnetHdr() bool { return s.vnet }

// txBatchMax bounds the frames one sendmmsg(2) of transmitRingless carries.
const txBatchMax = 64

// transmitRingless sends the frames (header + frame with VnetHdr) with sendmmsg(2), up
// to txBatchMax per call, one message each. With VnetHdr, packet_snd parses the
// virtio_net_hdr, so a GSO super-frame leaves as one skb that the kernel segments (or
// hands whole to a device that takes GSO, like veth) and checksums where the header asks.
// It stops at the first frame the send buffer has no room for (EAGAIN, ENOBUFS); frames
// the kernel refuses (a bad header, longer than the MTU) are consumed and counted in
// TxRejected, frames of an impossible length in TxDropped.
func (s *Socket) transmitRingless(frames [][]byte) int {
	var consumed, sent int
	var bytes uint64
	fd := uintptr(s.pfd.FD())
	maxLen := s.FrameSize()
	defer clear(s.txIov[:])
	for consumed < len(frames) {
		// The run of sendable frames from consumed on.
		n := 0
		for n < txBatchMax && consumed+n < len(frames) {
			f := frames[consumed+n]
			if len(f) < s.hdrLen+14 || len(f) > maxLen {
				break
			}
			s.txIov[n].Base = &f[0]
			s.txIov[n].SetLen(len(f))
			s.txMsgs[n] = unix.Mmsghdr{Hdr: unix.Msghdr{Iov: &s.txIov[n]}}
			s.txMsgs[n].Hdr.SetIovlen(1)
			n++
		}
		if n == 0 { // an impossible length: drop it
			s.txDrop.Add(1)
			consumed++
			continue
		}
		// Raw: the descriptor is non-blocking (see internal/sys, Writev).
		m, _, e := unix.RawSyscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&s.txMsgs[0])), uintptr(n), 0, 0, 0)
		switch {
		case e == unix.EINTR:
			continue
		case e == unix.EAGAIN || e == unix.ENOBUFS:
			goto done
		case e != 0: // the first message was refused
			s.txRej.Add(1)
			consumed++
			continue
		}
		for i := 0; i < int(m); i++ {
			bytes += uint64(len(frames[consumed+i]) - s.hdrLen)
		}
		sent += int(m)
		consumed += int(m)
		// Fewer than n: the next message failed; the next call tells why.
	}
done:
	clear(s.txMsgs[:])
	if sent > 0 {
		s.txPackets.Add(uint64(sent))
		s.txBytes.Add(bytes)
	}
	return consumed
}

// ringlessWritable asks the kernel (poll(2), zero timeout) whether the send buffer has
// room. Only the TX waiter calls it (it owns txPoll).
func (s *Socket) ringlessWritable() bool {
	s.txPoll[0].Revents = 0
	n, err := unix.Poll(s.txPoll[:], 0)
	return err == nil && n > 0 && s.txPoll[0].Revents&(unix.POLLOUT|unix.POLLERR|unix.POLLHUP) != 0
}

// maxTxFrags bounds the fragments of one frame given to TxFrags (a 64 KB frame in 2 KiB
// buffers is 33; netmap chains are at most 64 slots).
const maxTxFrags = 64

// TxFrags transmits one frame given as its fragments with writev(2) (a netmap chain
// without the gather copy). false means the send buffer is full (EAGAIN/ENOBUFS): call
// WaitTX. Frames the socket cannot take (too short or long, too many fragments, refused
// by the kernel) are consumed and counted. Only in VnetHdr mode: the TX ring takes
// whole frames.
func (s *Socket) TxFrags(q int, frags [][]byte) (bool, error) {
	if err := s.EnterQueue(q); err != nil {
		return false, err
	}
	defer s.Exit()
	if !s.vnet {
		return false, fmt.Errorf("transmit fragments on %s: only with VnetHdr: %w", s.ifname, ErrBadConfig)
	}
	if len(frags) == 0 || len(frags) > maxTxFrags {
		s.txDrop.Add(1)
		return true, nil
	}
	iov := s.txIov[:len(frags)]
	defer clear(iov)
	var total int
	if _, total = sys.SetIovecs(iov, frags); total < VnetHdrLen+14 || total > MaxVnetFrame {
		s.txDrop.Add(1)
		return true, nil
	}
	switch e := sys.Writev(s.pfd.FD(), iov); e {
	case 0:
		s.txPackets.Add(1)
		s.txBytes.Add(uint64(total - VnetHdrLen))
		return true, nil
	case unix.EAGAIN, unix.ENOBUFS:
		return false, nil
	}
	s.txRej.Add(1)
	return true, nil
}

// RxScatter receives the next frame, with its virtio_net_hdr, over bufs with one
// recvmsg(2) (the kernel copies straight into them, each filled before the next) and
// returns its length; ok is false when no frame is pending. A frame that does not fit is
// dropped (n == 0, counted in RxTruncated). It never blocks. Only in VnetHdr mode: ring
// frames fit one buffer.
func (s *Socket) RxScatter(q int, bufs [][]byte) (n int, ok bool, err error) {
	if err := s.EnterQueue(q); err != nil {
		return 0, false, err
	}
	defer s.Exit()
	if !s.vnet {
		return 0, false, fmt.Errorf("receive fragments on %s: only with VnetHdr: %w", s.ifname, ErrBadConfig)
	}
	if len(bufs) == 0 {
		return 0, false, nil
	}
	if s.vring != nil {
		return s.scatterVnetRing(bufs)
	}
	return s.recvScatterCount(bufs, true)
}

// recvScatterCount is RxScatter in VnetHdr mode without a ring: one recvmsg(2) with
// MSG_TRUNC (which returns the frame's real length, so a cut frame is detected and
// dropped). count says whether a frame received is counted here (the ring's callers
// count their frames themselves).
func (s *Socket) recvScatterCount(bufs [][]byte, count bool) (int, bool, error) {
	nb, room := sys.SetIovecs(s.rxIov[:], bufs)
	iov := s.rxIov[:nb]
	defer clear(iov)
	var msg unix.Msghdr
	msg.Iov = &iov[0]
	msg.SetIovlen(nb)
	for {
		// Raw: the descriptor is non-blocking (see internal/sys, Writev).
		n, _, e := unix.RawSyscall(unix.SYS_RECVMSG, uintptr(s.pfd.FD()), uintptr(unsafe.Pointer(&msg)), unix.MSG_DONTWAIT|unix.MSG_TRUNC)
		switch e {
		case 0:
		case unix.EAGAIN:
			return 0, false, nil
		case unix.EINTR:
			continue
		default:
			return 0, false, fmt.Errorf("receive on %s: %w", s.ifname, e)
		}
		if int(n) > room || int(n) < VnetHdrLen {
			s.rxTrunc.Add(1)
			return 0, true, nil
		}
		if count {
			s.rxPackets.Add(1)
			s.rxBytes.Add(uint64(n))
		}
		return int(n), true, nil
	}
}

// ringlessReadable asks the kernel (poll(2), zero timeout) whether a frame is queued.
// Only the RX waiter calls it (it owns rxPoll).
func (s *Socket) ringlessReadable() bool {
	s.rxPoll[0].Revents = 0
	n, err := unix.Poll(s.rxPoll[:], 0)
	return err == nil && n > 0 && s.rxPoll[0].Revents&(unix.POLLIN|unix.POLLERR|unix.POLLHUP) != 0
}
