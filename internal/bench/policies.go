package bench

// crr1 with network policies loaded (Config.Policies): in the overlay and
// slim modes, each crr1 measurement also runs the client once with N
// policies in force that all select the benchmark's servers, and reports
// the rate with them over the rate without (figure crr1.policyRatio), the
// two runs side by side in one measurement, their order alternating from
// run to run. One policy lets the benchmark's clients in on every port;
// the other N-1 each let in a label no container has on a port of their
// own, so that every connect's decision weighs all N.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/lab"
)

const (
	// MaxPolicies bounds Config.Policies.
	MaxPolicies = 10000
	// benchPolicyAllow is the policy that lets the clients in.
	benchPolicyAllow = "slim-bench-allow"
	// policyWait bounds the wait for the hosts to apply or drop them.
	policyWait = 30 * time.Second
	// policySettle: the packet filters follow the hosts' compiled state
	// in their next reconcile pass (milliseconds after).
	policySettle = 300 * time.Millisecond
)

// benchPolicies are n policies in the benchmark's namespace, all
// selecting its containers (label app=slim-bench) for ingress.
func benchPolicies(n int) []networkingv1.NetworkPolicy {
	sel := metav1.LabelSelector{MatchLabels: map[string]string{"app": benchLabel}}
	ps := []networkingv1.NetworkPolicy{{
		ObjectMeta: metav1.ObjectMeta{Namespace: api.DefaultNamespace, Name: benchPolicyAllow},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: sel, PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: &sel}}}}},
	}}
	for i := 1; i < n; i++ {
		port := intstr.FromInt32(int32(10000 + i))
		ps = append(ps, networkingv1.NetworkPolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: api.DefaultNamespace, Name: fmt.Sprintf("slim-bench-decoy-%d", i)},
			Spec: networkingv1.NetworkPolicySpec{PodSelector: sel, PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
				Ingress: []networkingv1.NetworkPolicyIngressRule{{
					From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"slim-bench-peer": strconv.Itoa(i)}}}},
					Ports: []networkingv1.NetworkPolicyPort{{Port: &port}},
				}}},
		})
	}
	return ps
}

// withPolicies applies the benchmark's policies, waits until both hosts
// decide e's connects with them, runs f, and removes them again.
func (r *runner) withPolicies(ctx context.Context, e *env, f func() error) (err error) {
	ps := benchPolicies(r.cfg.Policies)
	c := api.NewClient(lab.SocketPath(r.lab, serverHost))
	if err := c.ApplyPolicies(ctx, ps); err != nil {
		return fmt.Errorf("apply %d policies: %w", len(ps), err)
	}
	defer func() {
		// Removed even when interrupted: the next measurement and the
		// user's lab must not keep them.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), policyWait)
		defer cancel()
		var derr error
		for _, p := range ps {
			if e := c.DeletePolicy(dctx, p.Namespace, p.Name); e != nil && !errors.Is(e, api.ErrNotFound) {
				derr = errors.Join(derr, fmt.Errorf("remove policy %s: %w", p.Name, e))
			}
		}
		if derr == nil {
			derr = r.waitPolicies(dctx, e, false)
		}
		err = errors.Join(err, derr)
	}()
	if err := r.waitPolicies(ctx, e, true); err != nil {
		return err
	}
	return f()
}

// waitPolicies waits until both hosts' compiled policies let e's client
// reach crr1's server through benchPolicyAllow (loaded) or through no
// policy (not loaded).
func (r *runner) waitPolicies(ctx context.Context, e *env, loaded bool) error {
	want := func(x api.PolicyExplanation) bool {
		if loaded {
			return x.Allowed && slices.ContainsFunc(x.AllowedBy, func(s string) bool { return s == api.DefaultNamespace+"/"+benchPolicyAllow+" ingress[0]" })
		}
		return x.Allowed && len(x.AllowedBy) == 0
	}
	return r.waitHosts(ctx, func(c *api.Client) error {
		x, err := c.ExplainPolicy(ctx, e.clientAddr, e.addr, crr1Port, "TCP")
		if err == nil && !want(x) {
			err = fmt.Errorf("policies loaded=%v not in force (%+v)", loaded, x)
		}
		return err
	})
}

// waitHosts waits, up to policyWait, until check passes on both hosts'
// slimds, then for the packet filters to follow (policySettle).
func (r *runner) waitHosts(ctx context.Context, check func(c *api.Client) error) error {
	deadline := time.Now().Add(policyWait)
	for _, h := range []string{clientHost, serverHost} {
		c := api.NewClient(lab.SocketPath(r.lab, h))
		for {
			err := check(c)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s: after %v: %w", h, policyWait, err)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(policySettle):
	}
	return nil
}
