package dataplane

import (
	"context"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/epair-cni/epair/pkg/linkport"
)

// TestCounterName: a node name is the counter's name after "peer-tx-"/"peer-rx-"; any
// other name (one nft would not take bare, or too long) is hashed after an underscore, so
// that it never meets a node name's counter.
func TestCounterName(t *testing.T) {
	for _, tc := range []struct{ peer, want string }{
		{"node-1.example.com", "peer-tx-node-1.example.com"},
		{"0", "peer-tx-0"},
		{"Node_A", "peer-tx-Node_A"},
	} {
		if got := counterName(tc.peer, "tx"); got != tc.want {
			t.Errorf("counterName(%q) = %q, want %q", tc.peer, got, tc.want)
		}
	}
	seen := map[string]string{}
	for _, peer := range []string{"a b", "-a", "_a", `a"b`, "é", strings.Repeat("n", 201), strings.Repeat("n", 202), "a;b"} {
		got := counterName(peer, "rx")
		if !strings.HasPrefix(got, "peer-rx-_") || len(got) != len("peer-rx-_")+16 {
			t.Errorf("counterName(%q) = %q, want peer-rx-_ and 16 hex digits", peer, got)
		}
		if o, ok := seen[got]; ok {
			t.Errorf("%q and %q share the counter %s", peer, o, got)
		}
		seen[got] = peer
	}
	if got := counterName(strings.Repeat("n", 200), "tx"); got != "peer-tx-"+strings.Repeat("n", 200) {
		t.Errorf("a 200-byte name is hashed: %s", got)
	}
	if got := nftComment(`a"b\c` + "\n" + strings.Repeat("x", 200)); got != "a?b?c?"+strings.Repeat("x", 122) {
		t.Errorf("nftComment = %q", got)
	}
}

