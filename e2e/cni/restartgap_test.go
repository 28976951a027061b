package cni

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/epair-cni/epair/internal/testutil/netnsutil"
)

// TestRestartGap (issue 16): while the agent is restarted, once after SIGTERM (a graceful
// stop: the pods' links stay, the dataplane and the host port go) and once after SIGKILL,
// pod A sends an ICMP echo request every 10 ms to pod B (through the switch) and to its
// gateway (the switch's host port, answered by the node's stack). The longest interval
// without a reply on each path must be at most the time the agent was down (signal sent to
// the new agent answering Ready) plus 1 s, and the pods' traffic must work afterwards with
// their links untouched. It logs a table of the downtimes and gaps.
func TestRestartGap(t *testing.T) {
	e := newEnv(t, envOpts{})
	l := e.conflist("1.1.0")
	pa, pb := netnsutil.New(t), netnsutil.New(t)
	ra := e.mustAdd(l, rt("gap-a", pa))
	rb := e.mustAdd(l, rt("gap-b", pb))
	ipA, ipB := ra.IPs[0].Address.IP.To4(), rb.IPs[0].Address.IP.To4()
	gw := ra.IPs[0].Gateway.To4()
	if ipA == nil || ipB == nil || gw == nil {
		t.Fatalf("ADD results without IPv4 addresses or gateway: %+v / %+v", ra.IPs, rb.IPs)
	}
	// The gateway is the switch's host port: the first address of the pod's subnet.
	first := ipA.Mask(ra.IPs[0].Address.Mask)
	first[3]++
	if !gw.Equal(first) {
		t.Fatalf("pod A's gateway is %v, want the first address of %v", gw, ra.IPs[0].Address.String())
	}
	for _, c := range [][2]any{{pa, ipB.String()}, {pa, gw.String()}, {pb, ipA.String()}, {pb, gw.String()}} {
		if err := ping(c[0].(*netnsutil.NS), c[1].(string)); err != nil {
			t.Fatalf("before any restart: %v", err)
		}
	}
	idxA, idxB := gapPodIfIndex(t, pa), gapPodIfIndex(t, pb)

	targets := []gapTarget{{"A→B", ipB}, {"A→gateway", gw}}
	pr := startGapProber(t, pa, targets)

	const (
		lead   = time.Second     // probing before the signal
		settle = 2 * time.Second // probing after the agent is ready again
		slack  = time.Second     // the bound: gap <= downtime + slack
	)
	type row struct {
		sig            string
		exit, down     time.Duration
		probe          string
		gap, gapAt     time.Duration // the gap and its start, from the signal
		resume         time.Duration // first reply after the gap, from the agent being ready
		lost, sent     int
		closed, passed bool
	}
	var rows []row
	for _, c := range []struct {
		name string
		kill bool
	}{{"SIGTERM", false}, {"SIGKILL", true}} {
		t.Run(c.name, func(t *testing.T) {
			time.Sleep(lead)
			tSig := time.Now()
			if c.kill {
				e.agent.kill9()
			} else {
				e.agent.stop(false)
			}
			tExit := time.Now()
			e.agent.start()
			tUp := time.Now()
			time.Sleep(settle)
			tEnd := time.Now()
			down := tUp.Sub(tSig)

			for _, tg := range targets {
				s := pr.window(tg.name, tSig.Add(-lead/2), tSig, tEnd)
				if s.before == 0 {
					// A broken path is not a gap of this restart: report it, measure the others.
					t.Errorf("%s: no reply from %v in the %v before the %s (%d sent, %d send errors; the last restart left it broken?)\npod A neighbours:\n%s",
						tg.name, tg.dst, lead/2, c.name, s.sent, s.sendErrs, gapPodNeigh(pa))
					rows = append(rows, row{sig: c.name, exit: tExit.Sub(tSig), down: down, probe: tg.name + " (down before)", lost: s.sent - s.replied, sent: s.sent})
					continue
				}
				r := row{sig: c.name, exit: tExit.Sub(tSig), down: down, probe: tg.name, gap: s.gap,
					gapAt: s.gapFrom.Sub(tSig), lost: s.sent - s.replied, sent: s.sent, closed: !s.open}
				if s.open {
					r.resume = -1
				} else {
					r.resume = s.gapTo.Sub(tUp)
				}
				r.passed = !s.open && s.gap <= down+slack
				rows = append(rows, r)
				switch {
				case s.open:
					t.Errorf("%s restart: no reply on %s (%v) for %v after the agent was ready again (down %v; last reply %v after the signal)\npod A neighbours (the host port has %v):\n%s\nagent log (recovery):\n%s",
						c.name, tg.name, tg.dst, settle, down.Round(time.Millisecond), r.gapAt.Round(time.Millisecond), tapMAC(t, e), gapPodNeigh(pa),
						grepLines(e.agent.logText(), "recover", "announce", "adopt", "ready"))
				case s.gap > down+slack:
					t.Errorf("%s restart: %s (%v) went %v without a reply (from %v after the signal), more than the agent's downtime %v + %v\npod A neighbours (the host port has %v):\n%s\nagent log (recovery):\n%s",
						c.name, tg.name, tg.dst, s.gap.Round(time.Millisecond), r.gapAt.Round(time.Millisecond), down.Round(time.Millisecond), slack,
						tapMAC(t, e), gapPodNeigh(pa), grepLines(e.agent.logText(), "recover", "announce", "adopt", "ready"))
				}
			}

			// The pods' links were not touched, and traffic works both ways and to the gateway.
			if got := gapPodIfIndex(t, pa); got != idxA {
				t.Errorf("after %s: pod A's eth0 is ifindex %d, was %d", c.name, got, idxA)
			}
			if got := gapPodIfIndex(t, pb); got != idxB {
				t.Errorf("after %s: pod B's eth0 is ifindex %d, was %d", c.name, got, idxB)
			}
			if n := len(e.hostEpairs()); n != 2 {
				t.Errorf("after %s: %d host links, want the pods' 2: %v", c.name, n, e.hostEpairs())
			}
			for _, p := range [][2]any{{pa, ipB.String()}, {pa, gw.String()}, {pb, ipA.String()}, {pb, gw.String()}} {
				if err := ping(p[0].(*netnsutil.NS), p[1].(string)); err != nil {
					t.Errorf("after %s: %v", c.name, err)
				}
			}
		})
	}
	pr.stop()

	var b strings.Builder
	fmt.Fprintf(&b, "agent restarts (probe every %v; bound: gap <= downtime + %v)\n", gapInterval, slack)
	fmt.Fprintf(&b, "%-8s %10s %10s  %-10s %10s %12s %14s %11s  %s\n", "signal", "exit", "downtime", "probe", "gap", "gap starts", "replies again", "lost/sent", "ok")
	for _, r := range rows {
		resume := "never"
		if r.closed {
			resume = fmt.Sprintf("%+v", r.resume.Round(time.Millisecond))
		}
		fmt.Fprintf(&b, "%-8s %10v %10v  %-10s %10v %12v %14s %11s  %v\n", r.sig, r.exit.Round(time.Millisecond), r.down.Round(time.Millisecond),
			r.probe, r.gap.Round(time.Millisecond), r.gapAt.Round(time.Millisecond), resume, fmt.Sprintf("%d/%d", r.lost, r.sent), r.passed)
	}
	b.WriteString("exit: signal to the agent's exit; downtime: signal to the new agent Ready; gap starts: last reply before the gap, from the signal; replies again: first reply after the gap, from Ready\n")
	t.Log("\n" + b.String())
	if f := os.Getenv("EPAIR_RESTARTGAP_OUT"); f != "" {
		if err := os.WriteFile(f, []byte(b.String()), 0o644); err != nil {
			t.Errorf("write %s: %v", f, err)
		}
	}
}

