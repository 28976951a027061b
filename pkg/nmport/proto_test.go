package nmport

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
)

func TestParseName(t *testing.T) {
	cases := []struct {
		in     string
		name   string
		flags  uint32
		ringid uint16
		err    bool
	}{
		{"vale0:p", "vale0:p", RegAllNIC, 0, false},
		{"vale0:p-2", "vale0:p", RegOneNIC, 2, false},
		{"vale0:pod-app", "vale0:pod-app", RegAllNIC, 0, false},
		{"vale0:p{3", "vale0:p", RegPipeMaster, 3, false},
		{"vale0:p}3", "vale0:p", RegPipeSlave, 3, false},
		{"vale0:p/r", "vale0:p", RegAllNIC | MonitorRX, 0, false},
		{"vale0:p/rt", "vale0:p", RegAllNIC | MonitorRX | MonitorTX, 0, false},
		{"vale0:p/x", "", 0, 0, true},
		{"vale0:p/", "", 0, 0, true},
		{"vale0:p^", "", 0, 0, true},
		{"vale0:p*", "", 0, 0, true},
		{"vale0:p{", "", 0, 0, true},
		{"vale0:p{4096", "", 0, 0, true},
		{"", "", 0, 0, true},
	}
	for _, c := range cases {
		r, err := ParseName(c.in)
		if c.err {
			if !errors.Is(err, syscall.EINVAL) {
				t.Errorf("ParseName(%q) = %+v, %v; want EINVAL", c.in, r, err)
			}
			continue
		}
		if err != nil || r.Name != c.name || r.Flags != c.flags || r.RingID != c.ringid || r.Version != Version {
			t.Errorf("ParseName(%q) = %+v, %v; want %s flags %#x ring %d", c.in, r, err, c.name, c.flags, c.ringid)
		}
	}
}

func TestGeometryLayout(t *testing.T) {
	g := Geometry{TxRings: 2, RxRings: 1, TxSlots: 1024, RxSlots: 512, BufSize: 2048, ExtraBufs: 8}
	if err := g.Validate(); err != nil {
		t.Fatal(err)
	}
	l, _ := g.Layout()
	if l.NumBufs != 2*1024+512+2+8 || l.BufOff%pageSize != 0 || l.Size%pageSize != 0 {
		t.Fatalf("layout %+v", l)
	}
	for i := 1; i < len(l.RingOff); i++ {
		if l.RingOff[i] < l.SlotOff(i-1, l.RingSlots(i-1)) {
			t.Fatalf("ring %d overlaps ring %d", i, i-1)
		}
	}
	mem := make([]byte, l.Size)
	head := l.Init(mem, "vale0:x")
	if head != l.NumBufs-8 {
		t.Fatalf("extra buffers start at %d, want %d", head, l.NumBufs-8)
	}
	// Every ring slot owns a distinct buffer, none reserved, none extra.
	seen := map[uint32]bool{}
	rg := NewRegion(mem, l)
	for i := range l.RingOff {
		for s := uint32(0); s < l.RingSlots(i); s++ {
			idx, _, _ := rg.Slot(i, s)
			if idx < 2 || idx >= l.NumBufs-8 || seen[idx] {
				t.Fatalf("ring %d slot %d has buffer %d", i, s, idx)
			}
			seen[idx] = true
		}
	}
	for _, bad := range []Geometry{
		{TxRings: 0, RxRings: 1, TxSlots: 64, RxSlots: 64, BufSize: 2048},
		{TxRings: 1, RxRings: 1, TxSlots: 4, RxSlots: 64, BufSize: 2048},
		{TxRings: 1, RxRings: 1, TxSlots: 64, RxSlots: 64, BufSize: 100},
		{TxRings: 16, RxRings: 16, TxSlots: 16384, RxSlots: 16384, BufSize: 65472},
	} {
		if err := bad.Validate(); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("Validate(%+v) = %v, want EINVAL", bad, err)
		}
	}
}

// FuzzRequest: whatever an application sends decodes to a valid request or
// EINVAL, never a panic, and a valid one survives a round trip.
func FuzzRequest(f *testing.F) {
	r, _ := ParseName("vale0:p{1")
	b, _ := r.MarshalBinary()
	f.Add(b)
	f.Add(make([]byte, RequestSize))
	f.Add([]byte("short"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var r Request
		if err := r.UnmarshalBinary(b); err != nil {
			if !errors.Is(err, syscall.EINVAL) {
				t.Fatalf("error %v is not EINVAL", err)
			}
			return
		}
		out, err := r.MarshalBinary()
		if err != nil {
			t.Fatalf("decoded %+v does not encode: %v", r, err)
		}
		var r2 Request
		if err := r2.UnmarshalBinary(out); err != nil || r2 != r {
			t.Fatalf("round trip %+v -> %+v, %v", r, r2, err)
		}
	})
}

// TestResponseIdentity: a pod's application port learns its MAC and
// addresses from the response, and a message never runs into them.
func TestResponseIdentity(t *testing.T) {
	in := Response{
		Message: strings.Repeat("m", 500),
		MAC:     net.HardwareAddr{0x02, 0x65, 1, 2, 3, 4},
		Addrs: []Address{
			{Prefix: netip.MustParsePrefix("10.22.0.7/24"), Gateway: netip.MustParseAddr("10.22.0.1")},
			{Prefix: netip.MustParsePrefix("fd00:22::7/64")},
		},
	}
	b, err := in.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var out Response
	if err := out.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if out.MAC.String() != in.MAC.String() || len(out.Addrs) != 2 || out.Addrs[0] != in.Addrs[0] || out.Addrs[1] != in.Addrs[1] {
		t.Fatalf("identity %v %v, want %v %v", out.MAC, out.Addrs, in.MAC, in.Addrs)
	}
	if len(out.Message) != msgEnd-64-1 {
		t.Errorf("message of %d bytes, want it cut to %d", len(out.Message), msgEnd-64-1)
	}
	var none Response
	b, _ = (&Response{Errno: syscall.EACCES, Message: "no"}).MarshalBinary()
	if err := none.UnmarshalBinary(b); err != nil || none.MAC != nil || none.Addrs != nil {
		t.Errorf("a response without identity decodes as %v %v (%v)", none.MAC, none.Addrs, err)
	}
	in.Addrs = append(in.Addrs, in.Addrs[0])
	if _, err := in.MarshalBinary(); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("three addresses: %v, want EINVAL", err)
	}
	b[addrOff] = 5
	if err := none.UnmarshalBinary(b); !errors.Is(err, syscall.EPROTO) {
		t.Errorf("address family 5: %v, want EPROTO", err)
	}
}