func cidrs(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

// TestCounterDiff: with no peers nothing is made; from nothing the script makes the
// table's counters, maps (after the counters their elements name, which nft 1.0 needs),
// elements and chains; from what it wrote, nothing; a peer dropped loses its elements and
// then its counters and nothing else changes; with every peer dropped the hooks go, then
// the maps, then the counters; a CIDR moved between peers is deleted and added again in
// one script.
func TestCounterDiff(t *testing.T) {
	a := Peer{Name: "a", PodCIDRs: cidrs("10.1.0.0/24", "fd00:1::/64")}
	b := Peer{Name: "b", PodCIDRs: cidrs("10.2.0.0/24")}
	pc := &peerCount{m: &masq{table: "epair"}}
	if got := pc.diff(wantCounters(nil)); got != "" {
		t.Errorf("script for no peers on nothing:\n%s", got)
	}
	full := pc.diff(wantCounters([]Peer{a, b}))
	want := []string{
		`add table inet epair { comment "epair pod network masquerade" ; }`,
		`add counter inet epair peer-rx-a { comment "a" ; }`,
		`add counter inet epair peer-rx-b { comment "b" ; }`,
		`add counter inet epair peer-tx-a { comment "a" ; }`,
		`add counter inet epair peer-tx-b { comment "b" ; }`,
		`add map inet epair peers-tx4 { type ipv4_addr : counter ; flags interval ; }`,
		`add map inet epair peers-tx6 { type ipv6_addr : counter ; flags interval ; }`,
		`add map inet epair peers-rx4 { type ipv4_addr : counter ; flags interval ; }`,
		`add map inet epair peers-rx6 { type ipv6_addr : counter ; flags interval ; }`,
		`add element inet epair peers-tx4 { 10.1.0.0/24 : "peer-tx-a", 10.2.0.0/24 : "peer-tx-b" }`,
		`add element inet epair peers-tx6 { fd00:1::/64 : "peer-tx-a" }`,
		`add element inet epair peers-rx4 { 10.1.0.0/24 : "peer-rx-a", 10.2.0.0/24 : "peer-rx-b" }`,
		`add element inet epair peers-rx6 { fd00:1::/64 : "peer-rx-a" }`,
		`add chain inet epair peers-out { type filter hook postrouting priority 0 ; }`,
		`flush chain inet epair peers-out`,
		`add rule inet epair peers-out counter name ip daddr map @peers-tx4`,
		`add rule inet epair peers-out counter name ip6 daddr map @peers-tx6`,
		`add chain inet epair peers-in { type filter hook prerouting priority 0 ; }`,
		`flush chain inet epair peers-in`,
		`add rule inet epair peers-in counter name ip saddr map @peers-rx4`,
		`add rule inet epair peers-in counter name ip6 saddr map @peers-rx6`,
	}
	if got := strings.Split(strings.TrimSpace(full), "\n"); !reflect.DeepEqual(got, want) {
		t.Fatalf("script from nothing:\n%s\nwant:\n%s", full, strings.Join(want, "\n"))
	}
	pc.have = wantCounters([]Peer{a, b})
	if got := pc.diff(wantCounters([]Peer{a, b})); got != "" {
		t.Errorf("script with nothing to change:\n%s", got)
	}
	want = []string{
		`delete element inet epair peers-tx4 { 10.2.0.0/24 }`,
		`delete element inet epair peers-rx4 { 10.2.0.0/24 }`,
		`delete counter inet epair peer-rx-b`,
		`delete counter inet epair peer-tx-b`,
	}
	if got := strings.Split(strings.TrimSpace(pc.diff(wantCounters([]Peer{a}))), "\n"); !reflect.DeepEqual(got, want) {
		t.Errorf("script dropping b:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	want = []string{
		`flush chain inet epair peers-out`,
		`delete chain inet epair peers-out`,
		`flush chain inet epair peers-in`,
		`delete chain inet epair peers-in`,
		`delete map inet epair peers-tx4`,
		`delete map inet epair peers-tx6`,
		`delete map inet epair peers-rx4`,
		`delete map inet epair peers-rx6`,
		`delete counter inet epair peer-rx-a`,
		`delete counter inet epair peer-rx-b`,
		`delete counter inet epair peer-tx-a`,
		`delete counter inet epair peer-tx-b`,
	}
	if got := strings.Split(strings.TrimSpace(pc.diff(wantCounters(nil))), "\n"); !reflect.DeepEqual(got, want) {
		t.Errorf("script dropping every peer:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	b2 := Peer{Name: "b", PodCIDRs: cidrs("10.1.0.0/24", "10.2.0.0/24")}
	a2 := Peer{Name: "a", PodCIDRs: cidrs("fd00:1::/64")}
	want = []string{
		`delete element inet epair peers-tx4 { 10.1.0.0/24 }`,
		`add element inet epair peers-tx4 { 10.1.0.0/24 : "peer-tx-b" }`,
		`delete element inet epair peers-rx4 { 10.1.0.0/24 }`,
		`add element inet epair peers-rx4 { 10.1.0.0/24 : "peer-rx-b" }`,
	}
	if got := strings.Split(strings.TrimSpace(pc.diff(wantCounters([]Peer{a2, b2}))), "\n"); !reflect.DeepEqual(got, want) {
		t.Errorf("script moving 10.1.0.0/24 from a to b:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// nftListing is `nft -j list table inet epair` (nft 1.0.6) with the masquerade chain, the
// peer counters of a (10.1.0.0/24, fd00:1::/64) and b (10.2.0.0/24, written by hand as
// 10.2.0.7/32), a base chain with a rule too many, and a rule of a shape not ours.
const nftListing = `{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}},
{"table": {"family": "inet", "name": "epair", "handle": 1, "comment": "epair pod network masquerade"}},
{"counter": {"family": "inet", "name": "peer-tx-a", "table": "epair", "handle": 3, "comment": "a", "packets": 5, "bytes": 420}},
{"counter": {"family": "inet", "name": "peer-rx-a", "table": "epair", "handle": 4, "comment": "a", "packets": 6, "bytes": 504}},
{"counter": {"family": "inet", "name": "peer-tx-b", "table": "epair", "handle": 5, "comment": "b", "packets": 0, "bytes": 0}},
{"counter": {"family": "inet", "name": "other", "table": "epair", "handle": 6, "packets": 0, "bytes": 0}},
{"map": {"family": "inet", "name": "peers-tx4", "table": "epair", "type": "ipv4_addr", "handle": 7, "map": "counter", "flags": ["interval"],
  "elem": [[{"prefix": {"addr": "10.1.0.0", "len": 24}}, "peer-tx-a"], ["10.2.0.7", "peer-tx-b"]]}},
{"map": {"family": "inet", "name": "peers-tx6", "table": "epair", "type": "ipv6_addr", "handle": 8, "map": "counter", "flags": ["interval"],
  "elem": [[{"prefix": {"addr": "fd00:1::", "len": 64}}, "peer-tx-a"]]}},
{"map": {"family": "inet", "name": "peers-rx4", "table": "epair", "type": "ipv4_addr", "handle": 9, "map": "counter", "flags": ["interval"]}},
{"chain": {"family": "inet", "table": "epair", "name": "postrouting", "handle": 2, "type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"}},
{"chain": {"family": "inet", "table": "epair", "name": "peers-out", "handle": 10, "type": "filter", "hook": "postrouting", "prio": 0, "policy": "accept"}},
{"chain": {"family": "inet", "table": "epair", "name": "peers-in", "handle": 11, "type": "filter", "hook": "prerouting", "prio": 0, "policy": "accept"}},
{"rule": {"family": "inet", "table": "epair", "chain": "postrouting", "handle": 12, "expr": [{"masquerade": null}]}},
{"rule": {"family": "inet", "table": "epair", "chain": "peers-out", "handle": 13, "expr": [{"counter": {"map": {"key": {"payload": {"protocol": "ip", "field": "daddr"}}, "data": "@peers-tx4"}}}]}},
{"rule": {"family": "inet", "table": "epair", "chain": "peers-out", "handle": 14, "expr": [{"counter": {"map": {"key": {"payload": {"protocol": "ip6", "field": "daddr"}}, "data": "@peers-tx6"}}}]}},
{"rule": {"family": "inet", "table": "epair", "chain": "peers-in", "handle": 15, "expr": [{"counter": {"map": {"key": {"payload": {"protocol": "ip", "field": "saddr"}}, "data": "@peers-rx4"}}}]}},
{"rule": {"family": "inet", "table": "epair", "chain": "peers-in", "handle": 16, "expr": [{"counter": {"map": {"key": {"payload": {"protocol": "ip6", "field": "saddr"}}, "data": "@peers-rx6"}}}]}},
{"rule": {"family": "inet", "table": "epair", "chain": "peers-in", "handle": 17, "expr": [{"counter": {"packets": 1, "bytes": 2}}]}},
{"rule": {"family": "inet", "table": "epair", "chain": "postrouting", "handle": 18, "expr": [{"counter": "other"}, {"accept": null}]}}
]}`

// TestCounterSetOf: a listing of the table reads back as the peer counters' part of it
// (other counters, the masquerade chain left out), and the script from it to a and b
// repairs exactly what differs: b's missing counter, the missing map, the element written
// by hand, the base chain with a rule too many.
func TestCounterSetOf(t *testing.T) {
	objs, err := parseNFT([]byte(nftListing))
	if err != nil {
		t.Fatal(err)
	}
	got := counterSetOf(objs)
	want := counterSet{table: true, counters: map[string]string{"peer-tx-a": "", "peer-rx-a": "", "peer-tx-b": ""},
		maps: [4]map[netip.Prefix]string{
			{netip.MustParsePrefix("10.1.0.0/24"): "peer-tx-a", netip.MustParsePrefix("10.2.0.7/32"): "peer-tx-b"},
			{netip.MustParsePrefix("fd00:1::/64"): "peer-tx-a"},
			{},
			nil,
		},
		chains: [2]bool{true, true}, rules: [2]bool{true, false}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("read back\n%+v\nwant\n%+v", got, want)
	}
	pc := &peerCount{m: &masq{table: "epair"}, have: got}
	script := pc.diff(wantCounters([]Peer{{Name: "a", PodCIDRs: cidrs("10.1.0.0/24", "fd00:1::/64")}, {Name: "b", PodCIDRs: cidrs("10.2.0.0/24")}}))
	wantScript := []string{
		`add counter inet epair peer-rx-b { comment "b" ; }`,
		`add map inet epair peers-rx6 { type ipv6_addr : counter ; flags interval ; }`,
		`delete element inet epair peers-tx4 { 10.2.0.7/32 }`,
		`add element inet epair peers-tx4 { 10.2.0.0/24 : "peer-tx-b" }`,
		`add element inet epair peers-rx4 { 10.1.0.0/24 : "peer-rx-a", 10.2.0.0/24 : "peer-rx-b" }`,
		`add element inet epair peers-rx6 { fd00:1::/64 : "peer-rx-a" }`,
		`add chain inet epair peers-in { type filter hook prerouting priority 0 ; }`,
		`flush chain inet epair peers-in`,
		`add rule inet epair peers-in counter name ip saddr map @peers-rx4`,
		`add rule inet epair peers-in counter name ip6 saddr map @peers-rx6`,
	}
	if got := strings.Split(strings.TrimSpace(script), "\n"); !reflect.DeepEqual(got, wantScript) {
		t.Errorf("repair script:\n%s\nwant:\n%s", script, strings.Join(wantScript, "\n"))
	}
}

// TestPeerCountersResync: the peer counters in a real table (peers need not be reachable
// to be counted): an unchanged resync writes nothing (the counters' and rules' handles
// stay); a table deleted by hand makes the peers uncounted until the next resync, which
// rebuilds it; a map flushed by hand is refilled by the resync after counterReverify; a
// peer's CIDR change moves its elements and keeps its counters; 1000 peers program in one
// transaction; with no peers the counters, maps and hooks go, the masquerade chain stays.
func TestPeerCountersResync(t *testing.T) {
	requireTool(t, "nft")
	p1 := Peer{Name: "n1", Addresses: []netip.Addr{netip.MustParseAddr("203.0.113.1")}, PodCIDRs: cidrs("10.91.0.0/24", "fd00:91::/64")}
	p2 := Peer{Name: "n2", Addresses: []netip.Addr{netip.MustParseAddr("203.0.113.2")}, PodCIDRs: cidrs("10.92.0.0/24")}
	e := newEnv(t, 0, linkport.Auto, func(c *Config) { c.Masquerade, c.NFTTable, c.Peers = true, "epairpc", []Peer{p1, p2} })
	resync := func() {
		e.dp.peerMu.Lock()
		defer e.dp.peerMu.Unlock()
		e.dp.resyncPeersLocked()
	}
	list := func() string {
		out, err := e.host.Exec("nft", "-a", "list", "table", "inet", "epairpc")
		if err != nil {
			t.Fatalf("nft list: %v\n%s", err, out)
		}
		return out
	}
	counted := func() int {
		n := 0
		for _, p := range e.dp.Peers() {
			if p.Counted {
				n++
			}
		}
		return n
	}
	if n := counted(); n != 2 {
		t.Fatalf("%d peers counted after New, want 2:\n%s", n, list())
	}
	before := list()
	for _, s := range []string{"counter peer-tx-n1", "counter peer-rx-n2", `fd00:91::/64 : "peer-rx-n1"`, "counter name ip daddr map @peers-tx4", "counter name ip6 saddr map @peers-rx6",
		"hook postrouting", "hook prerouting", "masquerade"} {
		if !strings.Contains(before, s) {
			t.Fatalf("table without %q:\n%s", s, before)
		}
	}
	resync()
	if after := list(); after != before {
		t.Fatalf("an unchanged resync rewrote the table:\n%s\nwas:\n%s", after, before)
	}

	// The table deleted by hand: not counted, then rebuilt by a resync.
	if out, err := e.host.Exec("nft", "delete", "table", "inet", "epairpc"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if n := counted(); n != 0 {
		t.Fatalf("%d peers counted without the table", n)
	}
	resync()
	if n := counted(); n != 2 {
		t.Fatalf("%d peers counted after a resync rebuilt the table, want 2:\n%s", n, list())
	}

	// A map flushed by hand: refilled once the resync re-reads the table.
	if out, err := e.host.Exec("nft", "flush", "map", "inet", "epairpc", "peers-tx4"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	resync()
	if strings.Contains(list(), `10.91.0.0/24 : "peer-tx-n1"`) {
		t.Fatal("the resync re-read the table before counterReverify (the test assumes it does not)")
	}
	e.dp.peerMu.Lock()
	e.dp.nft.count.readAt = time.Now().Add(-counterReverify - time.Second)
	e.dp.peerMu.Unlock()
	resync()
	if tbl := list(); !strings.Contains(tbl, `10.91.0.0/24 : "peer-tx-n1"`) || !strings.Contains(tbl, `10.92.0.0/24 : "peer-tx-n2"`) {
		t.Fatalf("peers-tx4 not refilled:\n%s", tbl)
	}

	// A CIDR change: the elements move, the counters stay (same handle).
	handle := func(tbl, counter string) string {
		i := strings.Index(tbl, "counter "+counter+" { # handle ")
		if i < 0 {
			t.Fatalf("no counter %s:\n%s", counter, tbl)
		}
		return strings.Fields(tbl[i:])[5]
	}
	h := handle(list(), "peer-tx-n2")
	p2.PodCIDRs = cidrs("10.93.0.0/24")
	if _, err := e.dp.SetPeers(context.Background(), []Peer{p1, p2}); err != nil {
		t.Fatal(err)
	}
	tbl := list()
	if strings.Contains(tbl, "10.92.0.0/24") || !strings.Contains(tbl, `10.93.0.0/24 : "peer-rx-n2"`) || handle(tbl, "peer-tx-n2") != h {
		t.Fatalf("after n2's CIDR change (counter handle was %s):\n%s", h, tbl)
	}

	// 1000 peers, then none.
	var peers []Peer
	for i := range 1000 {
		peers = append(peers, Peer{Name: fmt.Sprintf("node-%d", i), Addresses: []netip.Addr{netip.MustParseAddr("203.0.113.9")},
			PodCIDRs: cidrs(fmt.Sprintf("10.%d.%d.0/24", 128+i/256, i%256))})
	}
	t0 := time.Now()
	if _, err := e.dp.SetPeers(context.Background(), peers); err != nil {
		t.Fatal(err)
	}
	t.Logf("SetPeers with 1000 peers (counters included): %v", time.Since(t0))
	if n := counted(); n != 1000 {
		t.Fatalf("%d of 1000 peers counted", n)
	}
	if _, err := e.dp.SetPeers(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if tbl := list(); strings.Contains(tbl, "counter peer-") || strings.Contains(tbl, "peers-") || !strings.Contains(tbl, "masquerade") {
		t.Fatalf("with no peers, peer counters, maps or hooks left (or the masquerade chain gone):\n%s", tbl)
	}
}