// gapPodIfIndex is the ifindex of the pod's eth0.
func gapPodIfIndex(t testing.TB, ns *netnsutil.NS) int {
	t.Helper()
	l, err := ns.NL.LinkByName("eth0")
	if err != nil {
		t.Fatalf("eth0 in %s: %v", ns.Name, err)
	}
	return l.Attrs().Index
}

// gapPodNeigh is `ip neigh` in ns, for failure messages.
func gapPodNeigh(ns *netnsutil.NS) string {
	out, err := ns.Exec("ip", "neigh", "show", "dev", "eth0")
	if err != nil {
		return err.Error()
	}
	return out
}

const gapInterval = 10 * time.Millisecond

// gapTarget is one probed path: ICMP echo from the prober's namespace to dst.
type gapTarget struct {
	name string
	dst  net.IP
}

// gapProber sends an ICMP echo request to each target every gapInterval from a raw socket
// in a pod's namespace and records when each was sent and when its reply arrived.
type gapProber struct {
	conn    *net.IPConn
	targets []gapTarget
	id      uint16
	stopc   chan struct{}
	wg      sync.WaitGroup
	once    sync.Once

	mu       sync.Mutex
	sent     [][]time.Time // per target, by sequence number
	recv     [][]time.Time // per target, the arrival of each reply
	sendErrs []int
}

