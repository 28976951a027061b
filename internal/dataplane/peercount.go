package dataplane

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"sync/atomic"
	"time"
)

// Per-peer traffic counters live in the dataplane's nftables table (Config.Masquerade),
// beside the masquerade chain:
//
//	counter peer-tx-<peer> { comment "<peer>" }      one per peer and direction
//	counter peer-rx-<peer> { comment "<peer>" }
//	map peers-tx4 { type ipv4_addr : counter; flags interval;
//	                elements = { <pod CIDR> : "peer-tx-<peer>", ... } }
//	map peers-rx4, peers-tx6, peers-rx6                  likewise
//	chain peers-out { type filter hook postrouting priority filter;
//	                  counter name ip daddr map @peers-tx4
//	                  counter name ip6 daddr map @peers-tx6 }
//	chain peers-in  { type filter hook prerouting priority filter;
//	                  counter name ip saddr map @peers-rx4
//	                  counter name ip6 saddr map @peers-rx6 }
//
// A packet leaving the node (postrouting: forwarded from a host port, or the node's own)
// toward a peer's pod CIDR counts on the peer's tx counter, one arriving (prerouting) from
// a peer's pod CIDR on its rx counter: one map lookup per packet and family, whatever the
// number of peers, in both peer modes (a VXLAN peer's packets are counted before
// encapsulation and after decapsulation, by their inner addresses; the outer UDP packets
// are between node addresses and match no pod CIDR). With no peers there is none of it,
// no hook either.
//
// Named counters in a map (not a rule per CIDR, nor a chain per peer behind a verdict map)
// because they are the cheapest to write and to read back: 1000 new peers are one
// transaction of about 0.1 s and `nft -j list counters` reads them in about 50 ms.
// knftables v0.0.18 has no counter objects (nor a way to read a rule's counter), so the
// transactions here are nft scripts of their own (`nft -f -`), run as knftables runs its
// own: the nft binary in the dataplane's namespace, one atomic batch.
//
// The counters count what netfilter sees: a GSO or GRO super-packet is one frame, and
// the bytes are IP bytes (no Ethernet header, no tunnel overhead).

// Names in the table.
const (
	peerOutChain  = "peers-out"
	peerInChain   = "peers-in"
	counterPrefix = "peer-"
	// counterReverify: a resync re-reads the table at least this often even when it
	// programmed it itself (something else may have flushed it).
	counterReverify = 30 * time.Second
	// counterTimeout bounds one nft command.
	counterTimeout = 30 * time.Second
)

// peerMap is one of the four maps: its name, what the rule that looks it up matches, its
// key type, the counters' direction, and its family.
type peerMap struct {
	name, match, typ, dir string
	v6                    bool
}

// peerMaps are the four maps, by direction and family.
var peerMaps = [4]peerMap{
	{"peers-tx4", "ip daddr", "ipv4_addr", "tx", false},
	{"peers-tx6", "ip6 daddr", "ipv6_addr", "tx", true},
	{"peers-rx4", "ip saddr", "ipv4_addr", "rx", false},
	{"peers-rx6", "ip6 saddr", "ipv6_addr", "rx", true},
}

// peerChains are the two base chains, their hooks and the maps their rules look up.
var peerChains = [2]struct {
	name, hook string
	maps       []int // indexes into peerMaps
}{
	{peerOutChain, "postrouting", []int{0, 1}},
	{peerInChain, "prerouting", []int{2, 3}},
}

// PeerCounters are what crossed between this node and a peer's pods (PeerState):
// frames and bytes sent to the peer's pod CIDRs (Tx, counted as they leave the node) and
// received from them (Rx, counted as they arrive).
type PeerCounters struct {
	TxFrames, TxBytes uint64
	RxFrames, RxBytes uint64
}

// counterName is the nftables counter of peer's traffic in dir ("tx" or "rx"): the
// peer's name when it is one nft takes as it is (a Kubernetes node name is), else a hash of
// it after an underscore (which no such name starts with).
func counterName(peer, dir string) string {
	if plainName(peer) {
		return counterPrefix + dir + "-" + peer
	}
	h := sha256.Sum256([]byte(peer))
	return counterPrefix + dir + "-_" + hex.EncodeToString(h[:8])
}

