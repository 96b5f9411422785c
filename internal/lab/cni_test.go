package lab

import (
	"testing"

	"github.com/containernetworking/cni/libcni"
)

func TestConflist(t *testing.T) {
	for _, tc := range []struct {
		labels map[string]string
		want   string
	}{
		{nil, `{"cniVersion":"1.1.0","name":"slim","plugins":[{"type":"slim-cni","socket":"/run/slimlab/h2/slimd.sock","args":{"cni":{"labels":{}}}}]}`},
		{map[string]string{"app": "web", "tier": "front"},
			`{"cniVersion":"1.1.0","name":"slim","plugins":[{"type":"slim-cni","socket":"/run/slimlab/h2/slimd.sock","args":{"cni":{"labels":{"app":"web","tier":"front"}}}}]}`},
	} {
		b, err := conflist("/run/slimlab/h2/slimd.sock", tc.labels)
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
