package controller

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// peerOf returns the named peer of dp's last SetPeers.
func (d *recordingDataplane) peerOf(name string) (PeerConfig, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	i := slices.IndexFunc(d.peers, func(p PeerConfig) bool { return p.Name == name })
	if i < 0 {
		return PeerConfig{}, false
	}
	return d.peers[i], true
}

func peerString(p PeerConfig) string { return fmt.Sprintf("%v %v", p.Addresses, p.PodCIDRs) }

// TestPeersFromNodes: every other Node with a pod CIDR and an InternalIP becomes a peer
// (both families); the node itself and a node without an address do not; a new node, an
// address change and a deletion reach the dataplane within 2 s each.
func TestPeersFromNodes(t *testing.T) {
	needEnvtest(t)
	ctx := context.Background()
	dp := newRecordingDataplane()
	_, self := startController(t, dp, nil, nil, "10.251.0.0/24")
	mk := func(cidrs []string, addrs ...string) *corev1.Node {
		t.Helper()
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: uniq("peer-")}}
		n.Spec.PodCIDRs = cidrs
		if err := testClient.Create(ctx, n); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = testClient.Delete(context.Background(), n) })
		for _, a := range addrs {
			n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: a})
		}
		n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeHostName, Address: n.Name})
		if err := testClient.Status().Update(ctx, n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	want := func(n *corev1.Node, s string) {
		t.Helper()
		took, ok := waitFor(2*time.Second, func() bool {
			p, ok := dp.peerOf(n.Name)
			if s == "" {
				return !ok
			}
			return ok && peerString(p) == s
		})
		if !ok {
			p, _ := dp.peerOf(n.Name)
			t.Fatalf("peer %s is %q after 2 s, want %q; calls %v", n.Name, peerString(p), s, dp.callLog())
		}
		t.Logf("peer %s: %q within %v", n.Name, s, took.Round(time.Millisecond))
	}
	a := mk([]string{"10.251.1.0/24", "fd00:251:1::/64"}, "192.168.50.1", "fd00:50::1")
	b := mk([]string{"10.251.2.0/24"}, "192.168.50.2")
	noAddr := mk([]string{"10.251.3.0/24"})
	want(a, "[192.168.50.1 fd00:50::1] [10.251.1.0/24 fd00:251:1::/64]")
	want(b, "[192.168.50.2] [10.251.2.0/24]")
	if _, ok := dp.peerOf(noAddr.Name); ok {
		t.Fatal("a node without an InternalIP is a peer")
	}
	if _, ok := dp.peerOf(self.Name); ok {
		t.Fatal("the node is its own peer")
	}
	b.Status.Addresses[0].Address = "192.168.60.2"
	if err := testClient.Status().Update(ctx, b); err != nil {
		t.Fatal(err)
	}
	want(b, "[192.168.60.2] [10.251.2.0/24]")
	if err := testClient.Delete(ctx, a); err != nil {
		t.Fatal(err)
	}
	want(a, "")
	want(b, "[192.168.60.2] [10.251.2.0/24]")
}

// TestPeersOf: what a Node list turns into, without an API server.
func TestPeersOf(t *testing.T) {
	node := func(name string, cidrs []string, addrs ...corev1.NodeAddress) corev1.Node {
		return corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.NodeSpec{PodCIDRs: cidrs}, Status: corev1.NodeStatus{Addresses: addrs}}
	}
	ip := func(a string) corev1.NodeAddress { return corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: a} }
	ext := corev1.NodeAddress{Type: corev1.NodeExternalIP, Address: "203.0.113.1"}
	peers, skipped := PeersOf([]corev1.Node{
		node("z", []string{"10.0.2.0/24"}, ext, ip("192.168.0.2"), ip("192.168.0.3")),
		node("self", []string{"10.0.0.0/24"}, ip("192.168.0.1")),
		node("a", []string{"10.0.1.0/24", "fd00:1::/64"}, ip("fd00::1"), ip("192.168.0.4")),
		node("nocidr", nil, ip("192.168.0.5")),
		node("noaddr", []string{"10.0.3.0/24"}, ext),
		node("bad", []string{"10.0.4.0/33"}, ip("192.168.0.6")),
	}, "self")
	var got []string
	for _, p := range peers {
		got = append(got, p.Name+" "+peerString(p))
	}
	w := []string{"a [fd00::1 192.168.0.4] [10.0.1.0/24 fd00:1::/64]", "z [192.168.0.2] [10.0.2.0/24]"}
	if !slices.Equal(got, w) {
		t.Fatalf("peers %q, want %q", got, w)
	}
	if s := strings.Join(skipped, "; "); !strings.Contains(s, "nocidr: no pod CIDR") || !strings.Contains(s, "noaddr: no InternalIP") || !strings.Contains(s, "10.0.4.0/33") {
		t.Fatalf("skipped %q", s)
	}
}
