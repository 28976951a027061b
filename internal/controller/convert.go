package controller

import (
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"

	epairv1 "github.com/epair-cni/epair/api/v1alpha1"
	"github.com/epair-cni/epair/pkg/limits"
)

// Defaults, used when a field is zero (objects stored before a default
// existed). FDB aging has none: the API server defaults it to 5m, so a zero
// that reaches the agent is an explicit "0s" (aging off).
const (
	DefaultMTU         = limits.DefaultMTU
	DefaultBatchSize   = 1024
	DefaultMaxPorts    = 254
	DefaultFDBSize     = 4096
	DefaultQueueLength = limits.DefaultQueueLen
	// DefaultBroadcastRate and DefaultMulticastRate are the storm control of a switch
	// stored without spec.portSecurity (frames per second).
	DefaultBroadcastRate = limits.DefaultBroadcastRate
	DefaultMulticastRate = limits.DefaultMulticastRate
	maxStormRate         = limits.MaxStormRate
	maxRateBPS           = 400_000_000_000
	minBurstBytes        = 1500
	maxBurstBytes        = 1 << 30
	minDefaultBurst      = 64 << 10
)

var switchName = regexp.MustCompile(`^vale[a-z0-9]{0,11}$`)

// SwitchConfigFromSpec resolves a VirtualSwitch into a SwitchConfig, applying
// the defaults and checking every bound again (the schema may have changed
// since the object was stored).
func SwitchConfigFromSpec(vs *epairv1.VirtualSwitch) (SwitchConfig, error) {
	s := vs.Spec
	c := SwitchConfig{
		Name:       vs.Name,
		Generation: vs.Generation,
		MTU:        int(s.MTU), // 0: detected on the node
		BatchSize:  orDefault(int(s.BatchSize), DefaultBatchSize),
		MaxPorts:   orDefault(int(s.MaxPorts), DefaultMaxPorts),
		FDBSize:    orDefault(int(s.FDB.Size), DefaultFDBSize),
		FDBAging:   s.FDB.Aging.Duration,
		Offload:    s.Offload,
		DefaultQueue: QueueConfig{
			Length:     orDefault(int(s.DefaultQueue.Length), DefaultQueueLength),
			Discipline: s.DefaultQueue.Discipline,
		},
	}
	if c.DefaultQueue.Discipline == "" {
		c.DefaultQueue.Discipline = epairv1.DisciplineClassic
	}
	if !switchName.MatchString(c.Name) {
		return SwitchConfig{}, fmt.Errorf("convert virtualswitch %s: %w", vs.Name,
			&FieldError{"metadata.name", c.Name, "'vale' followed by at most 11 lower-case letters or digits"})
	}
	for _, r := range []struct {
		field string
		v, lo int
		hi    int
		unit  string
	}{
		{"spec.mtu", c.MTU, epairv1.MinMTU, epairv1.MaxMTU, "bytes"},
		{"spec.batchSize", c.BatchSize, epairv1.MinBatchSize, epairv1.MaxBatchSize, "frames"},
		{"spec.maxPorts", c.MaxPorts, epairv1.MinMaxPorts, epairv1.MaxMaxPorts, "ports"},
		{"spec.defaultQueue.length", c.DefaultQueue.Length, epairv1.MinQueueLength, epairv1.MaxQueueLength, "packets"},
	} {
		if (r.v < r.lo || r.v > r.hi) && !(r.field == "spec.mtu" && r.v == 0) {
			return SwitchConfig{}, fmt.Errorf("convert virtualswitch %s: %w", vs.Name,
				&FieldError{r.field, strconv.Itoa(r.v), fmt.Sprintf("%d..%d %s", r.lo, r.hi, r.unit)})
		}
	}
	if c.FDBSize < epairv1.MinFDBSize || c.FDBSize > epairv1.MaxFDBSize || c.FDBSize&(c.FDBSize-1) != 0 {
		return SwitchConfig{}, fmt.Errorf("convert virtualswitch %s: %w", vs.Name,
			&FieldError{"spec.fdb.size", strconv.Itoa(c.FDBSize), "a power of two in [16, 1048576]"})
	}
	if c.FDBAging != 0 && (c.FDBAging < time.Second || c.FDBAging > 24*time.Hour) {
		return SwitchConfig{}, fmt.Errorf("convert virtualswitch %s: %w", vs.Name,
			&FieldError{"spec.fdb.aging", c.FDBAging.String(), "0s (off) or between 1s and 24h"})
	}
	if err := checkDiscipline("spec.defaultQueue.discipline", c.DefaultQueue.Discipline); err != nil {
		return SwitchConfig{}, fmt.Errorf("convert virtualswitch %s: %w", vs.Name, err)
	}
	rate, err := quantity("spec.defaultQueue.rate", s.DefaultQueue.Rate, 0, maxRateBPS, "0 (unlimited) to 400G bits/s")
	if err != nil {
		return SwitchConfig{}, fmt.Errorf("convert virtualswitch %s: %w", vs.Name, err)
	}
	c.DefaultQueue.RateBPS = rate
	ps := s.PortSecurity
	c.PortSecurity = PortSecurityConfig{AntiSpoofing: ps.AntiSpoofing == nil || *ps.AntiSpoofing,
		BroadcastRate: DefaultBroadcastRate, MulticastRate: DefaultMulticastRate}
	for _, r := range []struct {
		field string
		v     *int64
		to    *int64
	}{
		{"spec.portSecurity.broadcastRate", ps.BroadcastRate, &c.PortSecurity.BroadcastRate},
		{"spec.portSecurity.multicastRate", ps.MulticastRate, &c.PortSecurity.MulticastRate},
	} {
		if err := stormRate(r.field, r.v); err != nil {
			return SwitchConfig{}, fmt.Errorf("convert virtualswitch %s: %w", vs.Name, err)
		}
		if r.v != nil {
			*r.to = *r.v
		}
	}
	if c.PodCIDRs, err = podCIDRs(s.PodCIDRs); err != nil {
		return SwitchConfig{}, fmt.Errorf("convert virtualswitch %s: %w", vs.Name, err)
	}
	return c, nil
}

