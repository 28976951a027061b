package controller

import (
	"fmt"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	epairv1 "github.com/epair-cni/epair/api/v1alpha1"
)

// BenchmarkSelectPolicy: choosing the policy of one pod among 100 in its
// namespace, the per-pod cost of a PortPolicy change.
func BenchmarkSelectPolicy(b *testing.B) {
	ps := make([]epairv1.PortPolicy, 100)
	for i := range ps {
		ps[i] = epairv1.PortPolicy{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("p%03d", i), CreationTimestamp: metav1.NewTime(time.Unix(int64(i), 0))},
			Spec:       epairv1.PortPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("a%d", i%10)}}},
		}
	}
	labels := map[string]string{"app": "a7", "tier": "web"}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if w, _ := SelectPolicy(ps, labels); w == nil {
			b.Fatal("no winner")
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pods/s")
}

// BenchmarkPolicyConfigFromSpec: converting one PortPolicy.
func BenchmarkPolicyConfigFromSpec(b *testing.B) {
	pp := &epairv1.PortPolicy{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "n"}, Spec: epairv1.PortPolicySpec{
		Rate: ptr(resource.MustParse("100M")), PacketRate: ptr(int64(1000)), QueueLength: ptr(int32(64)),
		PriorityClass: epairv1.PriorityHigh,
	}}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := PolicyConfigFromSpec(pp); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "policies/s")
}
