package agent

import (
	"fmt"
	"io"
	"net/http"
	"sort"
	"sync/atomic"
	"time"
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

// metrics are the agent's own counters; the dataplane's come from its Switches snapshot.
type metrics struct {
	calls [numOps]atomic.Uint64
	// latency histograms of the calls that change state (cumulative buckets)
	lat       [numOps][len(latBuckets) + 1]atomic.Uint64
	latSum    [numOps]atomic.Int64 // nanoseconds
	allocated atomic.Uint64
	released  atomic.Uint64
}

// latBuckets are the latency histogram's upper bounds in seconds.
var latBuckets = [...]float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5}

func (m *metrics) observe(op int, d time.Duration) {
	i := sort.SearchFloat64s(latBuckets[:], d.Seconds())
	m.lat[op][i].Add(1)
	m.latSum[op].Add(int64(d))
}

// MetricsHandler serves the agent's and the dataplane's counters in the Prometheus text
// exposition format (one collector: the snapshot is taken per scrape, nothing per packet).
func (a *Agent) MetricsHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		a.writeMetrics(w, r)
	})
}

func (a *Agent) writeMetrics(w io.Writer, r *http.Request) {
	fmt.Fprintln(w, "# HELP epair_agent_api_calls_total Agent API calls by operation.")
	fmt.Fprintln(w, "# TYPE epair_agent_api_calls_total counter")
	for i := range numOps {
		fmt.Fprintf(w, "epair_agent_api_calls_total{op=%q} %d\n", opNames[i], a.metrics.calls[i].Load())
	}
	fmt.Fprintln(w, "# TYPE epair_agent_attachments gauge")
	a.mu.RLock()
	n := len(a.atts)
	a.mu.RUnlock()
	fmt.Fprintf(w, "epair_agent_attachments %d\n", n)
	fmt.Fprintln(w, "# TYPE epair_agent_allocations_total counter")
	fmt.Fprintf(w, "epair_agent_allocations_total %d\n", a.metrics.allocated.Load())
	fmt.Fprintln(w, "# TYPE epair_agent_releases_total counter")
	fmt.Fprintf(w, "epair_agent_releases_total %d\n", a.metrics.released.Load())
	ready := 0
	if a.ready.Load() {
		ready = 1
	}
	fmt.Fprintln(w, "# TYPE epair_agent_ready gauge")
	fmt.Fprintf(w, "epair_agent_ready %d\n", ready)
	fmt.Fprintln(w, "# HELP epair_agent_api_duration_seconds Latency of the agent API calls that change state.")
	fmt.Fprintln(w, "# TYPE epair_agent_api_duration_seconds histogram")
	for _, op := range []int{opAllocate, opAttach, opRelease} {
		var cum uint64
		for i, le := range latBuckets {
			cum += a.metrics.lat[op][i].Load()
			fmt.Fprintf(w, "epair_agent_api_duration_seconds_bucket{op=%q,le=\"%g\"} %d\n", opNames[op], le, cum)
		}
		cum += a.metrics.lat[op][len(latBuckets)].Load()
		fmt.Fprintf(w, "epair_agent_api_duration_seconds_bucket{op=%q,le=\"+Inf\"} %d\n", opNames[op], cum)
		fmt.Fprintf(w, "epair_agent_api_duration_seconds_sum{op=%q} %g\n", opNames[op], time.Duration(a.metrics.latSum[op].Load()).Seconds())
		fmt.Fprintf(w, "epair_agent_api_duration_seconds_count{op=%q} %d\n", opNames[op], cum)
	}
	sl, err := a.dp.Switches(r.Context())
	if err != nil {
		return
	}
	type series struct{ name, help string }
	for _, s := range []series{
		{"epair_port_in_frames_total", "Frames the switch received from the port."},
		{"epair_port_in_bytes_total", "Bytes the switch received from the port."},
		{"epair_port_out_frames_total", "Frames the switch delivered to the port."},
		{"epair_port_out_bytes_total", "Bytes the switch delivered to the port."},
		{"epair_port_dropped_total", "Frames dropped, charged to the port."},
	} {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s counter\n", s.name, s.help, s.name)
		for _, sw := range sl.Items {
			for _, p := range sw.Ports {
				v := map[string]uint64{
					"epair_port_in_frames_total": p.Stats.InFrames, "epair_port_in_bytes_total": p.Stats.InBytes,
					"epair_port_out_frames_total": p.Stats.OutFrames, "epair_port_out_bytes_total": p.Stats.OutBytes,
					"epair_port_dropped_total": p.Stats.Dropped,
				}[s.name]
				fmt.Fprintf(w, "%s{switch=%q,port=%q} %d\n", s.name, sw.Name, p.Name, v)
			}
		}
	}
	fmt.Fprintln(w, "# TYPE epair_port_drops_total counter")
	for _, sw := range sl.Items {
		for _, p := range sw.Ports {
			reasons := make([]string, 0, len(p.Stats.Drops))
			for k := range p.Stats.Drops {
				reasons = append(reasons, k)
			}
			sort.Strings(reasons)
			for _, k := range reasons {
				fmt.Fprintf(w, "epair_port_drops_total{switch=%q,port=%q,reason=%q} %d\n", sw.Name, p.Name, k, p.Stats.Drops[k])
			}
		}
	}
}
