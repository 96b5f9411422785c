package api

import (
	"maps"
	"testing"
)

func TestParseNamedPort(t *testing.T) {
	for in, want := range map[string]NamedPort{
		"http=80":         {"http", 80, "TCP"},
		"dns=53/udp":      {"dns", 53, "UDP"},
		"s1=9/SCTP":       {"s1", 9, "SCTP"},
		"serve-81-tcp=81": {"serve-81-tcp", 81, "TCP"},
	} {
		if got, err := ParseNamedPort(in); err != nil || got != want {
			t.Errorf("ParseNamedPort(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, in := range []string{"http", "http=0", "http=65536", "http=08", "http=80/icmp", "HTTP=80", "80=80", "a--b=1",
		"-a=1", "sixteen-chars-xx=1", "=80", "http=80/"} {
		if p, err := ParseNamedPort(in); err == nil {
			t.Errorf("ParseNamedPort(%q) = %+v: want an error", in, p)
		}
	}
	if err := ValidatePorts([]NamedPort{{"a", 1, "TCP"}, {"a", 2, "UDP"}}); err == nil {
		t.Error("a name used twice was accepted")
	}
}

func TestEndpointNamespace(t *testing.T) {
	ep := Endpoint{Labels: map[string]string{"app": "web", LabelPodName: "web-0", LabelPodNamespace: "shop"}}
	if ep.Namespace() != "shop" || !maps.Equal(ep.PodLabels(), map[string]string{"app": "web"}) {
		t.Errorf("namespace %q, pod labels %v", ep.Namespace(), ep.PodLabels())
	}
	if (Endpoint{}).Namespace() != DefaultNamespace {
		t.Error("an endpoint without a namespace label is not in default")
	}
	req := EndpointRequest{ContainerID: "c", IfName: "eth0", Netns: "/x"}
	for name, r := range map[string]EndpointRequest{
		"bad namespace": {ContainerID: "c", IfName: "eth0", Netns: "/x", Labels: map[string]string{LabelPodNamespace: "Shop"}},
		"bad port":      {ContainerID: "c", IfName: "eth0", Netns: "/x", Ports: []NamedPort{{"http", 0, "TCP"}}},
	} {
		if r.Validate() == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if err := req.Validate(); err != nil {
		t.Error(err)
	}
}

func TestNamespaceValidate(t *testing.T) {
	for _, ns := range []Namespace{{Name: "x"}, {Name: "team-a", Labels: map[string]string{"team": "a", LabelNamespaceName: "team-a"}}} {
		if err := ns.Validate(); err != nil {
			t.Errorf("%+v: %v", ns, err)
		}
	}
	for _, ns := range []Namespace{{Name: ""}, {Name: "X"}, {Name: "a_b"}, {Name: "x", Labels: map[string]string{LabelNamespaceName: "y"}},
		{Name: "x", Labels: map[string]string{"bad key": "v"}}} {
		if err := ns.Validate(); err == nil {
			t.Errorf("%+v: accepted", ns)
		}
	}
}
