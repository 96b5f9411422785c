package bench

// crr1 through a service (Config.Service): in the overlay and slim modes,
// each crr1 measurement also runs the client against a ClusterIP service
// whose one backend is the mode's crr1 server, and reports the rate
// through the service over the rate to the server's own address (figure
// crr1.serviceRatio). The service is made for the run and removed after.

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/lab"
)

// Labels of the benchmark's containers that a service selects on.
const (
	benchModeLabel = "slim-bench-mode"
	benchRoleLabel = "slim-bench-role"
)

// withService applies a service fronting e's crr1 server, waits until both
// hosts know its backend (and, in slim mode, its listener), runs run with
// the service's address, and removes it.
func (r *runner) withService(ctx context.Context, e *env, run func(addr string) error) (err error) {
	svc := corev1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: metav1.ObjectMeta{Namespace: api.DefaultNamespace, Name: "slim-bench-" + e.mode},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{benchModeLabel: e.mode, benchRoleLabel: "server"},
			Ports:    []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(crr1Port)}},
		},
	}
	c := api.NewClient(lab.SocketPath(r.lab, serverHost))
	out, err := c.ApplyServices(ctx, []corev1.Service{svc})
	if err != nil {
		return fmt.Errorf("apply service: %w", err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), policyWait)
		defer cancel()
		if derr := c.DeleteService(dctx, svc.Namespace, svc.Name); derr != nil && !errors.Is(derr, api.ErrNotFound) {
			err = errors.Join(err, fmt.Errorf("remove service: %w", derr))
		}
	}()
	vip, perr := netip.ParseAddr(out.Services[0].Spec.ClusterIP)
	if perr != nil {
		return fmt.Errorf("service cluster IP: %w", perr)
	}
	if err := r.waitService(ctx, e, svc.Name); err != nil {
		return err
	}
	return run(netip.AddrPortFrom(vip, 80).String())
}

// waitService waits until both hosts have the service's backend: listening
// on the fast path in slim mode, selected in overlay mode (its server
// is not on the fast path); then for the packet filters to follow.
func (r *runner) waitService(ctx context.Context, e *env, name string) error {
	return r.waitHosts(ctx, func(c *api.Client) error {
		ss, err := c.Services(ctx)
		for _, s := range ss {
			if s.Name == name && len(s.Ports) == 1 && s.Ports[0].Backends == 1 && (e.mode != ModeSlim || s.Ports[0].Listening == 1) {
				return nil
			}
		}
		if err == nil {
			err = fmt.Errorf("service %s without its backend (%+v)", name, ss)
		}
		return err
	})
}
