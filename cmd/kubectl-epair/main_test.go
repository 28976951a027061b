package main

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// TestAgentOn finds the running agent of a node among the agents of other nodes and a
// pod of the node that is no agent, and says which node has none.
func TestAgentOn(t *testing.T) {
	agent := func(name, node string, phase corev1.PodPhase, labels map[string]string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "epair-system", Labels: labels},
			Spec: corev1.PodSpec{NodeName: node}, Status: corev1.PodStatus{Phase: phase}}
	}
	l := map[string]string{"app.kubernetes.io/component": "agent", "app.kubernetes.io/name": "epair"}
	cs := fake.NewClientset(
		agent("epair-agent-a", "n1", corev1.PodRunning, l),
		agent("epair-agent-b", "n2", corev1.PodPending, l),
		agent("epair-agent-c", "n2", corev1.PodRunning, l),
		agent("other", "n2", corev1.PodRunning, map[string]string{"app": "x"}),
	)
	o := options{agentNS: "epair-system", selector: "app.kubernetes.io/component=agent,app.kubernetes.io/name=epair"}
	p, err := agentOn(context.Background(), cs, o, "n2")
	if err != nil || p.Name != "epair-agent-c" {
		t.Fatalf("agent of n2: %v, %v; want epair-agent-c", p, err)
	}
	if _, err := agentOn(context.Background(), cs, o, "n3"); err == nil || !strings.Contains(err.Error(), "no running epair agent on node n3") {
		t.Fatalf("agent of n3: %v", err)
	}
}

func TestSplitArgs(t *testing.T) {
	for _, c := range []struct {
		in     string
		want   string
		wantNS string
	}{
		{"capture -n ns web -t 4s", "capture web -t 4s", "ns"},
		{"capture -t 4s --namespace=ns web:net1 -d rx", "capture web:net1 -t 4s -d rx", "ns"},
		{"capture ns/web -c 10", "capture ns/web -c 10", "def"},
		{"ports node1", "ports node1", "def"},
	} {
		got, ns := splitArgs(strings.Fields(c.in), "def")
		if strings.Join(got, " ") != c.want || ns != c.wantNS {
			t.Errorf("splitArgs(%q) = %q, %q; want %q, %q", c.in, got, ns, c.want, c.wantNS)
		}
	}
}
