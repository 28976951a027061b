// Command kubectl-epair is the kubectl plugin of epair: it finds the node of a pod and that
// node's epair agent, and runs valectl there through the API server (pods/exec), streaming
// its output, so that an operator's laptop sees what the node's switch sees.
//
//	kubectl epair capture <namespace/pod>[:ifname] [valectl capture flags] > pod.pcap
//	kubectl epair capture -n default web | tcpdump -nr -
//	kubectl epair capture -n default web -t 10s tcp port 8080 | tshark -r -
//	kubectl epair trace default/web -to default/db -p tcp -dport 5432
//	kubectl epair ports <node> | drops <node> | switches <node> | attachments <node>
//
// Installed on the PATH as kubectl-epair, kubectl runs it as "kubectl epair". It needs
// get/list on pods and create on pods/exec in the agent's namespace.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/streaming/pkg/httpstream"
)

const usage = `usage: kubectl epair [flags] capture [namespace/]pod[:ifname] [-d rx|tx|both] [-c count] [-t duration] [-s snaplen] [filter expression]
       kubectl epair [flags] trace [namespace/]pod[:ifname] -to <[namespace/]pod | IP | MAC> [-p icmp|tcp|udp] [-sport N] [-dport N] [-src-ip IP] [-src-mac MAC]
       kubectl epair [flags] ports|drops|switches|attachments|status <node>`

func main() {
	fs := flag.NewFlagSet("kubectl-epair", flag.ExitOnError)
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
	namespace := fs.String("n", "", "namespace of the pod (default: the kubeconfig context's)")
	agentNS := fs.String("agent-namespace", "epair-system", "namespace of the epair agents")
	selector := fs.String("agent-selector", "app.kubernetes.io/component=agent,app.kubernetes.io/name=epair", "label selector of the agent pods")
	fs.Usage = func() { fmt.Fprintln(fs.Output(), usage); fs.PrintDefaults() }
	_ = fs.Parse(os.Args[1:])
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	o := options{kubeconfig: *kubeconfig, namespace: *namespace, agentNS: *agentNS, selector: *selector}
	if err := run(ctx, o, fs.Args(), os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "kubectl-epair:", err)
		os.Exit(1)
	}
}

type options struct {
	kubeconfig, namespace, agentNS, selector string
}

func run(ctx context.Context, o options, args []string, stdout, stderr io.Writer) error {
	if len(args) < 2 {
		return errors.New(usage)
	}
	args, o.namespace = splitArgs(args, o.namespace)
	if len(args) < 2 {
		return errors.New(usage)
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = o.kubeconfig
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{})
	cfg, err := cc.ClientConfig()
	if err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	cmd, target, rest := args[0], args[1], args[2:]
	var node string
	var valectl []string
	switch cmd {
	case "capture", "trace":
		pod, ifname, err := getPod(ctx, cs, cc, o.namespace, target)
		if err != nil {
			return err
		}
		if pod.Spec.NodeName == "" {
			return fmt.Errorf("pod %s/%s is not scheduled to a node", pod.Namespace, pod.Name)
		}
		node = pod.Spec.NodeName
		if cmd == "trace" {
			// A destination pod may run on another node: valectl gets its address.
			if rest, err = resolveTo(ctx, cs, cc, o.namespace, rest); err != nil {
				return err
			}
		}
		valectl = append([]string{"/valectl", cmd, pod.Namespace + "/" + pod.Name + ifname}, rest...)
	case "ports", "drops", "switches", "attachments", "status":
		node = target
		valectl = append([]string{"/valectl", cmd}, rest...)
	default:
		return fmt.Errorf("unknown command %q\n%s", cmd, usage)
	}
	agent, err := agentOn(ctx, cs, o, node)
	if err != nil {
		return err
	}
	return execIn(ctx, cfg, cs, agent, valectl, stdout, stderr)
}

// getPod finds the pod named "[namespace/]name[:ifname]" (ns, or the kubeconfig context's,
// when the name has none) and returns it with ":ifname" or "".
func getPod(ctx context.Context, cs kubernetes.Interface, cc clientcmd.ClientConfig, ns, target string) (*corev1.Pod, string, error) {
	name, ifname := target, ""
	if n, p, ok := strings.Cut(target, "/"); ok {
		ns, name = n, p
	}
	if p, i, ok := strings.Cut(name, ":"); ok {
		name, ifname = p, ":"+i
	}
	if ns == "" {
		var err error
		if ns, _, err = cc.Namespace(); err != nil {
			return nil, "", fmt.Errorf("namespace: %w", err)
		}
	}
	pod, err := cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, "", fmt.Errorf("pod %s/%s: %w", ns, name, err)
	}
	return pod, ifname, nil
}