// maxPodCIDRs: one IPv4 and one IPv6 range.
const maxPodCIDRs = 2

// podCIDRs parses a VirtualSwitch's spec.podCIDRs: each a CIDR in canonical
// form (no host bits set; no IPv4-mapped IPv6 address, as the schema's
// isCIDR), at most one per address family. Nil or empty is nil.
func podCIDRs(in []string) ([]netip.Prefix, error) {
	if len(in) == 0 {
		return nil, nil
	}
	if len(in) > maxPodCIDRs {
		return nil, &FieldError{"spec.podCIDRs", strings.Join(in, ","), "at most one IPv4 and one IPv6 CIDR"}
	}
	out := make([]netip.Prefix, 0, len(in))
	for i, s := range in {
		field := fmt.Sprintf("spec.podCIDRs[%d]", i)
		p, err := netip.ParsePrefix(s)
		if err != nil || p.Addr().Is4In6() {
			return nil, &FieldError{field, s, "an IPv4 or IPv6 CIDR such as 10.100.0.0/24 or fd00:100::/64"}
		}
		if p.Masked() != p {
			return nil, &FieldError{field, s, fmt.Sprintf("a canonical CIDR, no bits set after the prefix length (%s)", p.Masked())}
		}
		for j, q := range out {
			if q.Addr().Is4() == p.Addr().Is4() {
				return nil, &FieldError{field, s, fmt.Sprintf("at most one %s CIDR (spec.podCIDRs[%d] is %s)", family(p), j, q)}
			}
		}
		out = append(out, p)
	}
	return out, nil
}

func family(p netip.Prefix) string {
	if p.Addr().Is4() {
		return "IPv4"
	}
	return "IPv6"
}

// stormRate checks a storm control limit (nil: not set).
func stormRate(field string, v *int64) error {
	if v != nil && (*v < 0 || *v > maxStormRate) {
		return &FieldError{field, strconv.FormatInt(*v, 10), fmt.Sprintf("0 (no limit) to %d frames/s", maxStormRate)}
	}
	return nil
}

