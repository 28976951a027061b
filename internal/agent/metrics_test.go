package agent

import (
	"context"
	"errors"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/epair-cni/epair/internal/dataplane"
	"github.com/epair-cni/epair/pkg/agentapi"
	"github.com/epair-cni/epair/pkg/vale"
)

// parseMetrics parses a text exposition; a malformed one fails the test.
func parseMetrics(t *testing.T, b []byte) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(string(b)))
	if err != nil {
		t.Fatalf("parse metrics: %v\n%s", err, b)
	}
	return mfs
}

// series finds the family's series whose labels include want; nil if none.
func series(mf *dto.MetricFamily, want map[string]string) *dto.Metric {
	for _, m := range mf.GetMetric() {
		n := 0
		for _, lp := range m.GetLabel() {
			if v, ok := want[lp.GetName()]; ok && v == lp.GetValue() {
				n++
			}
		}
		if n == len(want) {
			return m
		}
	}
	return nil
}

// value is a counter's, a gauge's or (as a count) a histogram's value.
func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	return -1
}

// TestMetrics scrapes /metrics over the agent socket after one pod was added and checks
// every family the agent exports: its type, its labels and the values the calls imply.
func TestMetrics(t *testing.T) {
	f := newFixture(t)
	f.a.Recover(context.Background())
	_, pair := f.add("m", "n")
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (netConn, error) {
		return dialUnix(ctx, f.cfg.Socket)
	}}}
	resp, err := hc.Get("http://agent/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("GET /metrics: %s %q\n%s", resp.Status, resp.Header.Get("Content-Type"), b)
	}
	// The lines other tests and scripts grep for (the client library sorts label names:
	// port before switch).
	for _, want := range []string{`epair_agent_api_calls_total{op="allocate"} 1`, "epair_agent_attachments 1", `epair_port_in_frames_total{port="vale0:`,
		`epair_agent_api_duration_seconds_bucket{op="allocate",le="0.001"}`, `epair_agent_api_duration_seconds_bucket{op="release",le="+Inf"} 0`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("metrics lack %q:\n%s", want, b)
		}
	}
	mfs := parseMetrics(t, b)
	port := map[string]string{"switch": "vale0", "port": "vale0:" + pair.HostName}
	for _, c := range []struct {
		name   string
		typ    dto.MetricType
		labels map[string]string
		want   float64 // -1: any value
	}{
		{"epair_agent_api_calls_total", dto.MetricType_COUNTER, map[string]string{"op": "allocate"}, 1},
		{"epair_agent_api_calls_total", dto.MetricType_COUNTER, map[string]string{"op": "attach"}, 1},
		{"epair_agent_api_calls_total", dto.MetricType_COUNTER, map[string]string{"op": "release"}, 0},
		{"epair_agent_api_calls_total", dto.MetricType_COUNTER, map[string]string{"op": "check"}, 0},
		{"epair_agent_api_calls_total", dto.MetricType_COUNTER, map[string]string{"op": "list"}, -1},
		{"epair_agent_api_calls_total", dto.MetricType_COUNTER, map[string]string{"op": "gc"}, -1},
		{"epair_agent_api_calls_total", dto.MetricType_COUNTER, map[string]string{"op": "status"}, -1},
		{"epair_agent_attachments", dto.MetricType_GAUGE, nil, 1},
		{"epair_agent_allocations_total", dto.MetricType_COUNTER, nil, 1},
		{"epair_agent_releases_total", dto.MetricType_COUNTER, nil, 0},
		{"epair_agent_ready", dto.MetricType_GAUGE, nil, 1},
		{"epair_agent_api_duration_seconds", dto.MetricType_HISTOGRAM, map[string]string{"op": "allocate"}, 1},
		{"epair_agent_api_duration_seconds", dto.MetricType_HISTOGRAM, map[string]string{"op": "attach"}, 1},
		{"epair_agent_api_duration_seconds", dto.MetricType_HISTOGRAM, map[string]string{"op": "release"}, 0},
		{"epair_switches", dto.MetricType_GAUGE, nil, 1},
		{"epair_port_in_frames_total", dto.MetricType_COUNTER, port, 0},
		{"epair_port_in_bytes_total", dto.MetricType_COUNTER, port, 0},
		{"epair_port_out_frames_total", dto.MetricType_COUNTER, port, 0},
		{"epair_port_out_bytes_total", dto.MetricType_COUNTER, port, 0},
		{"epair_port_dropped_total", dto.MetricType_COUNTER, port, 0},
		{"go_goroutines", dto.MetricType_GAUGE, nil, -1},
		{"process_start_time_seconds", dto.MetricType_GAUGE, nil, -1},
	} {
		mf := mfs[c.name]
		if mf == nil {
			t.Errorf("no family %s", c.name)
			continue
		}
		if mf.GetType() != c.typ || mf.GetHelp() == "" {
			t.Errorf("%s: type %v help %q, want type %v and a help text", c.name, mf.GetType(), mf.GetHelp(), c.typ)
		}
		m := series(mf, c.labels)
		if m == nil {
			t.Errorf("%s: no series %v", c.name, c.labels)
			continue
		}
		if got := value(m); c.want >= 0 && got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if mf := mfs["epair_agent_api_duration_seconds"]; mf != nil {
		if len(mf.GetMetric()) != len(timedOps) {
			t.Errorf("latency series: %d, want %d (allocate, attach, release)", len(mf.GetMetric()), len(timedOps))
		}
		for _, m := range mf.GetMetric() {
			// the parser keeps the +Inf bucket
			if h := m.GetHistogram(); len(h.GetBucket()) != len(latBuckets)+1 {
				t.Errorf("latency %v: %d buckets, want %d", m.GetLabel(), len(h.GetBucket()), len(latBuckets)+1)
			}
		}
	}
	if pbs, err := testutil.GatherAndLint(f.a.registry()); err != nil || len(pbs) != 0 {
		t.Errorf("lint: %v %+v", err, pbs)
	}
}

