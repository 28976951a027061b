package ifcore

import (
	"fmt"
	"syscall"
	"time"
)

// Rate is a token-bucket regulator setting. A zero BitsPerSec or PktsPerSec
// leaves that dimension unlimited. Bursts default to 10 ms worth of tokens
// (at least one maximum-size frame, at least one packet).
type Rate struct {
	BitsPerSec uint64
	PktsPerSec uint64
	BurstBytes int
	BurstPkts  int
}

// Validate rejects negative bursts and an all-zero rate.
func (r Rate) Validate() error {
	if r.BurstBytes < 0 || r.BurstPkts < 0 {
		return fmt.Errorf("validate rate: negative burst (bytes %d, packets %d): %w", r.BurstBytes, r.BurstPkts, syscall.EINVAL)
	}
	if r.BitsPerSec == 0 && r.PktsPerSec == 0 {
		return fmt.Errorf("validate rate: neither BitsPerSec nor PktsPerSec is set: %w", syscall.EINVAL)
	}
	return nil
}

// tokenBucket is the regulator (ALTQ's TBR, which the seed drops and the
// project keeps): a packet may leave while both buckets hold a positive
// balance; its cost is then charged, possibly driving a balance negative,
// which keeps the long-run rate exact for any packet size.
type tokenBucket struct {
	bytesPerNs float64
	pktsPerNs  float64
	capBytes   float64
	capPkts    float64
	byteTok    float64
	pktTok     float64
	last       time.Time
}

func newTokenBucket(r Rate, now time.Time) *tokenBucket {
	tb := &tokenBucket{last: now}
	if r.BitsPerSec > 0 {
		tb.bytesPerNs = float64(r.BitsPerSec) / 8 / 1e9
		tb.capBytes = float64(r.BurstBytes)
		if tb.capBytes == 0 {
			tb.capBytes = max(float64(r.BitsPerSec)/8/100, 1514)
		}
		tb.byteTok = tb.capBytes
	}
	if r.PktsPerSec > 0 {
		tb.pktsPerNs = float64(r.PktsPerSec) / 1e9
		tb.capPkts = float64(r.BurstPkts)
		if tb.capPkts == 0 {
			tb.capPkts = max(float64(r.PktsPerSec)/100, 1)
		}
		tb.pktTok = tb.capPkts
	}
	return tb
}

func (tb *tokenBucket) refill(now time.Time) {
	d := now.Sub(tb.last)
	if d <= 0 {
		return
	}
	tb.last = now
	ns := float64(d)
	if tb.bytesPerNs > 0 {
		tb.byteTok = min(tb.byteTok+ns*tb.bytesPerNs, tb.capBytes)
	}
	if tb.pktsPerNs > 0 {
		tb.pktTok = min(tb.pktTok+ns*tb.pktsPerNs, tb.capPkts)
	}
}

// allow reports whether a packet may leave now.
func (tb *tokenBucket) allow(now time.Time) bool {
	tb.refill(now)
	return (tb.bytesPerNs == 0 || tb.byteTok > 0) && (tb.pktsPerNs == 0 || tb.pktTok > 0)
}

func (tb *tokenBucket) charge(p *Packet) { tb.chargeLen(p.Len) }

func (tb *tokenBucket) chargeLen(n int) {
	if tb.bytesPerNs > 0 {
		tb.byteTok -= float64(n)
	}
	if tb.pktsPerNs > 0 {
		tb.pktTok--
	}
}

// wait is how long until allow becomes true (at least 1µs).
func (tb *tokenBucket) wait() time.Duration {
	var d float64
	if tb.bytesPerNs > 0 && tb.byteTok <= 0 {
		d = max(d, (-tb.byteTok+1)/tb.bytesPerNs)
	}
	if tb.pktsPerNs > 0 && tb.pktTok <= 0 {
		d = max(d, (-tb.pktTok+1e-9)/tb.pktsPerNs)
	}
	return max(time.Duration(d)+1, time.Microsecond)
}

// Regulator is the token-bucket regulator for a transmitter outside an
// ifnet's queue (the agent's copy into a netmap application port's receive
// rings): Allow before a packet, Charge its length after, Wait for how long
// to sleep when Allow said no. It is not safe for concurrent use.
type Regulator struct{ tb *tokenBucket }

// NewRegulator makes a regulator for r (Validate it first), full at now.
func NewRegulator(r Rate, now time.Time) *Regulator {
	return &Regulator{tb: newTokenBucket(r, now)}
}

// Allow reports whether a packet may leave now.
func (g *Regulator) Allow(now time.Time) bool { return g.tb.allow(now) }

// Charge takes a packet of n bytes from the buckets.
func (g *Regulator) Charge(n int) { g.tb.chargeLen(n) }

// Wait is how long until Allow can say yes (at least 1µs).
func (g *Regulator) Wait() time.Duration { return g.tb.wait() }
