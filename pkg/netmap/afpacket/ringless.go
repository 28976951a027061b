package afpacket

import (
	"encoding/binary"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Offsets in struct tpacket_auxdata (tp_status, tp_len, tp_snaplen, tp_mac, tp_net,
// tp_vlan_tci, tp_vlan_tpid).
const (
	auxStatusOff   = 0
	auxVlanTCIOff  = 16
	auxVlanTPIDOff = 18
	auxLen         = 20
)

// receiveRingless is Receive without rings: one recvmsg(2) per frame, straight into the
// caller's buffer, with MSG_TRUNC (the frame's real length). Without VnetHdr a frame cut to
// its buffer is delivered cut and counted in RxTruncated, as with rings, and the VLAN tag
// that PACKET_AUXDATA reports, when the kernel took it out of the frame, is put back. With
// VnetHdr (header included in the frame) a frame longer than its buffer is dropped and
// counted: a cut super-frame would carry a header that no longer matches it.
func (s *Socket) receiveRingless(bufs [][]byte, lens []int) (int, error) {
	if s.vnet {
		return s.receiveVnet(bufs, lens)
	}
	want := min(len(bufs), len(lens))
	n := 0
	var bytes uint64
	fd := uintptr(s.pfd.FD())
	var iov unix.Iovec
	var msg unix.Msghdr
	for n < want {
		b := bufs[n]
		if len(b) == 0 {
			break
		}
		iov.Base = &b[0]
		iov.SetLen(len(b))
		msg = unix.Msghdr{Iov: &iov}
		msg.SetIovlen(1)
		if !s.vnet {
			msg.Control = &s.rxCmsg[0]
			msg.SetControllen(len(s.rxCmsg))
		}
		// Raw: the descriptor is non-blocking (see internal/sys, Writev).
		m, _, e := unix.RawSyscall(unix.SYS_RECVMSG, fd, uintptr(unsafe.Pointer(&msg)), unix.MSG_DONTWAIT|unix.MSG_TRUNC)
		switch e {
		case 0:
		case unix.EAGAIN:
			goto done
		case unix.EINTR:
			continue
		default:
			if n > 0 {
				goto done
			}
			return 0, fmt.Errorf("receive on %s: %w", s.ifname, e)
		}
		l := int(m)
		if s.vnet {
			if l > len(b) || l < VnetHdrLen {
				s.rxTrunc.Add(1)
				continue
			}
			lens[n] = l
			bytes += uint64(l)
			n++
			continue
		}
		if l > len(b) {
			s.rxTrunc.Add(1)
			l = len(b)
		}
		if tci, tpid, ok := s.auxVLAN(int(msg.Controllen)); ok && l >= 12 && len(b) >= 16 {
			if l+4 > len(b) {
				s.rxTrunc.Add(1)
				l = len(b) - 4
			}
			copy(b[16:l+4], b[12:l])
			binary.BigEndian.PutUint16(b[12:], tpid)
			binary.BigEndian.PutUint16(b[14:], tci)
			l += 4
		}
		lens[n] = l
		bytes += uint64(l)
		n++
	}
done:
	if n > 0 {
		s.rxPackets.Add(uint64(n))
		s.rxBytes.Add(bytes)
	}
	return n, nil
}

// auxVLAN finds the PACKET_AUXDATA message in the first clen bytes of rxCmsg and returns
// the VLAN tag the kernel took out of the frame, if any. The layout comes from the
// kernel; it is still bounds-checked.
func (s *Socket) auxVLAN(clen int) (tci, tpid uint16, ok bool) {
	c := s.rxCmsg[:min(clen, len(s.rxCmsg))]
	hdr := unix.CmsgLen(0)
	for len(c) >= hdr {
		// struct cmsghdr: cmsg_len (size_t), cmsg_level, cmsg_type (int), read byte-wise.
		var cl uint64
		lo := unix.SizeofCmsghdr - 8 // where cmsg_level starts: after a 4- or 8-byte cmsg_len
		if lo == 8 {
			cl = binary.NativeEndian.Uint64(c)
		} else {
			cl = uint64(binary.NativeEndian.Uint32(c))
		}
		level, typ := int32(binary.NativeEndian.Uint32(c[lo:])), int32(binary.NativeEndian.Uint32(c[lo+4:]))
		if cl < uint64(hdr) || cl > uint64(len(c)) {
			return 0, 0, false
		}
		l := int(cl)
		if level == unix.SOL_PACKET && typ == unix.PACKET_AUXDATA && l-hdr >= auxLen {
			d := c[hdr:l]
			st := binary.NativeEndian.Uint32(d[auxStatusOff:])
			if st&unix.TP_STATUS_VLAN_VALID == 0 {
				return 0, 0, false
			}
			tpid = unix.ETH_P_8021Q
			if v := binary.NativeEndian.Uint16(d[auxVlanTPIDOff:]); st&unix.TP_STATUS_VLAN_TPID_VALID != 0 && v != 0 {
				tpid = v
			}
			return binary.NativeEndian.Uint16(d[auxVlanTCIOff:]), tpid, true
		}
		sp := unix.CmsgSpace(l - hdr)
		if sp > len(c) {
			return 0, 0, false
		}
		c = c[sp:]
	}
	return 0, 0, false
}

// rxBatchMax bounds the frames one recvmmsg(2) of receiveVnet takes.
const rxBatchMax = 16

// receiveVnet is Receive in VnetHdr mode: frames (each with its virtio_net_hdr), up to
// rxBatchMax per recvmmsg(2), one buffer per frame, until the buffers are full or a
// recvmmsg comes back short, so that fewer frames than buffers means the socket had no
// more. MSG_TRUNC makes the kernel report a frame's real length, so one longer than its
// buffer is detected: it is dropped (counted in RxTruncated) and its lens entry is 0;
// every other entry holds a frame. Frames the kernel could not queue (the socket full)
// are the socket's PACKET_STATISTICS drops, not this call's.
func (s *Socket) receiveVnet(bufs [][]byte, lens []int) (int, error) {
	if s.vring != nil {
		return s.receiveVnetRing(bufs, lens)
	}
	want := min(len(bufs), len(lens))
	n := 0
	for n < want {
		ask := min(want-n, rxBatchMax)
		m, err := s.recvVnetBatch(bufs[n:n+ask], lens[n:n+ask])
		n += m
		if err != nil || m < ask {
			return n, err
		}
	}
	return n, nil
}

// recvVnetBatch is one recvmmsg(2) of receiveVnet, for at most rxBatchMax frames.
func (s *Socket) recvVnetBatch(bufs [][]byte, lens []int) (int, error) {
	want := min(len(bufs), len(lens), rxBatchMax)
	for i := 0; i < want; i++ {
		if len(bufs[i]) == 0 {
			want = i
			break
		}
		s.rxBIov[i].Base = &bufs[i][0]
		s.rxBIov[i].SetLen(len(bufs[i]))
		s.rxMsgs[i] = unix.Mmsghdr{Hdr: unix.Msghdr{Iov: &s.rxBIov[i]}}
		s.rxMsgs[i].Hdr.SetIovlen(1)
	}
	if want == 0 {
		return 0, nil
	}
	defer clear(s.rxBIov[:want])
	defer clear(s.rxMsgs[:want])
	fd := uintptr(s.pfd.FD())
	for {
		// Raw: the descriptor is non-blocking (see internal/sys, Writev).
		m, _, e := unix.RawSyscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&s.rxMsgs[0])), uintptr(want), unix.MSG_DONTWAIT|unix.MSG_TRUNC, 0, 0)
		switch e {
		case 0:
		case unix.EAGAIN:
			return 0, nil
		case unix.EINTR:
			continue
		default:
			return 0, fmt.Errorf("receive on %s: %w", s.ifname, e)
		}
		n := int(m)
		var bytes, got uint64
		for i := 0; i < n; i++ {
			l := int(s.rxMsgs[i].Len)
			if l > len(bufs[i]) || l < VnetHdrLen {
				s.rxTrunc.Add(1)
				lens[i] = 0
				continue
			}
			lens[i] = l
			bytes += uint64(l)
			got++
		}
		if got > 0 {
			s.rxPackets.Add(got)
			s.rxBytes.Add(bytes)
		}
		return n, nil
	}
}