// statsDataplane serves a fixed Switches snapshot (or an error); the rest of Dataplane is
// not used by the collector.
type statsDataplane struct {
	Dataplane
	sl    *agentapi.SwitchList
	err   error
	peers []dataplane.PeerState
}

func (d statsDataplane) Switches(context.Context) (*agentapi.SwitchList, error) { return d.sl, d.err }

func (d statsDataplane) Peers() []dataplane.PeerState { return d.peers }

func (d statsDataplane) TunnelStats() (dataplane.TunnelStats, bool) {
	return dataplane.TunnelStats{}, false
}

// TestMetricsDataplaneCounters: the collector exports the dataplane's port counters and
// drops by reason as they are at scrape time, labelled by switch and port.
func TestMetricsDataplaneCounters(t *testing.T) {
	a := &Agent{dp: statsDataplane{sl: &agentapi.SwitchList{Items: []agentapi.SwitchInfo{
		{Name: "vale0", Ports: []agentapi.PortInfo{
			{Name: "vale0:epair3a", Backend: "af_packet_ringless", Stats: agentapi.Counters{InFrames: 10, InBytes: 1000, OutFrames: 7, OutBytes: 700, Dropped: 3,
				Drops: map[string]uint64{"no-dest": 2, "queue-full": 1}}},
			{Name: "vale0:eth0", Backend: "tap", Stats: agentapi.Counters{InFrames: 1}},
		}},
		{Name: "vale1"},
	}}}}
	a.metrics.calls[opAllocate].Add(2)
	a.metrics.allocated.Add(2)
	a.ready.Store(true)
	want := `
# HELP epair_agent_allocations_total Addresses allocated.
# TYPE epair_agent_allocations_total counter
epair_agent_allocations_total 2
# HELP epair_agent_ready 1 when the agent is ready to serve, 0 otherwise.
# TYPE epair_agent_ready gauge
epair_agent_ready 1
# HELP epair_switches Switches of the node's dataplane.
# TYPE epair_switches gauge
epair_switches 2
# HELP epair_port_in_frames_total Frames the switch received from the port.
# TYPE epair_port_in_frames_total counter
epair_port_in_frames_total{port="vale0:epair3a",switch="vale0"} 10
epair_port_in_frames_total{port="vale0:eth0",switch="vale0"} 1
# HELP epair_port_in_bytes_total Bytes the switch received from the port.
# TYPE epair_port_in_bytes_total counter
epair_port_in_bytes_total{port="vale0:epair3a",switch="vale0"} 1000
epair_port_in_bytes_total{port="vale0:eth0",switch="vale0"} 0
# HELP epair_port_out_frames_total Frames the switch delivered to the port.
# TYPE epair_port_out_frames_total counter
epair_port_out_frames_total{port="vale0:epair3a",switch="vale0"} 7
epair_port_out_frames_total{port="vale0:eth0",switch="vale0"} 0
# HELP epair_port_out_bytes_total Bytes the switch delivered to the port.
# TYPE epair_port_out_bytes_total counter
epair_port_out_bytes_total{port="vale0:epair3a",switch="vale0"} 700
epair_port_out_bytes_total{port="vale0:eth0",switch="vale0"} 0
# HELP epair_port_dropped_total Frames dropped, charged to the port, for every reason (socket-full included).
# TYPE epair_port_dropped_total counter
epair_port_dropped_total{port="vale0:epair3a",switch="vale0"} 3
epair_port_dropped_total{port="vale0:eth0",switch="vale0"} 0
# HELP epair_port_drops_total Frames dropped, charged to the port, by reason (socket-full: from the pod, dropped by the kernel before the switch saw them because the port's socket was full).
# TYPE epair_port_drops_total counter
epair_port_drops_total{port="vale0:epair3a",reason="no-dest",switch="vale0"} 2
epair_port_drops_total{port="vale0:epair3a",reason="queue-full",switch="vale0"} 1
# HELP epair_port_info 1 per port, labelled with the socket it runs on now (af_xdp, af_packet, netmap for a pod's application port, af_packet_ringless before a background upgrade or where AF_XDP cannot serve the link, tap for the host port).
# TYPE epair_port_info gauge
epair_port_info{backend="af_packet_ringless",port="vale0:epair3a",switch="vale0"} 1
epair_port_info{backend="tap",port="vale0:eth0",switch="vale0"} 1
`
	if err := testutil.GatherAndCompare(a.registry(), strings.NewReader(want),
		"epair_agent_allocations_total", "epair_agent_ready", "epair_switches",
		"epair_port_in_frames_total", "epair_port_in_bytes_total", "epair_port_out_frames_total",
		"epair_port_out_bytes_total", "epair_port_dropped_total", "epair_port_drops_total", "epair_port_info"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(newAgentCollector(a), "epair_agent_api_calls_total"); n != numOps {
		t.Errorf("api call series: %d, want %d", n, numOps)
	}
}

// TestMetricsSocketFull: the frames the kernel dropped before the switch saw them
// (dataplane.PortInfo.KernelDrops) are the port's "socket-full" drops in the agent API
// (what valectl prints), NodeState and epair_port_drops_total, and they are in the port's
// total (Dropped, epair_port_dropped_total) like every other reason's; a port without any
// has no socket-full series.
func TestMetricsSocketFull(t *testing.T) {
	var p, quiet dataplane.PortInfo
	p.Name, p.Kind, p.HostIfName = "vale0:epair0a", dataplane.KindPod, "epair0a"
	p.Counters.Drops[vale.DropNoSpace] = 5
	p.Counters.Drops[vale.DropRefused] = 2
	p.Refused[dataplane.RefusedIP] = 2
	p.KernelDrops = 362773
	quiet.Name, quiet.Kind, quiet.HostIfName = "vale0:epair1a", dataplane.KindPod, "epair1a"
	quiet.Counters.Drops[vale.DropNoDest] = 1
	api, apiQuiet := portInfo(p), portInfo(quiet)
	want := map[string]uint64{"queue-full": 5, "spoofed-ip": 2, "socket-full": 362773}
	if !maps.Equal(api.Stats.Drops, want) || api.Stats.Dropped != 362780 {
		t.Fatalf("agent API drops %v (total %d), want %v (total 362780)", api.Stats.Drops, api.Stats.Dropped, want)
	}
	if _, ok := apiQuiet.Stats.Drops["socket-full"]; ok || apiQuiet.Stats.Dropped != 1 {
		t.Fatalf("a port without kernel drops: %v (total %d)", apiQuiet.Stats.Drops, apiQuiet.Stats.Dropped)
	}
	node := map[string]uint64{}
	for _, d := range portState("vale0", api).Drops {
		node[d.Reason] = uint64(d.Packets)
	}
	if !maps.Equal(node, want) {
		t.Fatalf("NodeState drops %v, want the agent API's %v", node, want)
	}
	a := &Agent{dp: statsDataplane{sl: &agentapi.SwitchList{Items: []agentapi.SwitchInfo{{Name: "vale0", Ports: []agentapi.PortInfo{api, apiQuiet}}}}}}
	exp := `
# HELP epair_port_dropped_total Frames dropped, charged to the port, for every reason (socket-full included).
# TYPE epair_port_dropped_total counter
epair_port_dropped_total{port="vale0:epair0a",switch="vale0"} 362780
epair_port_dropped_total{port="vale0:epair1a",switch="vale0"} 1
# HELP epair_port_drops_total Frames dropped, charged to the port, by reason (socket-full: from the pod, dropped by the kernel before the switch saw them because the port's socket was full).
# TYPE epair_port_drops_total counter
epair_port_drops_total{port="vale0:epair0a",reason="queue-full",switch="vale0"} 5
epair_port_drops_total{port="vale0:epair0a",reason="socket-full",switch="vale0"} 362773
epair_port_drops_total{port="vale0:epair0a",reason="spoofed-ip",switch="vale0"} 2
epair_port_drops_total{port="vale0:epair1a",reason="no-destination",switch="vale0"} 1
`
	if err := testutil.GatherAndCompare(a.registry(), strings.NewReader(exp), "epair_port_dropped_total", "epair_port_drops_total"); err != nil {
		t.Error(err)
	}
}

// TestMetricsPeerCounters: a counted peer has its frames and bytes by direction, as the
// dataplane counts them at scrape time, and GET /v1/peers has them too; a peer the
// dataplane does not count (no nftables table) has its routes but no traffic series, not
// zeros, and no counters in the API.
func TestMetricsPeerCounters(t *testing.T) {
	a := &Agent{dp: statsDataplane{sl: &agentapi.SwitchList{}, peers: []dataplane.PeerState{
		{Peer: dataplane.Peer{Name: "n2"}, Mode: "routed", Routes: 1, Counted: true,
			PeerCounters: dataplane.PeerCounters{TxFrames: 5, TxBytes: 5000, RxFrames: 6, RxBytes: 6100}},
		{Peer: dataplane.Peer{Name: "n3"}, Mode: "vxlan", Routes: 2},
	}}}
	want := `
# HELP epair_peer_routes Pod CIDRs of a peer node routed now, labelled with how (routed, vxlan, unreachable).
# TYPE epair_peer_routes gauge
epair_peer_routes{mode="routed",peer="n2"} 1
epair_peer_routes{mode="vxlan",peer="n3"} 2
# HELP epair_peer_frames_total Frames from this node to a peer node's pods (tx) and from them (rx), counted by nftables (with masquerading on; a GSO or GRO super-packet is one). Encapsulation errors are not known per peer: see epair_vxlan_errors_total.
# TYPE epair_peer_frames_total counter
epair_peer_frames_total{direction="rx",peer="n2"} 6
epair_peer_frames_total{direction="tx",peer="n2"} 5
# HELP epair_peer_bytes_total IP bytes from this node to a peer node's pods (tx) and from them (rx), counted by nftables (with masquerading on; no Ethernet header or tunnel overhead).
# TYPE epair_peer_bytes_total counter
epair_peer_bytes_total{direction="rx",peer="n2"} 6100
epair_peer_bytes_total{direction="tx",peer="n2"} 5000
`
	if err := testutil.GatherAndCompare(a.registry(), strings.NewReader(want),
		"epair_peer_routes", "epair_peer_frames_total", "epair_peer_bytes_total"); err != nil {
		t.Error(err)
	}
	if pbs, err := testutil.GatherAndLint(a.registry()); err != nil || len(pbs) != 0 {
		t.Errorf("lint: %v %+v", err, pbs)
	}
	pl, err := a.Peers(context.Background())
	if err != nil || len(pl.Items) != 2 {
		t.Fatalf("peers %+v, %v", pl, err)
	}
	if c := pl.Items[0].Counters; c == nil || *c != (agentapi.PeerCounters{TxFrames: 5, TxBytes: 5000, RxFrames: 6, RxBytes: 6100}) {
		t.Errorf("n2's counters in the API: %+v", c)
	}
	if c := pl.Items[1].Counters; c != nil {
		t.Errorf("n3 (not counted) has counters in the API: %+v", c)
	}
}

// TestMetricsDataplaneError: a failing dataplane snapshot costs only the dataplane's
// series; the agent's own are still served.
func TestMetricsDataplaneError(t *testing.T) {
	a := &Agent{dp: statsDataplane{err: errors.New("dataplane gone")}}
	rec := httptest.NewRecorder()
	a.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d:\n%s", rec.Code, rec.Body)
	}
	mfs := parseMetrics(t, rec.Body.Bytes())
	for _, name := range []string{"epair_agent_api_calls_total", "epair_agent_ready", "epair_agent_api_duration_seconds"} {
		if mfs[name] == nil {
			t.Errorf("no family %s", name)
		}
	}
	if mfs["epair_port_in_frames_total"] != nil || mfs["epair_switches"] != nil {
		t.Errorf("dataplane series served without a snapshot:\n%s", rec.Body)
	}
}
