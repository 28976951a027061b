package afpacket

import (
	"encoding/binary"
	"errors"

	"golang.org/x/sys/unix"
)

// Offload (PACKET_VNET_HDR) mode: sizes and the virtio-net header.
const (
	// VnetHdrLen is sizeof(struct virtio_net_hdr), the header before each frame.
	VnetHdrLen = 10
	// MaxVnetFrame is the largest header + frame the socket carries in VnetHdr mode: a
	// 64 KB GSO super-frame (the netmap/VALE frame limit).
	MaxVnetFrame = 65535
	// MinVnetBlockSize is the smallest receive block that holds a MaxVnetFrame frame with
	// its tpacket3_hdr and block descriptor.
	MinVnetBlockSize = 128 << 10
	// VnetBlockSize and VnetBlockCount are the receive ring defaults in VnetHdr mode (2 MiB).
	VnetBlockSize  = 256 << 10
	VnetBlockCount = 8
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

// copyVnetFrame copies the virtio_net_hdr the kernel wrote just before the frame (at
// tp_mac - VnetHdrLen) followed by the frame, re-inserting a stripped VLAN tag (and then
// moving csum_start and hdr_len, which count from the frame's start, by the tag's 4 bytes).
func (s *Socket) copyVnetFrame(dst, blk []byte, h *unix.Tpacket3Hdr, start uint32) int {
	if start < VnetHdrLen || uint64(start)+uint64(h.Snaplen) > uint64(len(blk)) {
		s.rxTrunc.Add(1)
		return 0
	}
	hdr := blk[start-VnetHdrLen : start]
	data := blk[start : start+h.Snaplen]
	if h.Snaplen < h.Len {
		s.rxTrunc.Add(1)
	}
	vlan := h.Status&unix.TP_STATUS_VLAN_VALID != 0 && len(data) >= 12
	need := VnetHdrLen + len(data)
	if vlan {
		need += 4
	}
	if len(dst) < need {
		// A header cut short is worse than no frame: the far side would misparse it.
		s.rxTrunc.Add(1)
		return 0
	}
	copy(dst, hdr)
	if !vlan {
		return VnetHdrLen + copy(dst[VnetHdrLen:], data)
	}
	var v VnetHdr
	v.Decode(dst)
	if v.Flags&VnetFlagNeedsCsum != 0 {
		v.CsumStart += 4
	}
	if v.HdrLen != 0 {
		v.HdrLen += 4
	}
	v.Encode(dst)
	tpid := uint16(unix.ETH_P_8021Q)
	if h.Status&unix.TP_STATUS_VLAN_TPID_VALID != 0 && h.Hv1.Vlan_tpid != 0 {
		tpid = h.Hv1.Vlan_tpid
	}
	f := dst[VnetHdrLen:]
	copy(f, data[:12])
	binary.BigEndian.PutUint16(f[12:], tpid)
	binary.BigEndian.PutUint16(f[14:], uint16(h.Hv1.Vlan_tci))
	return VnetHdrLen + 16 + copy(f[16:], data[12:])
}

// transmitVnet writes each header + frame with write(2): packet_snd parses the
// virtio_net_hdr, so a GSO super-frame leaves as one skb that the kernel segments (or
// hands whole to a device that takes GSO, like veth) and checksums where the header
// asks. It stops at the first frame the send buffer has no room for (EAGAIN, ENOBUFS);
// frames the kernel refuses (a bad header) are consumed and counted in TxRejected.
func (s *Socket) transmitVnet(frames [][]byte) int {
	var consumed, sent int
	var bytes uint64
	fd := s.pfd.FD()
	for _, f := range frames {
		if len(f) < VnetHdrLen+14 || len(f) > MaxVnetFrame {
			s.txDrop.Add(1)
			consumed++
			continue
		}
		_, err := unix.Write(fd, f)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.ENOBUFS) {
				break
			}
			if errors.Is(err, unix.EINTR) {
				continue
			}
			s.txRej.Add(1)
			consumed++
			continue
		}
		bytes += uint64(len(f) - VnetHdrLen)
		sent++
		consumed++
	}
	if sent > 0 {
		s.txPackets.Add(uint64(sent))
		s.txBytes.Add(bytes)
	}
	return consumed
}

// vnetWritable asks the kernel (poll(2), zero timeout) whether the send buffer has room.
// Only the TX waiter calls it (it owns txPoll).
func (s *Socket) vnetWritable() bool {
	s.txPoll[0].Revents = 0
	n, err := unix.Poll(s.txPoll[:], 0)
	return err == nil && n > 0 && s.txPoll[0].Revents&(unix.POLLOUT|unix.POLLERR|unix.POLLHUP) != 0
}
