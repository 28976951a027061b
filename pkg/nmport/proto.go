package nmport

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"

	"github.com/epair-cni/epair/pkg/netmap"
)

// The registration protocol, over a SOCK_SEQPACKET unix socket served by the
// node agent: the application sends one Request (NIOCREGIF's struct nmreq,
// fixed size, little endian); the agent answers one Response and, on
// success, passes three descriptors with SCM_RIGHTS: the region (a memfd
// holding the netmap_if, rings, CSB and buffers), the kick eventfd (the
// application writes it when the CSB asks for a kick) and the notify
// eventfd (the agent writes it when the application asked to be woken). The
// registration lives as long as the connection: closing it, or the
// application's exit, unregisters the port.

// Request sizes and magic numbers.
const (
	RequestSize  = 128
	ResponseSize = 384
	reqMagic     = 0x524d4e4e // "NNMR"
	respMagic    = 0x414d4e4e // "NNMA"
	// NameMax is the longest port name (IFNAMSIZ-like, as netmap's nr_name[64]).
	NameMax = 63
)

// nr_ringid / nr_flags values of struct nmreq: netmap's own (pkg/netmap).
const (
	RegAllNIC     = netmap.RegAllNIC
	RegSW         = netmap.RegSW
	RegNICSW      = netmap.RegNICSW
	RegOneNIC     = netmap.RegOneNIC
	RegPipeMaster = netmap.RegPipeMaster
	RegPipeSlave  = netmap.RegPipeSlave
	RegMask       = netmap.RegMask
	MonitorTX     = netmap.MonitorTX
	MonitorRX     = netmap.MonitorRX
	Exclusive     = netmap.Exclusive
	RxRingsOnly   = netmap.RxRingsOnly
	TxRingsOnly   = netmap.TxRingsOnly
	RingMask      = netmap.RingMask
	NoTxPoll      = netmap.NoTxPoll
)

// Request is struct nmreq as sent to the agent.
type Request struct {
	Name      string // port name without mode suffixes, e.g. "vale0:p0"
	Version   uint32 // nr_version (Version)
	RingID    uint16 // nr_ringid
	Flags     uint32 // nr_flags: NR_REG_* mode, NR_MONITOR_*, NR_EXCLUSIVE, ...
	TxSlots   uint32 // 0: the port's default
	RxSlots   uint32
	TxRings   uint16
	RxRings   uint16
	ExtraBufs uint32 // nr_arg3
}

// MarshalBinary encodes r into RequestSize bytes.
func (r *Request) MarshalBinary() ([]byte, error) {
	if len(r.Name) == 0 || len(r.Name) > NameMax || strings.IndexByte(r.Name, 0) >= 0 {
		return nil, fmt.Errorf("port name %q: must be 1-%d bytes without NUL: %w", r.Name, NameMax, syscall.EINVAL)
	}
	b := make([]byte, RequestSize)
	le := binary.LittleEndian
	le.PutUint32(b[0:], reqMagic)
	le.PutUint32(b[4:], r.Version)
	copy(b[8:72], r.Name)
	le.PutUint16(b[72:], r.RingID)
	le.PutUint32(b[76:], r.Flags)
	le.PutUint32(b[80:], r.TxSlots)
	le.PutUint32(b[84:], r.RxSlots)
	le.PutUint16(b[88:], r.TxRings)
	le.PutUint16(b[90:], r.RxRings)
	le.PutUint32(b[92:], r.ExtraBufs)
	return b, nil
}

// UnmarshalBinary decodes a request. Everything an application sends is
// untrusted: a wrong size, magic, a name that is empty, unterminated or not
// printable, or non-zero reserved bytes are EINVAL, naming what was wrong.
func (r *Request) UnmarshalBinary(b []byte) error {
	if len(b) != RequestSize {
		return fmt.Errorf("request of %d bytes, want %d: %w", len(b), RequestSize, syscall.EINVAL)
	}
	le := binary.LittleEndian
	if m := le.Uint32(b[0:]); m != reqMagic {
		return fmt.Errorf("request magic %#x, want %#x: %w", m, reqMagic, syscall.EINVAL)
	}
	name := b[8:72]
	n := bytes.IndexByte(name, 0)
	if n < 0 {
		return fmt.Errorf("request name not NUL-terminated within %d bytes: %w", len(name), syscall.EINVAL)
	}
	if n == 0 {
		return fmt.Errorf("request without a port name: %w", syscall.EINVAL)
	}
	for _, c := range name[:n] {
		if c <= ' ' || c >= 0x7f {
			return fmt.Errorf("request name %q has a non-printable byte %#x: %w", name[:n], c, syscall.EINVAL)
		}
	}
	for _, c := range name[n:] {
		if c != 0 {
			return fmt.Errorf("request name %q has bytes after its NUL: %w", name[:n], syscall.EINVAL)
		}
	}
	if le.Uint16(b[74:]) != 0 || !zero(b[96:]) {
		return fmt.Errorf("request has non-zero reserved bytes: %w", syscall.EINVAL)
	}
	*r = Request{
		Name:      string(name[:n]),
		Version:   le.Uint32(b[4:]),
		RingID:    le.Uint16(b[72:]),
		Flags:     le.Uint32(b[76:]),
		TxSlots:   le.Uint32(b[80:]),
		RxSlots:   le.Uint32(b[84:]),
		TxRings:   le.Uint16(b[88:]),
		RxRings:   le.Uint16(b[90:]),
		ExtraBufs: le.Uint32(b[92:]),
	}
	return nil
}

