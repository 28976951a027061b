package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// ErrInvalidConfig is wrapped by every configuration error (each also names its field).
var ErrInvalidConfig = errors.New("invalid ipam config")

// RangeConfig is the JSON form of a range.
type RangeConfig struct {
	// Subnet in CIDR notation, e.g. "10.22.0.0/24" or "fd00:22::/64". Required.
	Subnet string `json:"subnet"`
	// RangeStart and RangeEnd bound the allocatable window (inclusive); default: the whole
	// subnet minus the excluded addresses.
	RangeStart string `json:"rangeStart,omitempty"`
	RangeEnd   string `json:"rangeEnd,omitempty"`
	// Gateway defaults to the first host of the subnet.
	Gateway string `json:"gateway,omitempty"`
}

// Range is a parsed, validated range.
type Range struct {
	Subnet  netip.Prefix // masked
	Start   netip.Addr   // first allocatable address
	End     netip.Addr   // last allocatable address
	Gateway netip.Addr   // never allocated
}

// FieldError is a configuration error naming the offending field.
type FieldError struct {
	Field  string
	Value  string
	Reason string
}

func (e *FieldError) Error() string {
	if e.Value == "" {
		return fmt.Sprintf("%v: %s: %s", ErrInvalidConfig, e.Field, e.Reason)
	}
	return fmt.Sprintf("%v: %s: %q: %s", ErrInvalidConfig, e.Field, e.Value, e.Reason)
}

// Is makes errors.Is(err, ErrInvalidConfig) hold.
func (e *FieldError) Is(target error) bool { return target == ErrInvalidConfig }

// Is4 reports whether the range is IPv4.
func (r Range) Is4() bool { return r.Subnet.Addr().Is4() }

// Contains reports whether a is allocatable in r: inside the window and not the gateway.
func (r Range) Contains(a netip.Addr) bool {
	return a.BitLen() == r.Start.BitLen() && a.Compare(r.Start) >= 0 && a.Compare(r.End) <= 0 && a != r.Gateway
}

// why says what a, an address of r's subnet that Contains refuses, is.
func (r Range) why(a netip.Addr) string {
	switch {
	case a == r.Gateway:
		return fmt.Sprintf("is the gateway of %s (the node's address on the pod network)", r.Subnet)
	case a == r.Subnet.Masked().Addr():
		return fmt.Sprintf("is the network address of %s", r.Subnet)
	case a.Is4() && a == lastAddr(r.Subnet):
		return fmt.Sprintf("is the broadcast address of %s", r.Subnet)
	}
	return fmt.Sprintf("is in %s but outside its allocation window %s-%s", r.Subnet, r.Start, r.End)
}

func (r Range) String() string {
	return fmt.Sprintf("%s [%s-%s] gw %s", r.Subnet, r.Start, r.End, r.Gateway)
}

// ParseRanges parses and validates cfgs. Field names in errors are "ranges[i].field".
// Ranges must not overlap each other.
func ParseRanges(cfgs []RangeConfig) ([]Range, error) {
	if len(cfgs) == 0 {
		return nil, &FieldError{Field: "ranges", Reason: "at least one range is required"}
	}
	out := make([]Range, 0, len(cfgs))
	for i, c := range cfgs {
		r, err := c.parse(fmt.Sprintf("ranges[%d].", i))
		if err != nil {
			return nil, err
		}
		for j, o := range out {
			if o.Subnet.Overlaps(r.Subnet) {
				return nil, &FieldError{Field: fmt.Sprintf("ranges[%d].subnet", i), Value: c.Subnet,
					Reason: fmt.Sprintf("overlaps ranges[%d].subnet %s", j, o.Subnet)}
			}
		}
		out = append(out, r)
	}
	return out, nil
}

// Parse parses one range; field names in errors are bare ("subnet", "gateway", ...).
func (c RangeConfig) Parse() (Range, error) { return c.parse("") }

