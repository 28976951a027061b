package controller

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	epairv1 "github.com/epair-cni/epair/api/v1alpha1"
)

// The envtest tests run against a real kube-apiserver and etcd: the ones
// hack/k8s/build-k8s.sh builds into ~/.cache/epair. KUBEBUILDER_ASSETS
// overrides the directory. Without the binaries those tests skip.
const envtestScript = "hack/k8s/build-k8s.sh envtest"

var (
	testEnv    *envtest.Environment
	testCfg    *rest.Config
	testClient client.Client
	envSkip    string
	nameSeq    atomic.Int64
)

func envtestAssets() string {
	if d := os.Getenv("KUBEBUILDER_ASSETS"); d != "" {
		return d
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return ""
	}
	return filepath.Join(home, ".cache", "epair", "envtest-k8s-v1.36.3-etcd-v3.6.8")
}

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	flag.Parse()
	// A fuzzing run (the coordinator and each worker run TestMain) needs no
	// API server: starting one per worker only slows the fuzzer down.
	if f := flag.Lookup("test.fuzz"); f != nil && f.Value.String() != "" {
		envSkip = "fuzzing: envtest not started"
		return m.Run()
	}
	if f := flag.Lookup("test.fuzzworker"); f != nil && f.Value.String() == "true" {
		envSkip = "fuzz worker: envtest not started"
		return m.Run()
	}
	assets := envtestAssets()
	for _, b := range []string{"kube-apiserver", "etcd"} {
		if _, err := os.Stat(filepath.Join(assets, b)); err != nil {
			envSkip = fmt.Sprintf("envtest binaries not found in %s (%v): run %s, or set KUBEBUILDER_ASSETS", assets, err, envtestScript)
			return m.Run()
		}
	}
	// Errors always print; EPAIR_TEST_VERBOSE=1 adds the info messages.
	logf.SetLogger(funcr.New(func(prefix, args string) { fmt.Fprintln(os.Stderr, prefix, args) }, funcr.Options{Verbosity: verbosity()}))
	testEnv = &envtest.Environment{
		BinaryAssetsDirectory: assets,
		CRDDirectoryPaths:     []string{filepath.Join("..", "..", "charts", "epair", "crds")},
		ErrorIfCRDPathMissing: true,
	}
	cfg, err := testEnv.Start()
	if err != nil {
		fmt.Fprintf(os.Stderr, "start envtest: %v\n", err)
		// Start may fail after etcd and kube-apiserver are up (e.g. a CRD
		// the API server rejects): stop what did start.
		if err := testEnv.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "stop envtest: %v\n", err)
		}
		return 1
	}
	defer func() {
		if err := testEnv.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "stop envtest: %v\n", err)
		}
	}()
	testCfg = cfg
	s, err := newScheme()
	if err != nil {
		fmt.Fprintf(os.Stderr, "scheme: %v\n", err)
		return 1
	}
	testClient, err = client.New(cfg, client.Options{Scheme: s})
	if err != nil {
		fmt.Fprintf(os.Stderr, "client: %v\n", err)
		return 1
	}
	return m.Run()
}

func verbosity() int {
	if os.Getenv("EPAIR_TEST_VERBOSE") != "" {
		return 1
	}
	return -1 // errors only: keep test output readable
}

func needEnvtest(t *testing.T) {
	t.Helper()
	if envSkip != "" {
		t.Skip(envSkip)
	}
}

// uniq returns a name unique within the test binary's run.
func uniq(prefix string) string {
	return fmt.Sprintf("%s%d", prefix, nameSeq.Add(1))
}

// startController creates a Node and runs a Controller for it until the
// test ends.
func startController(t *testing.T, dp Dataplane, mutate func(*Options), nodeLabels map[string]string, podCIDRs ...string) (*Controller, *corev1.Node) {
	t.Helper()
	ctx := context.Background()
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: uniq("node-"), Labels: nodeLabels}}
	node.Spec.PodCIDRs = podCIDRs
	if len(podCIDRs) > 0 {
		node.Spec.PodCIDR = podCIDRs[0]
	}
	if err := testClient.Create(ctx, node); err != nil {
		t.Fatalf("create node: %v", err)
	}
	t.Cleanup(func() { _ = testClient.Delete(context.Background(), node) })
	o := Options{NodeName: node.Name, Dataplane: dp, StatusInterval: 300 * time.Millisecond}
	if mutate != nil {
		mutate(&o)
	}
	c, err := New(testCfg, o)
	if err != nil {
		t.Fatalf("new controller: %v", err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Start(runCtx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("controller stopped with %v", err)
		}
	})
	return c, node
}

func newNamespace(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: uniq("ns-")}}
	if err := testClient.Create(ctx, ns); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	// No kube-controller-manager in envtest: create the default ServiceAccount
	// the ServiceAccount admission plugin wants for pods.
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: ns.Name}}
	if err := testClient.Create(ctx, sa); err != nil {
		t.Fatalf("create serviceaccount: %v", err)
	}
	return ns.Name
}

func newPod(t *testing.T, ns, name, node string, labels map[string]string) *corev1.Pod {
	t.Helper()
	no := false
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
		Spec: corev1.PodSpec{
			NodeName:                     node,
			AutomountServiceAccountToken: &no,
			Containers:                   []corev1.Container{{Name: "c", Image: "busybox:local"}},
		},
	}
	if err := testClient.Create(context.Background(), p); err != nil {
		t.Fatalf("create pod %s/%s: %v", ns, name, err)
	}
	return p
}

func newScheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		return nil, err
	}
	if err := epairv1.AddToScheme(s); err != nil {
		return nil, err
	}
	return s, nil
}