func zero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// Response is the agent's answer. Errno 0 is success; otherwise Message says
// what was wrong and no descriptor follows.
type Response struct {
	Errno    syscall.Errno
	Message  string
	Geometry Geometry // the registration's rings, slots, buffers
	Size     uint64   // bytes of the region (the memfd's size)
	BufsHead uint32   // first extra buffer (also ni_bufs_head)
	RingID   uint16   // nr_ringid and nr_flags as registered
	Flags    uint32
	// Bound is [first, last) of the rings the registration bound, TX then
	// RX (netmap's np_qfirst/np_qlast; host rings never included).
	Bound [2][2]uint16
	// MAC and Addrs are the port's identity on its switch when the agent
	// gave it one (a pod's application port: its MAC and IPAM addresses,
	// which anti-spoofing holds it to); empty otherwise.
	MAC   net.HardwareAddr
	Addrs []Address
}

// Address is one address of a port: the address with its subnet's prefix
// length, and the subnet's gateway (invalid when there is none).
type Address struct {
	Prefix  netip.Prefix
	Gateway netip.Addr
}

// The identity's place in a response: the MAC at 256, then up to maxAddrs
// entries of 36 bytes (family, prefix bits, 2 reserved, address, gateway).
const (
	idOff    = 256
	addrOff  = 264
	addrSize = 36
	maxAddrs = 2
	msgEnd   = idOff
)

// MarshalBinary encodes r into ResponseSize bytes; a long message is cut.
func (r *Response) MarshalBinary() ([]byte, error) {
	b := make([]byte, ResponseSize)
	le := binary.LittleEndian
	le.PutUint32(b[0:], respMagic)
	le.PutUint32(b[4:], uint32(r.Errno))
	le.PutUint64(b[8:], r.Size)
	le.PutUint16(b[16:], uint16(r.Geometry.TxRings))
	le.PutUint16(b[18:], uint16(r.Geometry.RxRings))
	le.PutUint32(b[20:], r.Geometry.TxSlots)
	le.PutUint32(b[24:], r.Geometry.RxSlots)
	le.PutUint32(b[28:], r.Geometry.BufSize)
	le.PutUint32(b[32:], r.Geometry.ExtraBufs)
	le.PutUint32(b[36:], r.BufsHead)
	le.PutUint16(b[40:], r.RingID)
	le.PutUint32(b[44:], r.Flags)
	for t := range r.Bound {
		le.PutUint16(b[48+4*t:], r.Bound[t][0])
		le.PutUint16(b[50+4*t:], r.Bound[t][1])
	}
	msg := r.Message
	if len(msg) > msgEnd-64-1 {
		msg = msg[:msgEnd-64-1]
	}
	copy(b[64:msgEnd], msg)
	if len(r.MAC) != 0 && len(r.MAC) != 6 {
		return nil, fmt.Errorf("response MAC %v: want 6 bytes: %w", r.MAC, syscall.EINVAL)
	}
	copy(b[idOff:], r.MAC)
	if len(r.Addrs) > maxAddrs {
		return nil, fmt.Errorf("response with %d addresses, at most %d: %w", len(r.Addrs), maxAddrs, syscall.EINVAL)
	}
	for i, a := range r.Addrs {
		e := b[addrOff+i*addrSize : addrOff+(i+1)*addrSize]
		ip := a.Prefix.Addr()
		switch {
		case ip.Is4():
			e[0] = 4
		case ip.Is6():
			e[0] = 6
		default:
			return nil, fmt.Errorf("response address %d: %v is not an address: %w", i, a.Prefix, syscall.EINVAL)
		}
		e[1] = byte(a.Prefix.Bits())
		a16 := ip.As16()
		copy(e[4:20], a16[:])
		if a.Gateway.IsValid() {
			g16 := a.Gateway.As16()
			copy(e[20:36], g16[:])
		}
	}
	return b, nil
}

