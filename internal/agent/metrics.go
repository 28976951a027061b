package agent

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

const (
	opAllocate = iota
	opAttach
	opRelease
	opCheck
	opList
	opGC
	opStatus
	numOps
)

var opNames = [numOps]string{"allocate", "attach", "release", "check", "list", "gc", "status"}

// timedOps are the calls that change state; their latency is a histogram.
var timedOps = [...]int{opAllocate, opAttach, opRelease}

// metrics are the agent's own counters (atomics, read by the collector at scrape time) and
// its latency histograms; the dataplane's counters come from its Switches snapshot.
type metrics struct {
	calls     [numOps]atomic.Uint64
	allocated atomic.Uint64
	released  atomic.Uint64

	latOnce sync.Once
	lat     *prometheus.HistogramVec

	regOnce sync.Once
	reg     *prometheus.Registry
	handler http.Handler
}

// latBuckets are the latency histogram's upper bounds in seconds.
var latBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5}

// latency returns the API latency histograms, creating them (with a zero series for every
// timed call) on first use.
func (m *metrics) latency() *prometheus.HistogramVec {
	m.latOnce.Do(func() {
		m.lat = prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "epair_agent_api_duration_seconds",
			Help:    "Latency of the agent API calls that change state.",
			Buckets: latBuckets,
		}, []string{"op"})
		for _, op := range timedOps {
			m.lat.WithLabelValues(opNames[op])
		}
	})
	return m.lat
}

func (m *metrics) observe(op int, d time.Duration) {
	m.latency().WithLabelValues(opNames[op]).Observe(d.Seconds())
}

// registry returns the agent's private registry: the agent/dataplane collector, the
// latency histograms and the Go and process collectors. Nothing is registered globally.
func (a *Agent) registry() *prometheus.Registry {
	m := &a.metrics
	m.regOnce.Do(func() {
		m.reg = prometheus.NewRegistry()
		m.reg.MustRegister(
			newAgentCollector(a),
			m.latency(),
			collectors.NewGoCollector(),
			collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		)
		log := a.log
		if log == nil {
			log = slog.Default()
		}
		m.handler = promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
			ErrorLog:      slogPrintln{log},
			ErrorHandling: promhttp.ContinueOnError,
			Registry:      m.reg,
		})
	})
	return m.reg
}

// MetricsHandler serves the agent's registry in the Prometheus exposition formats. The
// dataplane's counters are read once per scrape, nothing is done per packet.
func (a *Agent) MetricsHandler() http.Handler {
	a.registry()
	return a.metrics.handler
}

// slogPrintln is promhttp's error logger over slog.
type slogPrintln struct{ l *slog.Logger }

func (s slogPrintln) Println(v ...any) {
	s.l.Warn("serve metrics", "error", fmt.Sprint(v...))
}

// scrapeTimeout bounds the dataplane snapshot of one scrape.
const scrapeTimeout = 10 * time.Second

// agentCollector is the one collector of the agent's and the dataplane's counters: it
// reads the atomics and the dataplane's snapshot at scrape time and sends const metrics.
type agentCollector struct {
	a *Agent

	calls, attachments, allocations, releases, ready, switches *prometheus.Desc
	inFrames, inBytes, outFrames, outBytes, dropped, drops     *prometheus.Desc
	portInfo, fastFrames, fastBytes                            *prometheus.Desc
	peerRoutes, peerFrames, peerBytes                          *prometheus.Desc
	tunPackets, tunBytes, tunErrors                            *prometheus.Desc
}

