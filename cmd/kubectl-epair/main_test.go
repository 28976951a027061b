package main

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// TestResolveTo: a trace's -to pod (in the default or its own namespace) becomes its
// address, of -src-ip's family when given; an address or a MAC stays; an unknown pod or one
// without an address is an error naming it.
func TestResolveTo(t *testing.T) {
	pod := func(ns, name string, ips ...string) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}}
		for _, ip := range ips {
			p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: ip})
		}
		return p
	}
	cs := fake.NewClientset(pod("app", "db", "10.0.0.5", "fd00::5"), pod("other", "web", "10.0.1.7"), pod("app", "new"))
	cc := clientcmd.NewDefaultClientConfig(clientcmdapi.Config{}, &clientcmd.ConfigOverrides{})
	for _, c := range []struct{ in, want, err string }{
		{"-to db -p tcp", "-to 10.0.0.5 -p tcp", ""},
		{"-src-ip fd00::9 --to db", "-src-ip fd00::9 --to fd00::5", ""},
		{"-to other/web", "-to 10.0.1.7", ""},
		{"-to 10.9.9.9", "-to 10.9.9.9", ""},
		{"-to ff:ff:ff:ff:ff:ff", "-to ff:ff:ff:ff:ff:ff", ""},
		{"-to nope", "", `pod app/nope`},
		{"-to new", "", "pod app/new has no address yet"},
	} {
		got, err := resolveTo(context.Background(), cs, cc, "app", strings.Fields(c.in))
		switch {
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("%q: %v, want an error with %q", c.in, err, c.err)
		case c.err == "" && (err != nil || strings.Join(got, " ") != c.want):
			t.Errorf("%q: %q, %v; want %q", c.in, got, err, c.want)
		}
	}
}

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
		{"capture web tcp port 80 -c 5", "capture web -c 5 tcp port 80", "def"},
		{"trace -n ns web -to db -p tcp -dport 80", "trace web -to db -p tcp -dport 80", "ns"},
	} {
		got, ns := splitArgs(strings.Fields(c.in), "def")
		if strings.Join(got, " ") != c.want || ns != c.wantNS {
			t.Errorf("splitArgs(%q) = %q, %q; want %q, %q", c.in, got, ns, c.want, c.wantNS)
		}
	}
}