// PolicyConfigFromSpec resolves a PortPolicy into a PolicyConfig.
func PolicyConfigFromSpec(pp *epairv1.PortPolicy) (PolicyConfig, error) {
	s := pp.Spec
	c := PolicyConfig{
		Policy:        pp.Namespace + "/" + pp.Name,
		Priority:      s.PriorityClass.Band(),
		Discipline:    s.Discipline,
		AntiSpoofing:  s.AntiSpoofing,
		BroadcastRate: s.BroadcastRate,
		MulticastRate: s.MulticastRate,
	}
	wrap := func(err error) error { return fmt.Errorf("convert portpolicy %s: %w", c.Policy, err) }
	if err := stormRate("spec.broadcastRate", s.BroadcastRate); err != nil {
		return PolicyConfig{}, wrap(err)
	}
	if err := stormRate("spec.multicastRate", s.MulticastRate); err != nil {
		return PolicyConfig{}, wrap(err)
	}
	if c.Priority < 0 {
		return PolicyConfig{}, wrap(&FieldError{"spec.priorityClass", string(s.PriorityClass), "critical, high, normal or low"})
	}
	if s.Discipline != "" {
		if err := checkDiscipline("spec.discipline", s.Discipline); err != nil {
			return PolicyConfig{}, wrap(err)
		}
	}
	var err error
	if c.RateBPS, err = quantity("spec.rate", s.Rate, 1, maxRateBPS, "1 to 400G bits/s"); err != nil {
		return PolicyConfig{}, wrap(err)
	}
	if c.BurstBytes, err = quantity("spec.burst", s.Burst, minBurstBytes, maxBurstBytes, "1500 to 1Gi bytes"); err != nil {
		return PolicyConfig{}, wrap(err)
	}
	if c.BurstBytes != 0 && c.RateBPS == 0 {
		return PolicyConfig{}, wrap(&FieldError{"spec.burst", s.Burst.String(), "burst only together with rate"})
	}
	if c.RateBPS != 0 && c.BurstBytes == 0 {
		c.BurstBytes = max(c.RateBPS/8/100, minDefaultBurst) // 10 ms at rate
	}
	if s.PacketRate != nil {
		if *s.PacketRate < 1 || *s.PacketRate > 100_000_000 {
			return PolicyConfig{}, wrap(&FieldError{"spec.packetRate", strconv.FormatInt(*s.PacketRate, 10), "1 to 100000000 packets/s"})
		}
		c.PacketRate = *s.PacketRate
	}
	if s.PacketBurst != nil {
		if *s.PacketBurst < 1 || *s.PacketBurst > 1_000_000 {
			return PolicyConfig{}, wrap(&FieldError{"spec.packetBurst", strconv.FormatInt(*s.PacketBurst, 10), "1 to 1000000 packets"})
		}
		if c.PacketRate == 0 {
			return PolicyConfig{}, wrap(&FieldError{"spec.packetBurst", strconv.FormatInt(*s.PacketBurst, 10), "packetBurst only together with packetRate"})
		}
		c.PacketBurst = *s.PacketBurst
	} else if c.PacketRate != 0 {
		c.PacketBurst = max(c.PacketRate/100, 1)
	}
	if s.QueueLength != nil {
		if *s.QueueLength < epairv1.MinQueueLength || *s.QueueLength > epairv1.MaxQueueLength {
			return PolicyConfig{}, wrap(&FieldError{"spec.queueLength", strconv.Itoa(int(*s.QueueLength)), "1 to 65536 packets"})
		}
		c.QueueLength = int(*s.QueueLength)
	}
	if m := s.Mirror; m != nil {
		if m.Monitor == "" {
			return PolicyConfig{}, wrap(&FieldError{"spec.mirror.monitor", "", "the name of a monitor port"})
		}
		mc := &MirrorConfig{Monitor: m.Monitor}
		switch m.Direction {
		case epairv1.MirrorRX:
			mc.RX = true
		case epairv1.MirrorTX:
			mc.TX = true
		case epairv1.MirrorBoth, "":
			mc.RX, mc.TX = true, true
		default:
			return PolicyConfig{}, wrap(&FieldError{"spec.mirror.direction", string(m.Direction), "rx, tx or both"})
		}
		c.Mirror = mc
	}
	return c, nil
}

func checkDiscipline(field string, d epairv1.Discipline) error {
	switch d {
	case epairv1.DisciplineClassic, epairv1.DisciplinePrioClass, epairv1.DisciplineFair:
		return nil
	}
	return &FieldError{field, string(d), "classic, prioclass or fair"}
}

// quantity converts q to an integer in [lo, hi], rounding a fraction up; nil
// is 0 (absent).
func quantity(field string, q *resource.Quantity, lo, hi int64, allowed string) (int64, error) {
	if q == nil {
		return 0, nil
	}
	v, ok := q.AsInt64()
	if !ok {
		// Fractional or huge: round up, then range-check.
		f := q.AsApproximateFloat64()
		if f > float64(hi) || f < 0 {
			return 0, &FieldError{field, q.String(), allowed}
		}
		v = int64(f + 0.999999)
	}
	if v < lo || v > hi {
		return 0, &FieldError{field, q.String(), allowed}
	}
	return v, nil
}

func orDefault(v, d int) int {
	if v == 0 {
		return d
	}
	return v
}