func newAgentCollector(a *Agent) *agentCollector {
	port := []string{"switch", "port"}
	return &agentCollector{
		a:           a,
		calls:       prometheus.NewDesc("epair_agent_api_calls_total", "Agent API calls by operation.", []string{"op"}, nil),
		attachments: prometheus.NewDesc("epair_agent_attachments", "Attachments the agent holds.", nil, nil),
		allocations: prometheus.NewDesc("epair_agent_allocations_total", "Addresses allocated.", nil, nil),
		releases:    prometheus.NewDesc("epair_agent_releases_total", "Attachments released.", nil, nil),
		ready:       prometheus.NewDesc("epair_agent_ready", "1 when the agent is ready to serve, 0 otherwise.", nil, nil),
		switches:    prometheus.NewDesc("epair_switches", "Switches of the node's dataplane.", nil, nil),
		inFrames:    prometheus.NewDesc("epair_port_in_frames_total", "Frames the switch received from the port.", port, nil),
		inBytes:     prometheus.NewDesc("epair_port_in_bytes_total", "Bytes the switch received from the port.", port, nil),
		outFrames:   prometheus.NewDesc("epair_port_out_frames_total", "Frames the switch delivered to the port.", port, nil),
		outBytes:    prometheus.NewDesc("epair_port_out_bytes_total", "Bytes the switch delivered to the port.", port, nil),
		dropped:     prometheus.NewDesc("epair_port_dropped_total", "Frames dropped, charged to the port, for every reason (socket-full included).", port, nil),
		drops: prometheus.NewDesc("epair_port_drops_total", "Frames dropped, charged to the port, by reason "+
			"(socket-full: from the pod, dropped by the kernel before the switch saw them because the port's socket was full).", []string{"switch", "port", "reason"}, nil),
		portInfo: prometheus.NewDesc("epair_port_info", "1 per port, labelled with the socket it runs on now (af_xdp, af_packet, netmap for a pod's application port, "+
			"af_packet_ringless before a background upgrade or where AF_XDP cannot serve the link, tap for the host port).",
			[]string{"switch", "port", "backend"}, nil),
		fastFrames: prometheus.NewDesc("epair_port_fastpath_frames_total", "Frames the kernel fast path (the agent's fastPath) moved from the port's pod (in) "+
			"and to it (out), without the switch: not in epair_port_in_frames_total or epair_port_out_frames_total; a GSO super-frame is one.",
			[]string{"switch", "port", "direction"}, nil),
		fastBytes: prometheus.NewDesc("epair_port_fastpath_bytes_total", "Bytes the kernel fast path moved from the port's pod (in) and to it (out).",
			[]string{"switch", "port", "direction"}, nil),
		peerRoutes: prometheus.NewDesc("epair_peer_routes", "Pod CIDRs of a peer node routed now, labelled with how (routed, vxlan, unreachable).",
			[]string{"peer", "mode"}, nil),
		peerFrames: prometheus.NewDesc("epair_peer_frames_total", "Frames from this node to a peer node's pods (tx) and from them (rx), counted by nftables "+
			"(with masquerading on; a GSO or GRO super-packet is one). Encapsulation errors are not known per peer: see epair_vxlan_errors_total.",
			[]string{"peer", "direction"}, nil),
		peerBytes: prometheus.NewDesc("epair_peer_bytes_total", "IP bytes from this node to a peer node's pods (tx) and from them (rx), counted by nftables "+
			"(with masquerading on; no Ethernet header or tunnel overhead).", []string{"peer", "direction"}, nil),
		tunPackets: prometheus.NewDesc("epair_vxlan_packets_total", "Packets through the VXLAN device to (tx) and from (rx) the VXLAN peers.", []string{"direction"}, nil),
		tunBytes:   prometheus.NewDesc("epair_vxlan_bytes_total", "Bytes through the VXLAN device to (tx) and from (rx) the VXLAN peers.", []string{"direction"}, nil),
		tunErrors: prometheus.NewDesc("epair_vxlan_errors_total", "Packets the VXLAN device could not encapsulate or send (tx) or refused (rx): errors and drops, "+
			"of all VXLAN peers together (the kernel's VXLAN device does not count them per peer).",
			[]string{"direction"}, nil),
	}
}

func (c *agentCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.calls, c.attachments, c.allocations, c.releases, c.ready, c.switches,
		c.inFrames, c.inBytes, c.outFrames, c.outBytes, c.dropped, c.drops, c.portInfo, c.fastFrames, c.fastBytes,
		c.peerRoutes, c.peerFrames, c.peerBytes, c.tunPackets, c.tunBytes, c.tunErrors} {
		ch <- d
	}
}