// resolveTo replaces a trace's "-to [namespace/]pod" by the pod's address (its first, as the
// pod's status lists them; "-src-ip" of the other family picks that family's); an IP or
// MAC stays.
func resolveTo(ctx context.Context, cs kubernetes.Interface, cc clientcmd.ClientConfig, ns string, args []string) ([]string, error) {
	out := slices.Clone(args)
	v6 := false
	for i := 0; i+1 < len(out); i++ {
		if out[i] == "-src-ip" || out[i] == "--src-ip" {
			if a, err := netip.ParseAddr(out[i+1]); err == nil {
				v6 = a.Is6()
			}
		}
	}
	for i := 0; i+1 < len(out); i++ {
		if out[i] != "-to" && out[i] != "--to" {
			continue
		}
		to := out[i+1]
		if _, err := netip.ParseAddr(to); err == nil {
			continue
		}
		if _, err := net.ParseMAC(to); err == nil {
			continue
		}
		pod, _, err := getPod(ctx, cs, cc, ns, to)
		if err != nil {
			return nil, fmt.Errorf("-to: %w", err)
		}
		addr := ""
		for _, ip := range pod.Status.PodIPs {
			a, err := netip.ParseAddr(ip.IP)
			if err != nil {
				continue
			}
			if a.Is6() == v6 {
				addr = a.String()
				break
			}
			if addr == "" {
				addr = a.String()
			}
		}
		if addr == "" {
			return nil, fmt.Errorf("-to: pod %s/%s has no address yet", pod.Namespace, pod.Name)
		}
		out[i+1] = addr
	}
	return out, nil
}

// splitArgs takes -n/--namespace out of args wherever kubectl users put it ("capture -n
// ns pod") and moves the command's first operand (pod or node) right after the command,
// the valectl flags (which take a value each) after it.
func splitArgs(args []string, ns string) ([]string, string) {
	valued := map[string]bool{"-d": true, "-c": true, "-t": true, "-s": true, "-w": true, "-F": true,
		"-to": true, "--to": true, "-p": true, "-sport": true, "-dport": true, "-src-ip": true, "--src-ip": true, "-src-mac": true}
	var flags, operands []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case (a == "-n" || a == "--namespace") && i+1 < len(args):
			ns = args[i+1]
			i++
		case strings.HasPrefix(a, "-n=") || strings.HasPrefix(a, "--namespace="):
			_, ns, _ = strings.Cut(a, "=")
		case valued[a] && i+1 < len(args):
			flags = append(flags, a, args[i+1])
			i++
		case strings.HasPrefix(a, "-"):
			flags = append(flags, a)
		default:
			operands = append(operands, a)
		}
	}
	// command, its operand, the flags, then the rest (a capture's filter expression, which
	// valectl takes after its flags, as tcpdump does).
	if len(operands) <= 2 {
		return append(operands, flags...), ns
	}
	return append(append(operands[:2:2], flags...), operands[2:]...), ns
}

// agentOn finds the running agent pod on node.
func agentOn(ctx context.Context, cs kubernetes.Interface, o options, node string) (*corev1.Pod, error) {
	l, err := cs.CoreV1().Pods(o.agentNS).List(ctx, metav1.ListOptions{LabelSelector: o.selector, FieldSelector: "spec.nodeName=" + node})
	if err != nil {
		return nil, fmt.Errorf("list epair agents on node %s: %w", node, err)
	}
	for i := range l.Items {
		if l.Items[i].Spec.NodeName == node && l.Items[i].Status.Phase == corev1.PodRunning {
			return &l.Items[i], nil
		}
	}
	return nil, fmt.Errorf("no running epair agent on node %s (namespace %s, selector %s)", node, o.agentNS, o.selector)
}

// execIn runs command in the agent container of pod through pods/exec, streaming its
// standard output and error, until it ends or ctx does.
func execIn(ctx context.Context, cfg *rest.Config, cs kubernetes.Interface, pod *corev1.Pod, command []string, stdout, stderr io.Writer) error {
	req := cs.CoreV1().RESTClient().Post().Resource("pods").Namespace(pod.Namespace).Name(pod.Name).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{Container: "agent", Command: command, Stdout: true, Stderr: true}, scheme.ParameterCodec)
	ws, err := remotecommand.NewWebSocketExecutor(cfg, "GET", req.URL().String())
	if err != nil {
		return err
	}
	spdy, err := remotecommand.NewSPDYExecutor(cfg, "POST", req.URL())
	if err != nil {
		return err
	}
	// WebSocket first, SPDY only when the API server refuses the WebSocket upgrade (as
	// kubectl decides): falling back on any error would run a failed valectl twice.
	ex, err := remotecommand.NewFallbackExecutor(ws, spdy, func(err error) bool {
		return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
	})
	if err != nil {
		return err
	}
	if err := ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: stdout, Stderr: stderr}); err != nil && ctx.Err() == nil {
		return fmt.Errorf("valectl on %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	return nil
}
