package agent

import (
	"context"
	"fmt"
	"testing"

	"github.com/epair-cni/epair/pkg/agentapi"
	"github.com/epair-cni/epair/pkg/epair"
)

// BenchmarkAllocateAttachRelease is the agent's share of one pod's ADD and DEL through the
// socket (allocate with an fsync'd IPAM transaction, attach, release), with the dataplane
// double: what the agent itself adds to the CNI latency.
func BenchmarkAllocateAttachRelease(b *testing.B) {
	f := &fixture{t: b, dir: b.TempDir(), links: &memLinks{pairs: map[string]epair.Pair{}}}
	f.cfg = testConfig(f.t, f.dir)
	f.start()
	defer f.stop()
	ctx := context.Background()
	f.a.Recover(ctx)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		k := key(fmt.Sprint("bench-", i))
		if _, err := f.c.Allocate(ctx, &agentapi.AllocateRequest{Key: k, Network: "n"}); err != nil {
			b.Fatal(err)
		}
		p := f.links.add("n/" + k.ContainerID + "/eth0")
		if _, err := f.c.Attach(ctx, &agentapi.AttachRequest{Key: k, HostIfName: p.HostName, HostIfIndex: p.HostIndex, PodMAC: testPodMAC}); err != nil {
			b.Fatal(err)
		}
		if _, err := f.c.Release(ctx, &agentapi.ReleaseRequest{Key: k}); err != nil {
			b.Fatal(err)
		}
		f.links.Destroy(p.HostName)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pods/s")
}