func (c *agentCollector) Collect(ch chan<- prometheus.Metric) {
	a, m := c.a, &c.a.metrics
	for i := range numOps {
		ch <- prometheus.MustNewConstMetric(c.calls, prometheus.CounterValue, float64(m.calls[i].Load()), opNames[i])
	}
	a.mu.RLock()
	n := len(a.atts)
	a.mu.RUnlock()
	ch <- prometheus.MustNewConstMetric(c.attachments, prometheus.GaugeValue, float64(n))
	ch <- prometheus.MustNewConstMetric(c.allocations, prometheus.CounterValue, float64(m.allocated.Load()))
	ch <- prometheus.MustNewConstMetric(c.releases, prometheus.CounterValue, float64(m.released.Load()))
	ready := 0.0
	if a.ready.Load() {
		ready = 1
	}
	ch <- prometheus.MustNewConstMetric(c.ready, prometheus.GaugeValue, ready)

	for _, p := range a.dp.Peers() {
		ch <- prometheus.MustNewConstMetric(c.peerRoutes, prometheus.GaugeValue, float64(p.Routes), p.Name, p.Mode)
		if !p.Counted {
			continue // no series rather than zeros that would look like no traffic
		}
		for _, d := range []struct {
			dir           string
			frames, bytes uint64
		}{{"tx", p.TxFrames, p.TxBytes}, {"rx", p.RxFrames, p.RxBytes}} {
			ch <- prometheus.MustNewConstMetric(c.peerFrames, prometheus.CounterValue, float64(d.frames), p.Name, d.dir)
			ch <- prometheus.MustNewConstMetric(c.peerBytes, prometheus.CounterValue, float64(d.bytes), p.Name, d.dir)
		}
	}
	if ts, ok := a.dp.TunnelStats(); ok {
		for _, d := range []struct {
			dir                  string
			packets, bytes, errs uint64
		}{{"tx", ts.TxPackets, ts.TxBytes, ts.TxErrors}, {"rx", ts.RxPackets, ts.RxBytes, ts.RxErrors}} {
			ch <- prometheus.MustNewConstMetric(c.tunPackets, prometheus.CounterValue, float64(d.packets), d.dir)
			ch <- prometheus.MustNewConstMetric(c.tunBytes, prometheus.CounterValue, float64(d.bytes), d.dir)
			ch <- prometheus.MustNewConstMetric(c.tunErrors, prometheus.CounterValue, float64(d.errs), d.dir)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	sl, err := a.dp.Switches(ctx)
	if err != nil {
		// The agent's own series are served; the scrape logs the dataplane's error.
		ch <- prometheus.NewInvalidMetric(c.switches, fmt.Errorf("dataplane switches: %w", err))
		return
	}
	ch <- prometheus.MustNewConstMetric(c.switches, prometheus.GaugeValue, float64(len(sl.Items)))
	for _, sw := range sl.Items {
		for _, p := range sw.Ports {
			ch <- prometheus.MustNewConstMetric(c.portInfo, prometheus.GaugeValue, 1, sw.Name, p.Name, p.Backend)
			for _, s := range []struct {
				d *prometheus.Desc
				v uint64
			}{
				{c.inFrames, p.Stats.InFrames}, {c.inBytes, p.Stats.InBytes},
				{c.outFrames, p.Stats.OutFrames}, {c.outBytes, p.Stats.OutBytes},
				{c.dropped, p.Stats.Dropped},
			} {
				ch <- prometheus.MustNewConstMetric(s.d, prometheus.CounterValue, float64(s.v), sw.Name, p.Name)
			}
			for reason, v := range p.Stats.Drops {
				ch <- prometheus.MustNewConstMetric(c.drops, prometheus.CounterValue, float64(v), sw.Name, p.Name, reason)
			}
			if f := p.FastPath; f != nil {
				ch <- prometheus.MustNewConstMetric(c.fastFrames, prometheus.CounterValue, float64(f.InFrames), sw.Name, p.Name, "in")
				ch <- prometheus.MustNewConstMetric(c.fastFrames, prometheus.CounterValue, float64(f.OutFrames), sw.Name, p.Name, "out")
				ch <- prometheus.MustNewConstMetric(c.fastBytes, prometheus.CounterValue, float64(f.InBytes), sw.Name, p.Name, "in")
				ch <- prometheus.MustNewConstMetric(c.fastBytes, prometheus.CounterValue, float64(f.OutBytes), sw.Name, p.Name, "out")
			}
		}
	}
}
