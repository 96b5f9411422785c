package cni

import (
	"errors"
	"fmt"
	"maps"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/slimnet/slim/internal/api"
)

// conf builds a network configuration for tests from extra top-level
// fields.
func conf(extra string) []byte {
	s := `{"cniVersion":"1.1.0","name":"slim","type":"slim-cni"`
	if extra != "" {
		s += "," + extra
	}
	return []byte(s + "}")
}

func errCode(err error) uint {
	var e *types.Error
	if errors.As(err, &e) {
		return e.Code
	}
	return 0
}

func TestLoadConfig(t *testing.T) {
	tests := []struct {
		name   string
		data   string
		code   uint // 0: no error
		socket string
		labels map[string]string
	}{
		{name: "minimal", data: string(conf("")), socket: api.DefaultSocket},
		{name: "socket", data: string(conf(`"socket":"/tmp/s.sock"`)), socket: "/tmp/s.sock"},
		{name: "version 1.0.0", data: `{"cniVersion":"1.0.0","name":"n","type":"slim-cni"}`, socket: api.DefaultSocket},
		{name: "labels map", data: string(conf(`"args":{"cni":{"labels":{"app":"web","tier":"front"}}}`)),
			socket: api.DefaultSocket, labels: map[string]string{"app": "web", "tier": "front"}},
		{name: "labels list", data: string(conf(`"args":{"cni":{"labels":[{"key":"app","value":"web"}]}}`)),
			socket: api.DefaultSocket, labels: map[string]string{"app": "web"}},
		{name: "other args ignored", data: string(conf(`"args":{"cni":{"ips":["10.0.0.1"]},"foo":1}`)), socket: api.DefaultSocket},
		{name: "spec fields", data: string(conf(`"dns":{"nameservers":["10.96.0.10"]},"runtimeConfig":{"x":1},"capabilities":{"portMappings":true},"ipMasq":false`)),
			socket: api.DefaultSocket},
		{name: "runtime cni.dev keys", data: string(conf(`"cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}],"cni.dev/future":true`)),
			socket: api.DefaultSocket},
		{name: "prevResult", data: string(conf(`"prevResult":{"cniVersion":"1.1.0","interfaces":[{"name":"eth0"}],"ips":[{"address":"10.1.0.2/32","interface":0}]}`)),
			socket: api.DefaultSocket},

		{name: "not json", data: `{"cniVersion":`, code: types.ErrDecodingFailure},
		{name: "array", data: `[1,2]`, code: types.ErrDecodingFailure},
		{name: "socket wrong type", data: string(conf(`"socket":5`)), code: types.ErrDecodingFailure},
		{name: "labels wrong type", data: string(conf(`"args":{"cni":{"labels":"app=web"}}`)), code: types.ErrDecodingFailure},
		{name: "labels list duplicate", data: string(conf(`"args":{"cni":{"labels":[{"key":"a","value":"1"},{"key":"a","value":"2"}]}}`)),
			code: types.ErrDecodingFailure},
		{name: "bad prevResult", data: string(conf(`"prevResult":{"ips":[{"address":"nonsense"}]}`)), code: types.ErrDecodingFailure},
		{name: "unknown field", data: string(conf(`"sokcet":"/run/x.sock"`)), code: types.ErrUnsupportedField},
		{name: "ipam", data: string(conf(`"ipam":{"type":"host-local"}`)), code: types.ErrUnsupportedField},
		{name: "ipMasq", data: string(conf(`"ipMasq":true`)), code: types.ErrUnsupportedField},
		{name: "unknown type", data: `{"cniVersion":"1.1.0","name":"slim","type":"bridge"}`, code: types.ErrInvalidNetworkConfig},
		{name: "no name", data: `{"cniVersion":"1.1.0","type":"slim-cni"}`, code: types.ErrInvalidNetworkConfig},
		{name: "bad name", data: `{"cniVersion":"1.1.0","name":"a b","type":"slim-cni"}`, code: types.ErrInvalidNetworkConfig},
		{name: "relative socket", data: string(conf(`"socket":"slimd.sock"`)), code: types.ErrInvalidNetworkConfig},
		{name: "bad label", data: string(conf(`"args":{"cni":{"labels":{"-bad":"x"}}}`)), code: types.ErrInvalidNetworkConfig},
		{name: "bad port name", data: string(conf(`"args":{"cni":{"ports":[{"name":"HTTP","port":80,"protocol":"TCP"}]}}`)), code: types.ErrInvalidNetworkConfig},
		{name: "bad port protocol", data: string(conf(`"args":{"cni":{"ports":[{"name":"http","port":80,"protocol":"ICMP"}]}}`)), code: types.ErrInvalidNetworkConfig},
		{name: "old version", data: `{"cniVersion":"0.4.0","name":"slim","type":"slim-cni"}`, code: types.ErrIncompatibleCNIVersion},
		{name: "no version", data: `{"name":"slim","type":"slim-cni"}`, code: types.ErrIncompatibleCNIVersion},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := loadConfig([]byte(tt.data))
			if tt.code != 0 {
				if got := errCode(err); got != tt.code {
					t.Fatalf("error %v (code %d), want code %d", err, got, tt.code)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Socket != tt.socket {
				t.Errorf("socket %q, want %q", c.Socket, tt.socket)
			}
			if !maps.Equal(c.labels(), tt.labels) {
				t.Errorf("labels %v, want %v", c.labels(), tt.labels)
			}
		})
	}
}

