package controller

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
)

// NetmapPortsAnnotation asks for netmap application ports on the pod's
// switch: a comma-separated list of port names ("rx,tx"). The agent creates
// them when the pod's interface is attached and removes them with it.
const NetmapPortsAnnotation = "epair.dev/netmap-ports"

// PodAnnotation returns annotation key of pod namespace/name: from the
// manager's cache of this node's pods, or from the API server when the
// cache has not seen the pod yet (a sandbox made right after scheduling).
// A pod that does not exist has no annotation.
func (c *Controller) PodAnnotation(ctx context.Context, namespace, name, key string) (string, bool, error) {
	var p corev1.Pod
	k := types.NamespacedName{Namespace: namespace, Name: name}
	err := c.mgr.GetClient().Get(ctx, k, &p)
	if apierrors.IsNotFound(err) {
		err = c.mgr.GetAPIReader().Get(ctx, k, &p)
	}
	switch {
	case apierrors.IsNotFound(err):
		return "", false, nil
	case err != nil:
		return "", false, fmt.Errorf("read annotation %s of pod %s: %w", key, k, err)
	}
	v, ok := p.Annotations[key]
	return v, ok, nil
}
