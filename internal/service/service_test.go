package service

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/slimnet/slim/internal/api"
)

const web = `apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: admin, port: 81, targetPort: admin}
  - {name: dns, port: 53, protocol: UDP}
`

func TestParse(t *testing.T) {
	svcs, err := Parse([]byte(web + "---\n" + `{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db", "namespace": "x"},
 "spec": {"clusterIP": "10.96.0.20", "selector": {"app": "db"}, "ports": [{"port": 5432}]}}`))
	if err != nil {
		t.Fatal(err)
	}
	if len(svcs) != 2 || Key(&svcs[0]) != "default/web" || Key(&svcs[1]) != "x/db" || svcs[1].Spec.ClusterIP != "10.96.0.20" {
		t.Fatalf("parsed %+v", svcs)
	}
	list := `apiVersion: v1
kind: ServiceList
items:
- metadata: {name: a}
  spec: {selector: {app: a}, ports: [{port: 1}]}
`
	if svcs, err := Parse([]byte(list)); err != nil || len(svcs) != 1 || svcs[0].Kind != "Service" {
		t.Errorf("ServiceList: %+v, %v", svcs, err)
	}
}

func TestParseErrors(t *testing.T) {
	svc := func(spec string) string {
		return "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n" + spec
	}
	for _, tc := range []struct{ in, want string }{
		{"apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {selector: {a: b}, ports: [{port: 80}]\n", "did not find expected"},
		{"apiVersion: v1\nkind: Pod\nmetadata: {name: s}\n", `kind "Pod": want apiVersion v1, kind Service`},
		{svc("  type: NodePort\n  selector: {a: b}\n  ports: [{port: 80}]"), `spec.type: "NodePort": only ClusterIP`},
		{svc("  type: LoadBalancer\n  selector: {a: b}\n  ports: [{port: 80}]"), `only ClusterIP`},
		{svc("  clusterIP: None\n  selector: {a: b}\n  ports: [{port: 80}]"), "headless service"},
		{svc("  clusterIP: fd00::1\n  selector: {a: b}\n  ports: [{port: 80}]"), "want an IPv4 address"},
		{svc("  ports: [{port: 80}]"), "spec.selector: required"},
		{svc("  selector: {a: b}"), "spec.ports: required"},
		{svc("  selector: {a: b}\n  ports: [{port: 80}, {port: 81}]"), "spec.ports[0].name: required"},
		{svc("  selector: {a: b}\n  ports: [{port: 80, protocol: SCTP}]"), `spec.ports[0].protocol: "SCTP": want TCP or UDP`},
		{svc("  selector: {a: b}\n  ports: [{port: 70000}]"), "spec.ports[0].port: 70000"},
		{svc("  selector: {a: b}\n  ports: [{name: a, port: 80}, {name: b, port: 80}]"), "80/TCP given twice"},
		{svc("  selector: {a: b}\n  ports: [{port: 80}]\n  sessionAffinty: None"), `unknown field "spec.sessionAffinty"`},
		{"apiVersion: v1\nkind: Service\nmetadata: {name: s, annotations: {slim.io/backend-removal: drop}}\nspec: {selector: {a: b}, ports: [{port: 80}]}", `"drop": want keep or reset`},
	} {
		_, err := Parse([]byte(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q:\n got %v\nwant an error containing %q", tc.in, err, tc.want)
		}
	}
}

func TestBuild(t *testing.T) {
	svcs, err := Parse([]byte(web))
	if err != nil {
		t.Fatal(err)
	}
	svcs[0].Spec.ClusterIP = "10.96.0.10"
	ep := func(ip string, ns string, labels map[string]string, ports ...api.NamedPort) api.Endpoint {
		l := map[string]string{api.LabelPodNamespace: ns}
		for k, v := range labels {
			l[k] = v
		}
		return api.Endpoint{IPv4: netip.MustParseAddr(ip), Labels: l, Ports: ports}
	}
	admin := api.NamedPort{Name: "admin", Port: 9090, Protocol: "TCP"}
	eps := []api.Endpoint{
		ep("10.244.1.3", "default", map[string]string{"app": "web"}, admin),
		ep("10.244.1.2", "default", map[string]string{"app": "web", "tier": "x"}),
		ep("10.244.2.2", "other", map[string]string{"app": "web"}, admin), // another namespace
		ep("10.244.2.3", "default", map[string]string{"app": "db"}),       // not selected
	}
	tb := Build(svcs, eps)
	vip := netip.MustParseAddr("10.96.0.10")
	for _, tc := range []struct {
		front Front
		want  []string
	}{
		{Front{vip, 80, corev1.ProtocolTCP}, []string{"10.244.1.2:8080", "10.244.1.3:8080"}},
		{Front{vip, 81, corev1.ProtocolTCP}, []string{"10.244.1.3:9090"}}, // by name, where the endpoint has it
		{Front{vip, 53, corev1.ProtocolUDP}, []string{"10.244.1.2:53", "10.244.1.3:53"}},
	} {
		p, ok := tb.Lookup(tc.front)
		var got []string
		if ok {
			for _, b := range p.Backends {
				got = append(got, b.String())
			}
		}
		if !ok || p.Service != "default/web" || !slices.Equal(got, tc.want) {
			t.Errorf("%+v: %v %+v, want backends %v", tc.front, ok, p, tc.want)
		}
	}
	if _, ok := tb.Lookup(Front{vip, 53, corev1.ProtocolTCP}); ok {
		t.Error("53/TCP found: the service has 53/UDP only")
	}
	if n := len(tb.Fronts()); n != 3 {
		t.Errorf("%d fronts, want 3", n)
	}
	// Not allocated yet: no front.
	svcs[0].Spec.ClusterIP = ""
	if n := len(Build(svcs, eps).Fronts()); n != 0 {
		t.Errorf("%d fronts without a cluster IP", n)
	}
}

// Parse never panics, and whatever it accepts validates again and has
// only the types Slim serves.
func FuzzParse(f *testing.F) {
	f.Add([]byte(web))
	f.Add([]byte("apiVersion: v1\nkind: ServiceList\nitems: [{metadata: {name: a}, spec: {selector: {a: b}, ports: [{port: 1}]}}]"))
	f.Add([]byte(`{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"Service","metadata":{"name":"x"},"spec":{"selector":{"a":"b"},"ports":[{"port":80,"targetPort":"http"}]}}]}`))
	f.Add([]byte("apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {clusterIP: None}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		svcs, err := Parse(data)
		if err != nil {
			return
		}
		for i := range svcs {
			s := &svcs[i]
			if err := Validate(s); err != nil {
				t.Fatalf("accepted %s, which does not validate: %v", Key(s), err)
			}
			if s.Spec.Type != "" && s.Spec.Type != corev1.ServiceTypeClusterIP || len(s.Spec.Selector) == 0 || len(s.Spec.Ports) == 0 {
				t.Fatalf("accepted %+v", s.Spec)
			}
		}
	})
}