func TestLoadConfigUnknownFieldMessage(t *testing.T) {
	_, err := loadConfig(conf(`"sokcet":"/run/x.sock","zzz":1`))
	// The spec wants the key and value of the unsupported field.
	if err == nil || !strings.Contains(err.Error(), `sokcet="/run/x.sock"`) || !strings.Contains(err.Error(), "zzz=1") {
		t.Fatalf("error %v: want both fields with their values", err)
	}
}

func TestLoadConfigGCAttachments(t *testing.T) {
	for _, key := range []string{"cni.dev/valid-attachments", gcAttachmentsFallback} {
		t.Run(key, func(t *testing.T) {
			c, err := loadConfig(conf(fmt.Sprintf(`%q:[{"containerID":"c1","ifname":"eth0"}]`, key)))
			if err != nil {
				t.Fatal(err)
			}
			want := []types.GCAttachment{{ContainerID: "c1", IfName: "eth0"}}
			if len(c.ValidAttachments) != 1 || c.ValidAttachments[0] != want[0] {
				t.Fatalf("valid attachments %v, want %v", c.ValidAttachments, want)
			}
		})
	}
}

func TestEndpointLabels(t *testing.T) {
	tests := []struct {
		name    string
		conf    string
		cniArgs string
		want    map[string]string
		code    uint
	}{
		{name: "none", conf: "", want: nil},
		{name: "config only", conf: `"args":{"cni":{"labels":{"app":"web"}}}`, want: map[string]string{"app": "web"}},
		{name: "pod", cniArgs: "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=1-2",
			want: map[string]string{LabelPodNamespace: "default", LabelPodName: "web-0"}},
		{name: "pod wins", conf: `"args":{"cni":{"labels":{"app":"web","io.kubernetes.pod.name":"x"}}}`, cniArgs: "K8S_POD_NAME=web-0",
			want: map[string]string{"app": "web", LabelPodName: "web-0"}},
		{name: "unknown arg ignored", cniArgs: "IgnoreUnknown=true;FOO=bar", want: nil},
		{name: "unknown arg", cniArgs: "FOO=bar", code: types.ErrInvalidEnvironmentVariables},
		{name: "malformed args", cniArgs: "K8S_POD_NAME", code: types.ErrInvalidEnvironmentVariables},
		{name: "long pod name", cniArgs: "K8S_POD_NAME=" + strings.Repeat("a", 253), want: map[string]string{LabelPodName: strings.Repeat("a", 253)}},
		{name: "bad pod name", cniArgs: "K8S_POD_NAME=" + strings.Repeat("a", 254), code: types.ErrInvalidEnvironmentVariables},
		{name: "bad pod namespace", cniArgs: "K8S_POD_NAMESPACE=Shop_1", code: types.ErrInvalidEnvironmentVariables},
		{name: "too many", conf: `"args":{"cni":{"labels":{` + manyLabels(64) + `}}}`, cniArgs: "K8S_POD_NAME=x",
			code: types.ErrInvalidNetworkConfig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := loadConfig(conf(tt.conf))
			if err != nil {
				t.Fatal(err)
			}
			got, err := endpointLabels(c, tt.cniArgs)
			if tt.code != 0 {
				if errCode(err) != tt.code {
					t.Fatalf("error %v, want code %d", err, tt.code)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(got, tt.want) {
				t.Fatalf("labels %v, want %v", got, tt.want)
			}
		})
	}
}

func manyLabels(n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"k%d":"v"`, i)
	}
	return b.String()
}

func FuzzLoadConfig(f *testing.F) {
	f.Add(conf(""))
	f.Add(conf(`"args":{"cni":{"labels":[{"key":"a","value":"b"}]}}`))
	f.Add(conf(`"prevResult":{"cniVersion":"1.1.0","ips":[{"address":"10.1.0.2/32"}]}`))
	f.Add([]byte(`{"cniVersion":"1.1.0","name":"x","type":"slim-cni","socket":"/a"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := loadConfig(data)
		if err != nil {
			if errCode(err) == 0 {
				t.Fatalf("error without a CNI code: %v", err)
			}
			return
		}
		if c.Type != PluginType || c.Socket == "" || api.ValidateLabels(c.labels()) != nil {
			t.Fatalf("accepted invalid config %+v", c)
		}
	})
}

