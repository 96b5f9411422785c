package daemon

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/nat"
	"github.com/slimnet/slim/internal/policy"
	"github.com/slimnet/slim/internal/poll"
	"github.com/slimnet/slim/internal/store"
)

// TestPolicies: the compiled state follows the store (policies,
// namespace labels, endpoints) and decides connects from memory.
func TestPolicies(t *testing.T) {
	e := newFPEnv(t)
	ctx := t.Context()
	log := slog.New(slog.DiscardHandler)
	hn := store.HostNet{Host: "h1", Subnet4: e.v.self.Subnet4}
	add := func(id, ns string, labels map[string]string, ports ...api.NamedPort) api.Endpoint {
		t.Helper()
		l := map[string]string{api.LabelPodNamespace: ns, api.LabelPodName: id}
		for k, v := range labels {
			l[k] = v
		}
		ep, err := e.st.AddEndpoint(ctx, hn, api.EndpointRequest{ContainerID: id, IfName: "eth0", Netns: "/x/" + id, Labels: l, Ports: ports},
			testBlocks, netip.Addr{}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return ep
	}
	web := add("web", "x", map[string]string{"app": "web"}, api.NamedPort{Name: "http", Port: 8080, Protocol: "TCP"})
	cli := add("cli", "x", map[string]string{"app": "client"})
	other := add("other", "y", map[string]string{"app": "client"})

	pols, nss := e.st.PolicyCache(log, nil), e.st.NamespaceCache(log, nil)
	var denied []string
	p := newPolicies("h1", pols, nss, e.v.endpoints, e.v.validEndpoint, func(dir, pol string) { denied = append(denied, dir+" "+pol) }, log)
	// The caches' callbacks would mark; here the test rebuilds itself.
	for _, run := range []func(context.Context) error{pols.Run, nss.Run} {
		go run(ctx)
	}
	// waitRev waits until cache c has applied the write at rev (a cache
	// advances only with writes under its prefix), then rebuilds.
	waitRev := func(c interface {
		WaitRev(context.Context, int64) error
	}, rev int64) {
		t.Helper()
		if err := c.WaitRev(ctx, rev); err != nil {
			t.Fatal(err)
		}
		p.rebuild()
	}
	// AddEndpoint gives no revision: wait for the three to be cached.
	poll.Until(t, 5*time.Second, func() error {
		for _, ep := range []api.Endpoint{web, cli, other} {
			if _, ok := e.v.endpoints.Get(ep.Host + "/" + ep.ContainerID + "/" + ep.IfName); !ok {
				return errors.New(ep.ContainerID + " not cached yet")
			}
		}
		return nil
	})
	p.rebuild()
	poll.Until(t, 5*time.Second, func() error {
		if !pols.Synced() || !nss.Synced() {
			return errors.New("policy caches not synced")
		}
		return nil
	})
	to := func(ep api.Endpoint, port uint16) netip.AddrPort { return netip.AddrPortFrom(ep.IPv4, port) }
	if !p.AllowTCP(other.IPv4, to(web, 8080)) || len(denied) != 0 {
		t.Fatal("denied without any policy")
	}

	rev, err := e.st.PutPolicies(ctx, []networkingv1.NetworkPolicy{{
		ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "web"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "client"}}}},
				Ports: []networkingv1.NetworkPolicyPort{{Port: new(intstr.FromString("http"))}},
			}},
		},
	}})
	if err != nil {
		t.Fatal(err)
	}
	waitRev(pols, rev)
	for _, tc := range []struct {
		src  netip.Addr
		dst  netip.AddrPort
		want bool
	}{
		{cli.IPv4, to(web, 8080), true},    // same namespace, app=client, the named port
		{cli.IPv4, to(web, 8081), false},   // another port
		{other.IPv4, to(web, 8080), false}, // another namespace
		{web.IPv4, to(cli, 9), true},       // cli is not isolated
		{netip.MustParseAddr("192.0.2.1"), to(web, 8080), false},
	} {
		if got := p.AllowTCP(tc.src, tc.dst); got != tc.want {
			t.Errorf("%v -> %v: allowed %v, want %v", tc.src, tc.dst, got, tc.want)
		}
	}
	if len(denied) != 3 || denied[0] != "ingress x/web" {
		t.Errorf("denials counted %q", denied)
	}
	if ds := p.recent.list(); len(ds) != 3 || ds[0].Source != cli.IPv4 || ds[0].Destination != to(web, 8081) || ds[0].Policy != "x/web" {
		t.Errorf("recent denials %+v", ds)
	}
	var r denials
	for i := range maxDenials + 3 {
		r.add(api.Denial{Destination: netip.AddrPortFrom(netip.IPv4Unspecified(), uint16(i))})
	}
	if l := r.list(); len(l) != maxDenials || l[0].Destination.Port() != 3 || l[maxDenials-1].Destination.Port() != maxDenials+2 {
		t.Errorf("ring of %d: first %v last %v", len(l), l[0].Destination, l[len(l)-1].Destination)
	}
	// The packet filter's form: web isolated for ingress, cli allowed to
	// its named port.
	f := p.filter()
	wantAllow := policy.Allow{Local: web.IPv4, Peer: netip.PrefixFrom(cli.IPv4, 32), Proto: policy.ProtocolTCP, First: 8080, Last: 8080}
	if !slices.Equal(f.IsolatedIngress, []netip.Addr{web.IPv4}) || len(f.IsolatedEgress) != 0 || !slices.Equal(f.Ingress, []policy.Allow{wantAllow}) {
		t.Errorf("filter %+v, want ingress of web allowing %+v", f, wantAllow)
	}
	checkHostPorts(t, e, p, web, cli, other)
	ex := p.explain(cli.IPv4, web.IPv4, 8080, policy.ProtocolTCP)
	if !ex.Allowed || len(ex.AllowedBy) != 1 || ex.AllowedBy[0] != "x/web ingress[0]" || !strings.Contains(ex.Explanation, "x/cli") {
		t.Errorf("explain: %+v", ex)
	}

	// Namespace labels reach namespace selectors.
	rev, err = e.st.PutPolicies(ctx, []networkingv1.NetworkPolicy{{
		ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "blue"},
		Spec: networkingv1.NetworkPolicySpec{
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "blue"}}}},
			}},
		},
	}})
	if err != nil {
		t.Fatal(err)
	}
	waitRev(pols, rev)
	if p.AllowTCP(other.IPv4, to(web, 8080)) {
		t.Fatal("y is not labelled yet")
	}
	if _, rev, err = e.st.LabelNamespace(ctx, "y", api.NamespaceLabels{Set: map[string]string{"team": "blue"}}); err != nil {
		t.Fatal(err)
	}
	waitRev(nss, rev)
	if !p.AllowTCP(other.IPv4, to(web, 8080)) {
		t.Fatal("y labelled team=blue, still denied")
	}

	// An endpoint's labels change: the index follows.
	if _, err := e.st.DeletePolicy(ctx, "x", "blue"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.DeletePolicy(ctx, "x", "blue"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("second delete: %v, want ErrNotFound", err)
	}
	if err := e.st.DelEndpoint(ctx, "h1", api.Attachment{ContainerID: "cli", IfName: "eth0"}); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 5*time.Second, func() error {
		p.rebuild()
		if p.AllowTCP(cli.IPv4, to(web, 8080)) {
			return errors.New("a released endpoint's address still counts as app=client")
		}
		return nil
	})
}

