package controller

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	epairv1 "github.com/epair-cni/epair/api/v1alpha1"
)

// TestControllerWorksWithGeneratedRBACOnly runs the whole controller as a user
// bound to nothing but the generated ClusterRole and Role
// (charts/epair/files/rbac/role.yaml, from the markers in controller.go):
// the other envtest tests run as an administrator and would not notice a
// missing permission. Every path that talks to the API server is exercised:
// the node-scoped cache, NodeState create and status update, events, the
// DaemonSet uninstall check.
func TestControllerWorksWithGeneratedRBACOnly(t *testing.T) {
	needEnvtest(t)
	ctx := context.Background()
	dsNS := "epair-system" // the Role's namespace in role.yaml
	if err := testClient.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: dsNS}}); err != nil && !strings.Contains(err.Error(), "already exists") {
		t.Fatal(err)
	}
	user := uniq("epair-agent-")
	raw, err := os.ReadFile(filepath.Join("..", "..", "charts", "epair", "files", "rbac", "role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range strings.Split(string(raw), "\n---\n") {
		var kind struct{ Kind string }
		if yaml.Unmarshal([]byte(doc), &kind) != nil || kind.Kind == "" {
			continue
		}
		subj := []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}}
		switch kind.Kind {
		case "ClusterRole":
			var r rbacv1.ClusterRole
			if err := yaml.Unmarshal([]byte(doc), &r); err != nil {
				t.Fatal(err)
			}
			r.Name = user
			mustCreate(t, &r)
			mustCreate(t, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: user}, Subjects: subj,
				RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: user}})
		case "Role":
			var r rbacv1.Role
			if err := yaml.Unmarshal([]byte(doc), &r); err != nil {
				t.Fatal(err)
			}
			r.Name = user
			mustCreate(t, &r)
			mustCreate(t, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: user, Namespace: r.Namespace}, Subjects: subj,
				RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: user}})
		default:
			t.Fatalf("unexpected %s in role.yaml", kind.Kind)
		}
	}
	au, err := testEnv.AddUser(envtest.User{Name: user}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: user, Namespace: dsNS},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "a"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "a"}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "a", Image: "a"}}},
			},
		},
	}
	mustCreate(t, ds)

	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: uniq("node-")}}
	node.Spec.PodCIDRs = []string{"10.244.20.0/24"}
	mustCreate(t, node)
	vs := &epairv1.VirtualSwitch{ObjectMeta: metav1.ObjectMeta{Name: uniq("valerbac")}}
	mustCreate(t, vs)
	ns := newNamespace(t)
	newPod(t, ns, "p", node.Name, map[string]string{"app": "p"})
	dp := newRecordingDataplane()
	dp.addPort(ns + "/p")
	dir := t.TempDir()
	conf := []byte(`{"cniVersion":"1.0.0","name":"epair","plugins":[{"type":"epair-cni"}]}`)
	c, err := New(au.Config(), Options{
		NodeName: node.Name, Dataplane: dp, StatusInterval: 300 * time.Millisecond,
		CNI:       CNIConfig{Dir: dir, FileName: "10-epair.conflist", ConfList: conf, Switch: vs.Name},
		DaemonSet: types.NamespacedName{Namespace: dsNS, Name: ds.Name},
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Start(runCtx) }()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			if err := <-done; err != nil {
				t.Errorf("controller: %v", err)
			}
		}
	}
	defer stop()

	pp := &epairv1.PortPolicy{ObjectMeta: metav1.ObjectMeta{Name: "rbac", Namespace: ns}, Spec: epairv1.PortPolicySpec{Rate: ptr(resource.MustParse("5M"))}}
	mustCreate(t, pp)
	if _, ok := waitFor(10*time.Second, func() bool {
		_, sw := dp.switchCfg(vs.Name)
		p, pol := dp.policy(ns + "/p")
		return sw && pol && p.RateBPS == 5_000_000 && len(dp.podCIDRs()) == 1
	}); !ok {
		t.Fatalf("reconcilers did not work with the generated RBAC: %v", dp.callLog())
	}
	var st epairv1.NodeState
	if _, ok := waitFor(10*time.Second, func() bool {
		return testClient.Get(ctx, client.ObjectKey{Name: node.Name}, &st) == nil &&
			meta.IsStatusConditionTrue(st.Status.Conditions, epairv1.ConditionReady)
	}); !ok {
		t.Fatalf("NodeState not written Ready with the generated RBAC: %+v", st.Status)
	}
	if _, ok := waitFor(5*time.Second, func() bool { return hasEvent(ctx, "p", "PortPolicyApplied") && hasEvent(ctx, vs.Name, "Applied") }); !ok {
		t.Fatal("events not recorded with the generated RBAC")
	}
	if _, err := os.Stat(filepath.Join(dir, "10-epair.conflist")); err != nil {
		t.Fatalf("conflist: %v", err)
	}
	// The uninstall check reads the DaemonSet with these credentials too.
	if err := testClient.Delete(ctx, ds); err != nil {
		t.Fatal(err)
	}
	stop()
	if !c.Uninstalling() {
		t.Fatal("DaemonSet check did not see the uninstall")
	}
	if _, err := os.Stat(filepath.Join(dir, "10-epair.conflist")); !os.IsNotExist(err) {
		t.Fatalf("conflist left: %v", err)
	}
	// And the credentials are not an administrator's.
	uc, err := client.New(au.Config(), client.Options{Scheme: testClient.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	if err := uc.Delete(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: ns}}); err == nil || !strings.Contains(err.Error(), "forbidden") {
		t.Fatalf("agent credentials may delete pods: %v", err)
	}
	if err := uc.Update(ctx, vs); err == nil || !strings.Contains(err.Error(), "forbidden") {
		t.Fatalf("agent credentials may update a VirtualSwitch: %v", err)
	}
}

func mustCreate(t *testing.T, o client.Object) {
	t.Helper()
	if err := testClient.Create(context.Background(), o); err != nil {
		t.Fatalf("create %T %s: %v", o, o.GetName(), err)
	}
	t.Cleanup(func() { _ = testClient.Delete(context.Background(), o) })
}