func TestHostVethName(t *testing.T) {
	a := hostVethName("0123456789abcdef", "eth0")
	if len(a) != 15 || !isHostVethName(a) {
		t.Fatalf("hostVethName = %q: want slim + 11 hex digits", a)
	}
	if b := hostVethName("0123456789abcdef", "eth0"); b != a {
		t.Fatalf("not deterministic: %q, %q", a, b)
	}
	// The separator keeps ("ab", "c") and ("a", "bc") apart.
	if hostVethName("ab", "c") == hostVethName("a", "bc") || hostVethName("c1", "eth0") == hostVethName("c1", "eth1") {
		t.Fatal("distinct attachments share a name")
	}
	for _, name := range []string{"slim", "slim0123456789", "slim0123456789ab", "slim0123456789A", "veth0123456789a", "slimd"} {
		if isHostVethName(name) {
			t.Errorf("isHostVethName(%q) = true", name)
		}
	}
}

func TestCNIError(t *testing.T) {
	tests := []struct {
		err  error
		code uint
	}{
		{fmt.Errorf("status: %w", api.ErrUnavailable), types.ErrTryAgainLater},
		{&api.StatusError{Code: 507, Msg: "full"}, types.ErrTryAgainLater},
		{&api.StatusError{Code: 400, Msg: "bad"}, types.ErrInvalidNetworkConfig},
		{errors.New("boom"), types.ErrInternal},
		{fmt.Errorf("ctx: %w", types.NewError(types.ErrInvalidNetNS, "gone", "")), types.ErrInvalidNetNS},
		{errors.Join(types.NewError(types.ErrInvalidNetNS, "gone", ""), errors.New("rollback")), types.ErrInvalidNetNS},
	}
	for _, tt := range tests {
		if got := cniError(tt.err); got.Code != tt.code || !strings.Contains(got.Msg, tt.err.Error()) {
			t.Errorf("cniError(%v) = %d %q, want code %d", tt.err, got.Code, got.Msg, tt.code)
		}
	}
}