// checkHostPorts: web's listener is guarded, cli's block (only) allowed
// to it, and every block known, other's included (a reset for it, not
// the drop an unknown block gets).
func checkHostPorts(t *testing.T, e *fpEnv, p *policies, web, cli, other api.Endpoint) {
	t.Helper()
	ctx := t.Context()
	f := e.fastPath(true)
	hp, err := f.ListenerPort(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Publish(ctx, api.Listener{VIP: web.IPv4, Port: 8080, HostIP: h1IP, HostPort: hp, ContainerID: "web", IfName: "eth0"}); err != nil {
		t.Fatal(err)
	}
	ls, _ := e.v.listeners.Snapshot()
	got := p.hostPorts(e.v, e.v.otherHosts(), ls, e.v.endpoints.Range, testBlocks)
	block := func(ep api.Endpoint) nat.HostPortBlock {
		if len(ep.PortBlocks) != 1 {
			t.Fatalf("endpoint %s: blocks %+v, want one", ep.ContainerID, ep.PortBlocks)
		}
		b := ep.PortBlocks[0]
		return nat.HostPortBlock{Host: h1IP, First: b.Start, Last: b.Start + b.Size - 1}
	}
	cb, ob, wb := block(cli), block(other), block(web)
	if !slices.Equal(got.Guarded, []uint16{hp}) || len(got.Open) != 0 {
		t.Errorf("guarded %v open %v, want web's listener port %d guarded", got.Guarded, got.Open, hp)
	}
	if want := []nat.HostPortAllow{{Port: hp, Host: h1IP, First: cb.First, Last: cb.Last}}; !slices.Equal(got.Allow, want) {
		t.Errorf("allowed %+v, want cli's block only %+v", got.Allow, want)
	}
	for _, b := range []nat.HostPortBlock{cb, ob, wb} {
		if !slices.Contains(got.Known, b) {
			t.Errorf("known blocks %+v lack %+v", got.Known, b)
		}
	}
}

// The decision cache answers as Decide does, and stays bounded.
func TestDecisionCache(t *testing.T) {
	ep := &policy.Endpoint{Namespace: "x", Labels: map[string]string{"app": "web"}}
	web, cli := netip.MustParseAddr("10.244.1.2"), netip.MustParseAddr("10.244.2.2")
	port80 := intstr.FromInt32(80)
	set, err := policy.Compile([]networkingv1.NetworkPolicy{{
		ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "only-80"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Ingress:     []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{{Port: &port80}}}},
		},
	}}, []policy.Namespace{{Name: "x"}})
	if err != nil {
		t.Fatal(err)
	}
	s := &policyState{set: set, byIP: map[netip.Addr]*policy.Endpoint{web: ep}}
	for range 2 { // computed, then cached
		for port, want := range map[uint16]bool{80: true, 81: false} {
			if got := s.decideTCP(cli, web, port).Allowed; got != want {
				t.Errorf("port %d: allowed %v, want %v", port, got, want)
			}
		}
	}
	for port := range maxDecisions + 10 {
		s.decideTCP(cli, netip.MustParseAddr("10.244.3.3"), uint16(port))
	}
	if n := len(s.decisions); n > maxDecisions || n == 0 {
		t.Errorf("%d decisions cached, want 1 to %d", n, maxDecisions)
	}
}