// plainName reports whether s can follow "peer-tx-" in an nft identifier: letters, digits,
// '.', '-' and '_', starting with a letter or digit, short enough for a 255-byte name.
func plainName(s string) bool {
	if len(s) == 0 || len(s) > 200 {
		return false
	}
	for i, c := range []byte(s) {
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || c != '.' && c != '-' && c != '_') {
			return false
		}
	}
	return true
}

// nftComment is s as an nft comment: printable ASCII without quotes or backslashes, at
// most 128 bytes (nft's limit).
func nftComment(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			b[i] = '?'
		}
	}
	return string(b[:min(len(b), 128)])
}

// counterSet is the peer counters' part of the table: what a resync wants, or what the
// table holds.
type counterSet struct {
	table    bool                       // the table exists
	counters map[string]string          // counter name → comment (the peer's name)
	maps     [4]map[netip.Prefix]string // by peerMaps; nil: no such map
	chains   [2]bool                    // by peerChains: the base chain exists
	rules    [2]bool                    // by peerChains: ... with its rules, only
}

// wantCounters is the counter set for peers: with no peers, nothing (no hook either, so
// that a node without peers pays nothing per packet).
func wantCounters(peers []Peer) counterSet {
	w := counterSet{counters: map[string]string{}}
	if len(peers) == 0 {
		return w
	}
	w.table, w.chains, w.rules = true, [2]bool{true, true}, [2]bool{true, true}
	for i := range w.maps {
		w.maps[i] = map[netip.Prefix]string{}
	}
	for _, p := range peers {
		names := map[string]string{"tx": counterName(p.Name, "tx"), "rx": counterName(p.Name, "rx")}
		comment := nftComment(p.Name)
		for i, m := range peerMaps {
			w.counters[names[m.dir]] = comment
			for _, c := range p.PodCIDRs {
				if c.Addr().Is6() == m.v6 {
					w.maps[i][c] = names[m.dir]
				}
			}
		}
	}
	return w
}

// peerCount keeps the peer counters of a masq's table in step with the peers. Its
// resync (sync, under the Dataplane's peerMu) writes only differences from what it knows
// the table holds: what it wrote last, or read when it knows nothing (at start, after a
// failed write, every counterReverify, or when a read of the counters missed one).
type peerCount struct {
	m      *masq
	have   counterSet
	known  bool
	readAt time.Time
	// stale is set by a counter read that did not find a counter the peers want.
	stale atomic.Bool
}

// sync makes the table's counters, maps and chains those of peers. peerMu held.
func (pc *peerCount) sync(ctx context.Context, peers []Peer) error {
	ctx, cancel := context.WithTimeout(ctx, counterTimeout)
	defer cancel()
	stale := pc.stale.Swap(false)
	if !pc.known || stale || time.Since(pc.readAt) > counterReverify {
		have, err := pc.read(ctx)
		if err != nil {
			pc.known = false
			return fmt.Errorf("peer counters: %w", err)
		}
		pc.have, pc.known, pc.readAt = have, true, time.Now()
	}
	want := wantCounters(peers)
	script := pc.diff(want)
	if script == "" {
		return nil
	}
	if _, err := pc.nft(ctx, script, "-f", "-"); err != nil {
		pc.known = false
		return fmt.Errorf("peer counters: %w", err)
	}
	pc.have = want
	return nil
}