func (c RangeConfig) parse(pfx string) (Range, error) {
	var r Range
	if strings.TrimSpace(c.Subnet) == "" {
		return r, &FieldError{Field: pfx + "subnet", Reason: "required, a CIDR such as 10.22.0.0/24 or fd00:22::/64"}
	}
	p, err := netip.ParsePrefix(c.Subnet)
	if err != nil {
		return r, &FieldError{Field: pfx + "subnet", Value: c.Subnet, Reason: "not a CIDR (want e.g. 10.22.0.0/24 or fd00:22::/64)"}
	}
	if p.Addr().Is4In6() {
		return r, &FieldError{Field: pfx + "subnet", Value: c.Subnet, Reason: "IPv4-mapped IPv6 subnet; write the IPv4 subnet instead"}
	}
	if p.Addr().Zone() != "" {
		return r, &FieldError{Field: pfx + "subnet", Value: c.Subnet, Reason: "zoned addresses are not allowed"}
	}
	if p.Masked() != p {
		return r, &FieldError{Field: pfx + "subnet", Value: c.Subnet, Reason: fmt.Sprintf("host bits set; the subnet is %s", p.Masked())}
	}
	// Smallest useful subnets: a gateway plus at least one pod address.
	maxBits := 30
	if p.Addr().Is6() {
		maxBits = 126
	}
	if p.Bits() > maxBits {
		return r, &FieldError{Field: pfx + "subnet", Value: c.Subnet,
			Reason: fmt.Sprintf("prefix /%d too long: at most /%d leaves room for a gateway and a pod", p.Bits(), maxBits)}
	}
	r.Subnet = p
	network := p.Addr()
	last := lastAddr(p)
	first, lastUsable := network.Next(), last
	if p.Addr().Is4() {
		lastUsable = last.Prev() // broadcast
	}
	parse := func(field, s string, def netip.Addr) (netip.Addr, error) {
		if s == "" {
			return def, nil
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return a, &FieldError{Field: pfx + field, Value: s, Reason: "not an IP address"}
		}
		if a.Is4In6() {
			a = a.Unmap()
		}
		if a.Zone() != "" {
			return a, &FieldError{Field: pfx + field, Value: s, Reason: "zoned addresses are not allowed"}
		}
		if a.Compare(first) < 0 || a.Compare(lastUsable) > 0 {
			return a, &FieldError{Field: pfx + field, Value: s,
				Reason: fmt.Sprintf("outside the usable addresses %s-%s of subnet %s", first, lastUsable, p)}
		}
		return a, nil
	}
	if r.Gateway, err = parse("gateway", c.Gateway, first); err != nil {
		return r, err
	}
	if r.Start, err = parse("rangeStart", c.RangeStart, first); err != nil {
		return r, err
	}
	if r.End, err = parse("rangeEnd", c.RangeEnd, lastUsable); err != nil {
		return r, err
	}
	if r.Start.Compare(r.End) > 0 {
		return r, &FieldError{Field: pfx + "rangeEnd", Value: c.RangeEnd,
			Reason: fmt.Sprintf("before rangeStart %s", r.Start)}
	}
	if r.Start == r.End && r.Start == r.Gateway {
		return r, &FieldError{Field: pfx + "rangeStart", Value: c.RangeStart,
			Reason: "the window holds only the gateway; no address is left for pods"}
	}
	return r, nil
}

// lastAddr is the highest address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().As16()
	bits := p.Bits()
	off := 0
	if p.Addr().Is4() {
		off = 96
	}
	for i := off + bits; i < 128; i++ {
		b[i/8] |= 1 << (7 - uint(i%8))
	}
	a := netip.AddrFrom16(b)
	if p.Addr().Is4() {
		a = a.Unmap()
	}
	return a
}

// RangesFromPodCIDRs builds ranges from a node's pod CIDRs (Node.spec.podCIDRs: one per
// family in a dual-stack cluster) with the default gateway and window. Errors name
// "podCIDRs[i]".
func RangesFromPodCIDRs(cidrs []string) ([]Range, error) {
	if len(cidrs) == 0 {
		return nil, &FieldError{Field: "podCIDRs", Reason: "the node has no pod CIDR (is the controller manager allocating node CIDRs?)"}
	}
	cfgs := make([]RangeConfig, len(cidrs))
	for i, c := range cidrs {
		cfgs[i] = RangeConfig{Subnet: c}
	}
	r, err := ParseRanges(cfgs)
	var fe *FieldError
	if errors.As(err, &fe) {
		fe.Field = strings.Replace(strings.Replace(fe.Field, "ranges[", "podCIDRs[", 1), "].subnet", "]", 1)
		return nil, fe
	}
	return r, err
}
