package lab

import (
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/slimnet/slim/internal/api"
)

func TestConflist(t *testing.T) {
	for _, tc := range []struct {
		labels map[string]string
		ports  []api.NamedPort
		want   string
	}{
		{nil, nil, `{"cniVersion":"1.1.0","name":"slim","plugins":[{"type":"slim-cni","socket":"/run/slimlab/h2/slimd.sock","args":{"cni":{"labels":{}}}}]}`},
		{map[string]string{"app": "web", "tier": "front"}, nil,
			`{"cniVersion":"1.1.0","name":"slim","plugins":[{"type":"slim-cni","socket":"/run/slimlab/h2/slimd.sock","args":{"cni":{"labels":{"app":"web","tier":"front"}}}}]}`},
		{nil, []api.NamedPort{{Name: "http", Port: 80, Protocol: "TCP"}},
			`{"cniVersion":"1.1.0","name":"slim","plugins":[{"type":"slim-cni","socket":"/run/slimlab/h2/slimd.sock","args":{"cni":{"labels":{},"ports":[{"name":"http","port":80,"protocol":"TCP"}]}}}]}`},
	} {
		b, err := conflist("/run/slimlab/h2/slimd.sock", tc.labels, tc.ports)
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != tc.want {
			t.Errorf("conflist:\n got %s\nwant %s", b, tc.want)
		}
		list, err := libcni.NetworkConfFromBytes(b)
		if err != nil {
			t.Fatalf("libcni rejects it: %v", err)
		}
		if list.Name != "slim" || list.CNIVersion != "1.1.0" || len(list.Plugins) != 1 || list.Plugins[0].Network.Type != "slim-cni" {
			t.Errorf("libcni reads %+v", list)
		}
	}
}