// diff is the nft script that takes the table from pc.have to want ("" when nothing
// differs). The order matters: nft 1.0 fails a batch that creates an interval map
// before the objects its elements name, a rule needs its map, and a map or counter can
// go only once no rule or element names it.
func (pc *peerCount) diff(want counterSet) string {
	have, t := pc.have, "inet "+pc.m.table
	var b strings.Builder
	if want.table && !have.table {
		fmt.Fprintf(&b, "add table %s { comment %q ; }\n", t, tableComment)
	}
	for _, name := range missing(want.counters, have.counters) {
		fmt.Fprintf(&b, "add counter %s %s { comment %q ; }\n", t, name, want.counters[name])
	}
	for i, m := range peerMaps {
		if want.maps[i] != nil && have.maps[i] == nil {
			fmt.Fprintf(&b, "add map %s %s { type %s : counter ; flags interval ; }\n", t, m.name, m.typ)
		}
	}
	for i, m := range peerMaps {
		if want.maps[i] == nil {
			continue // the map goes whole
		}
		var del, add []string
		for _, c := range changed(have.maps[i], want.maps[i]) {
			del = append(del, c.String())
		}
		for _, c := range changed(want.maps[i], have.maps[i]) {
			add = append(add, fmt.Sprintf("%s : %q", c, want.maps[i][c]))
		}
		if len(del) > 0 {
			fmt.Fprintf(&b, "delete element %s %s { %s }\n", t, m.name, strings.Join(del, ", "))
		}
		if len(add) > 0 {
			fmt.Fprintf(&b, "add element %s %s { %s }\n", t, m.name, strings.Join(add, ", "))
		}
	}
	for j, ch := range peerChains {
		switch {
		case want.chains[j] && !have.rules[j]:
			fmt.Fprintf(&b, "add chain %s %s { type filter hook %s priority 0 ; }\n", t, ch.name, ch.hook)
			fmt.Fprintf(&b, "flush chain %s %s\n", t, ch.name)
			for _, i := range ch.maps {
				fmt.Fprintf(&b, "add rule %s %s counter name %s map @%s\n", t, ch.name, peerMaps[i].match, peerMaps[i].name)
			}
		case !want.chains[j] && have.chains[j]:
			fmt.Fprintf(&b, "flush chain %s %s\ndelete chain %s %s\n", t, ch.name, t, ch.name)
		}
	}
	for i, m := range peerMaps {
		if want.maps[i] == nil && have.maps[i] != nil {
			fmt.Fprintf(&b, "delete map %s %s\n", t, m.name)
		}
	}
	for _, name := range missing(have.counters, want.counters) {
		fmt.Fprintf(&b, "delete counter %s %s\n", t, name)
	}
	return b.String()
}