// UnmarshalBinary decodes a response (the client's side; the agent is
// trusted, but a short or foreign message is still an error).
func (r *Response) UnmarshalBinary(b []byte) error {
	if len(b) != ResponseSize {
		return fmt.Errorf("response of %d bytes, want %d: %w", len(b), ResponseSize, syscall.EPROTO)
	}
	le := binary.LittleEndian
	if m := le.Uint32(b[0:]); m != respMagic {
		return fmt.Errorf("response magic %#x, want %#x: %w", m, respMagic, syscall.EPROTO)
	}
	msg := b[64:msgEnd]
	if n := bytes.IndexByte(msg, 0); n >= 0 {
		msg = msg[:n]
	}
	*r = Response{
		Errno:   syscall.Errno(le.Uint32(b[4:])),
		Message: string(msg),
		Size:    le.Uint64(b[8:]),
		Geometry: Geometry{
			TxRings: int(le.Uint16(b[16:])), RxRings: int(le.Uint16(b[18:])),
			TxSlots: le.Uint32(b[20:]), RxSlots: le.Uint32(b[24:]),
			BufSize: le.Uint32(b[28:]), ExtraBufs: le.Uint32(b[32:]),
		},
		BufsHead: le.Uint32(b[36:]),
		RingID:   le.Uint16(b[40:]),
		Flags:    le.Uint32(b[44:]),
	}
	for t := range r.Bound {
		r.Bound[t] = [2]uint16{le.Uint16(b[48+4*t:]), le.Uint16(b[50+4*t:])}
	}
	if mac := b[idOff : idOff+6]; !zero(mac) {
		r.MAC = net.HardwareAddr(bytes.Clone(mac))
	}
	for i := range maxAddrs {
		e := b[addrOff+i*addrSize : addrOff+(i+1)*addrSize]
		var a16 [16]byte
		copy(a16[:], e[4:20])
		ip := netip.AddrFrom16(a16)
		switch e[0] {
		case 0:
			continue
		case 4:
			ip = ip.Unmap()
		case 6:
		default:
			return fmt.Errorf("response address %d: family %d: %w", i, e[0], syscall.EPROTO)
		}
		pfx, err := ip.Prefix(int(e[1]))
		if err != nil || pfx.Bits() != int(e[1]) {
			return fmt.Errorf("response address %d: prefix length %d: %w", i, e[1], syscall.EPROTO)
		}
		a := Address{Prefix: netip.PrefixFrom(ip, int(e[1]))}
		if g := e[20:36]; !zero(g) {
			copy(a16[:], g)
			a.Gateway = netip.AddrFrom16(a16)
			if e[0] == 4 {
				a.Gateway = a.Gateway.Unmap()
			}
		}
		r.Addrs = append(r.Addrs, a)
	}
	return nil
}

// ParseName turns a netmap port name with nmport's suffixes into a request:
//
//	vale0:p        all hardware rings (NR_REG_ALL_NIC)
//	vale0:p-2      ring 2 only (NR_REG_ONE_NIC)
//	vale0:p{3      master end of pipe 3 of vale0:p (NR_REG_PIPE_MASTER)
//	vale0:p}3      slave end of pipe 3 (NR_REG_PIPE_SLAVE)
//	vale0:p/r      copy monitor of p's RX rings (/t: TX, /rt: both)
//
// The host-ring suffixes ^ and * are refused: applications get no host rings.
func ParseName(s string) (Request, error) {
	r := Request{Version: Version, Flags: RegAllNIC}
	if i := strings.LastIndexByte(s, '/'); i >= 0 {
		mon := s[i+1:]
		s = s[:i]
		if mon == "" {
			return Request{}, fmt.Errorf("port name %q: empty monitor suffix (want /r, /t or /rt): %w", s+"/", syscall.EINVAL)
		}
		for _, c := range mon {
			switch c {
			case 'r':
				r.Flags |= MonitorRX
			case 't':
				r.Flags |= MonitorTX
			default:
				return Request{}, fmt.Errorf("port name %q: monitor suffix %q: want r, t or rt: %w", s+"/"+mon, mon, syscall.EINVAL)
			}
		}
	}
	if i := strings.IndexAny(s, "{}"); i >= 0 {
		id, err := strconv.ParseUint(s[i+1:], 10, 12)
		if err != nil {
			return Request{}, fmt.Errorf("port name %q: pipe id %q: want 0-%d: %w", s, s[i+1:], RingMask, syscall.EINVAL)
		}
		r.Flags = r.Flags&^RegMask | RegPipeMaster
		if s[i] == '}' {
			r.Flags = r.Flags&^RegMask | RegPipeSlave
		}
		r.RingID = uint16(id)
		s = s[:i]
	} else if strings.HasSuffix(s, "^") || strings.HasSuffix(s, "*") {
		return Request{}, fmt.Errorf("port name %q: host rings (^, *) are not offered to applications: %w", s, syscall.EINVAL)
	} else if i := strings.LastIndexByte(s, '-'); i > 0 && strings.IndexByte(s, ':') < i {
		if id, err := strconv.ParseUint(s[i+1:], 10, 12); err == nil {
			r.Flags = r.Flags&^RegMask | RegOneNIC
			r.RingID = uint16(id)
			s = s[:i]
		}
	}
	r.Name = s
	if _, err := r.MarshalBinary(); err != nil {
		return Request{}, err
	}
	return r, nil
}