func startGapProber(t testing.TB, ns *netnsutil.NS, targets []gapTarget) *gapProber {
	t.Helper()
	p := &gapProber{targets: targets, id: uint16(os.Getpid()), stopc: make(chan struct{}),
		sent: make([][]time.Time, len(targets)), recv: make([][]time.Time, len(targets)), sendErrs: make([]int, len(targets))}
	err := ns.Do(func() error {
		c, err := net.ListenPacket("ip4:icmp", "0.0.0.0")
		if err != nil {
			return err
		}
		p.conn = c.(*net.IPConn)
		return nil
	})
	if err != nil {
		t.Fatalf("raw ICMP socket in %s: %v", ns.Name, err)
	}
	p.wg.Add(2)
	go p.send()
	go p.receive()
	t.Cleanup(p.stop)
	return p
}

func (p *gapProber) stop() {
	p.once.Do(func() {
		close(p.stopc)
		p.conn.Close()
		p.wg.Wait()
	})
}

// An echo request's identifier is p.id plus its target's index; its payload the send time.
func (p *gapProber) send() {
	defer p.wg.Done()
	tick := time.NewTicker(gapInterval)
	defer tick.Stop()
	msg := make([]byte, 8+8)
	for seq := 0; ; seq++ {
		for i, tg := range p.targets {
			msg[0], msg[1] = 8, 0 // echo request
			binary.BigEndian.PutUint16(msg[2:], 0)
			binary.BigEndian.PutUint16(msg[4:], p.id+uint16(i))
			binary.BigEndian.PutUint16(msg[6:], uint16(seq))
			now := time.Now()
			binary.BigEndian.PutUint64(msg[8:], uint64(now.UnixNano()))
			binary.BigEndian.PutUint16(msg[2:], csum(msg))
			p.mu.Lock()
			p.sent[i] = append(p.sent[i], now)
			p.mu.Unlock()
			if _, err := p.conn.WriteTo(msg, &net.IPAddr{IP: tg.dst}); err != nil {
				p.mu.Lock()
				p.sendErrs[i]++
				p.mu.Unlock()
			}
		}
		select {
		case <-p.stopc:
			return
		case <-tick.C:
		}
	}
}

func (p *gapProber) receive() {
	defer p.wg.Done()
	buf := make([]byte, 1500)
	for {
		n, from, err := p.conn.ReadFrom(buf) // the IPv4 header is stripped
		if err != nil {
			select {
			case <-p.stopc:
				return
			default:
			}
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			return
		}
		now := time.Now()
		b := buf[:n]
		if n < 16 || b[0] != 0 || b[1] != 0 { // echo reply
			continue
		}
		i := int(binary.BigEndian.Uint16(b[4:]) - p.id)
		if i < 0 || i >= len(p.targets) || !from.(*net.IPAddr).IP.Equal(p.targets[i].dst) {
			continue
		}
		p.mu.Lock()
		p.recv[i] = append(p.recv[i], now)
		p.mu.Unlock()
	}
}

// gapStats is one target's replies in a window.
type gapStats struct {
	sent, replied, sendErrs int
	before                  int           // replies in the window before mark
	gap                     time.Duration // the longest interval without a reply
	gapFrom, gapTo          time.Time     // its ends (gapTo is the window's end if open)
	open                    bool          // no reply after the gap until the window's end
}

// window is the longest interval without a reply from target name in [from, to]: between
// two consecutive replies, or from the last reply to the window's end. It counts the
// replies before mark too.
func (p *gapProber) window(name string, from, mark, to time.Time) gapStats {
	i := slices.IndexFunc(p.targets, func(tg gapTarget) bool { return tg.name == name })
	p.mu.Lock()
	sent := slices.Clone(p.sent[i])
	recv := slices.Clone(p.recv[i])
	errs := p.sendErrs[i]
	p.mu.Unlock()
	var s gapStats
	s.sendErrs = errs
	for _, ts := range sent {
		if !ts.Before(from) && !ts.After(to) {
			s.sent++
		}
	}
	var in []time.Time
	for _, r := range recv {
		if !r.Before(from) && !r.After(to) {
			in = append(in, r)
		}
	}
	slices.SortFunc(in, func(a, b time.Time) int { return a.Compare(b) })
	s.replied = len(in)
	if len(in) == 0 {
		return s
	}
	for _, r := range in {
		if r.Before(mark) {
			s.before++
		}
	}
	s.gapFrom, s.gapTo = in[0], in[0]
	for k := 1; k < len(in); k++ {
		if d := in[k].Sub(in[k-1]); d > s.gap {
			s.gap, s.gapFrom, s.gapTo = d, in[k-1], in[k]
		}
	}
	if d := to.Sub(in[len(in)-1]); d > s.gap {
		s.gap, s.gapFrom, s.gapTo, s.open = d, in[len(in)-1], to, true
	}
	return s
}