// missing is the keys of m not in other, sorted.
func missing(m, other map[string]string) []string {
	var out []string
	for k := range m {
		if _, ok := other[k]; !ok {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// changed is the keys of m that other does not map to the same value, sorted.
func changed(m, other map[netip.Prefix]string) []netip.Prefix {
	var out []netip.Prefix
	for k, v := range m {
		if o, ok := other[k]; !ok || o != v {
			out = append(out, k)
		}
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	return out
}

// nftObject is one object of `nft -j list` output; only the fields read here.
type nftObject struct {
	Table   *struct{ Name string } `json:"table"`
	Chain   *struct{ Name string } `json:"chain"`
	Counter *struct {
		Name           string
		Packets, Bytes uint64
	} `json:"counter"`
	Map *struct {
		Name string
		Elem [][2]json.RawMessage `json:"elem"`
	} `json:"map"`
	Rule *struct {
		Chain string
		Expr  []json.RawMessage `json:"expr"` // read by counterMap
	} `json:"rule"`
}

// counterMap is the map a rule's statement takes its counter from ("counter name ip
// daddr map @peers-tx4": {"counter": {"map": {"key": …, "data": "@peers-tx4"}}}), "" for
// any other statement.
func counterMap(expr json.RawMessage) string {
	var x struct {
		Counter struct {
			Map struct{ Data string } `json:"map"`
		} `json:"counter"`
	}
	if json.Unmarshal(expr, &x) != nil { // another shape: not ours
		return ""
	}
	return strings.TrimPrefix(x.Counter.Map.Data, "@")
}

// parseNFT decodes `nft -j list` output.
func parseNFT(out []byte) ([]nftObject, error) {
	var doc struct {
		Nftables []nftObject `json:"nftables"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		return nil, fmt.Errorf("parse nft output: %w", err)
	}
	return doc.Nftables, nil
}

// read returns the peer counters' part of the table as the kernel has it.
func (pc *peerCount) read(ctx context.Context) (counterSet, error) {
	out, err := pc.nft(ctx, "", "-j", "list", "table", "inet", pc.m.table)
	if errors.Is(err, errNFTNotFound) {
		return counterSet{}, nil
	}
	if err != nil {
		return counterSet{}, err
	}
	objs, err := parseNFT(out)
	if err != nil {
		return counterSet{}, err
	}
	return counterSetOf(objs), nil
}

// counterSetOf is the peer counter set in a listing of the table.
func counterSetOf(objs []nftObject) counterSet {
	s := counterSet{counters: map[string]string{}}
	rules := map[string][]string{} // base chain → the maps its rules look up
	chains := map[string]bool{}
	for _, o := range objs {
		switch {
		case o.Table != nil:
			s.table = true
		case o.Chain != nil:
			chains[o.Chain.Name] = true
		case o.Counter != nil && strings.HasPrefix(o.Counter.Name, counterPrefix):
			s.counters[o.Counter.Name] = ""
		case o.Map != nil:
			i := slices.IndexFunc(peerMaps[:], func(m peerMap) bool { return m.name == o.Map.Name })
			if i < 0 {
				continue
			}
			s.maps[i] = map[netip.Prefix]string{}
			for _, e := range o.Map.Elem {
				c, ok := elemPrefix(e[0])
				var name string
				if ok && json.Unmarshal(e[1], &name) == nil {
					s.maps[i][c] = name
				}
			}
		case o.Rule != nil:
			var ms []string
			for _, x := range o.Rule.Expr {
				if m := counterMap(x); m != "" {
					ms = append(ms, m)
				}
			}
			rules[o.Rule.Chain] = append(rules[o.Rule.Chain], strings.Join(ms, ","))
		}
	}
	for j, ch := range peerChains {
		var want []string
		for _, i := range ch.maps {
			want = append(want, peerMaps[i].name)
		}
		s.chains[j] = chains[ch.name]
		s.rules[j] = chains[ch.name] && slices.Equal(rules[ch.name], want)
	}
	return s
}

// elemPrefix is the key of an interval map element: {"prefix": {"addr", "len"}}, or an
// address alone for a full-length prefix.
func elemPrefix(raw json.RawMessage) (netip.Prefix, bool) {
	var addr string
	if json.Unmarshal(raw, &addr) == nil {
		a, err := netip.ParseAddr(addr)
		if err != nil {
			return netip.Prefix{}, false
		}
		return netip.PrefixFrom(a, a.BitLen()), true
	}
	var p struct {
		Prefix *struct {
			Addr string
			Len  int
		}
	}
	if json.Unmarshal(raw, &p) != nil || p.Prefix == nil {
		return netip.Prefix{}, false
	}
	a, err := netip.ParseAddr(p.Prefix.Addr)
	if err != nil {
		return netip.Prefix{}, false
	}
	c, err := a.Prefix(p.Prefix.Len)
	return c, err == nil && c.Addr() == a
}

// counters reads the peers' counters (by peer name) now. A peer whose counters the
// table does not hold is not in the result, and has the next resync re-read the table.
func (pc *peerCount) counters(ctx context.Context, peers []string) (map[string]PeerCounters, error) {
	ctx, cancel := context.WithTimeout(ctx, counterTimeout)
	defer cancel()
	out, err := pc.nft(ctx, "", "-j", "list", "counters", "table", "inet", pc.m.table)
	if err != nil {
		if errors.Is(err, errNFTNotFound) {
			pc.stale.Store(true)
		}
		return nil, fmt.Errorf("peer counters: %w", err)
	}
	objs, err := parseNFT(out)
	if err != nil {
		return nil, fmt.Errorf("peer counters: %w", err)
	}
	type pb struct{ packets, bytes uint64 }
	byName := map[string]pb{}
	for _, o := range objs {
		if o.Counter != nil {
			byName[o.Counter.Name] = pb{o.Counter.Packets, o.Counter.Bytes}
		}
	}
	res := make(map[string]PeerCounters, len(peers))
	for _, p := range peers {
		tx, okTx := byName[counterName(p, "tx")]
		rx, okRx := byName[counterName(p, "rx")]
		if !okTx || !okRx {
			pc.stale.Store(true)
			continue
		}
		res[p] = PeerCounters{TxFrames: tx.packets, TxBytes: tx.bytes, RxFrames: rx.packets, RxBytes: rx.bytes}
	}
	return res, nil
}

// errNFTNotFound is nft's answer about a table (or object) that does not exist.
var errNFTNotFound = errors.New("not found")

// nft runs the nft binary in the dataplane's namespace with stdin and returns its output.
func (pc *peerCount) nft(ctx context.Context, stdin string, args ...string) ([]byte, error) {
	path, err := exec.LookPath("nft")
	if err != nil {
		return nil, err
	}
	var out []byte
	err = pc.m.d.inNS(func() error {
		cmd := exec.CommandContext(ctx, path, args...)
		cmd.Stdin = strings.NewReader(stdin)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			msg := strings.TrimSpace(stderr.String())
			if strings.Contains(msg, "No such file or directory") {
				err = errors.Join(err, errNFTNotFound)
			}
			return fmt.Errorf("nft %s: %w: %s", strings.Join(args, " "), err, msg)
		}
		out = stdout.Bytes()
		return nil
	})
	return out, err
}
