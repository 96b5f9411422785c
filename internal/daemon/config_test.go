package daemon

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/slimnet/slim/internal/store"
	"go.etcd.io/etcd/client/pkg/v3/transport"
)

func validConfig() Config {
	return Config{
		NodeName: "h1", DataDir: "/tmp/x", Socket: "/tmp/x.sock",
		Cluster: store.ClusterConfig{
			Cluster4: netip.MustParsePrefix(DefaultCluster4), HostBits4: DefaultHostBits4,
			VNI: DefaultVNI, Port: DefaultVXLANPort,
		},
		VXLANDevice: DefaultVXLANDevice, LeaseTTL: DefaultLeaseTTL, ResyncInterval: DefaultResyncInterval,
		AgentSocket: DefaultAgentSocket, PortFirst: 20480, PortLast: 32767, PortBlockSize: DefaultPortBlockSize,
		ServiceCIDR:      netip.MustParsePrefix(DefaultServiceCIDR),
		EtcdListenClient: DefaultEtcdClient, EtcdListenPeer: DefaultEtcdPeer,
	}
}

// withTLS configures mutual TLS and the embedded etcd's https URLs.
func withTLS(c *Config) {
	c.EtcdTLS = transport.TLSInfo{TrustedCAFile: "ca.pem", CertFile: "h1.pem", KeyFile: "h1-key.pem"}
	c.EtcdListenClient, c.EtcdListenPeer = DefaultEtcdClientTLS, DefaultEtcdPeerTLS
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		mutate  func(*Config)
		wantErr string
	}{
		{"valid", func(*Config) {}, ""},
		{"upper-case name", func(c *Config) { c.NodeName = "H1" }, "node name"},
		{"name with slash", func(c *Config) { c.NodeName = "a/b" }, "node name"},
		{"empty data dir", func(c *Config) { c.DataDir = "" }, "data dir"},
		{"bad etcd url", func(c *Config) { c.EtcdEndpoints = []string{"192.168.1.1:2379"} }, "etcd endpoint"},
		{"tls embedded", withTLS, ""},
		{"tls external", func(c *Config) { withTLS(c); c.EtcdEndpoints = []string{"https://10.0.0.1:2379"} }, ""},
		{"tls external, server check only", func(c *Config) {
			c.EtcdTLS.TrustedCAFile = "ca.pem"
			c.EtcdEndpoints = []string{"https://10.0.0.1:2379"}
		}, ""},
		{"tls but plaintext endpoint", func(c *Config) { withTLS(c); c.EtcdEndpoints = []string{"http://10.0.0.1:2379"} }, "want https://, TLS is configured"},
		{"tls but plaintext listen url", func(c *Config) { withTLS(c); c.EtcdListenClient = DefaultEtcdClient }, "embedded etcd client url"},
		{"https without tls", func(c *Config) { c.EtcdEndpoints = []string{"https://10.0.0.1:2379"} }, "want http://, no TLS"},
		{"cert without key", func(c *Config) { withTLS(c); c.EtcdTLS.KeyFile = "" }, "--etcd-cert and --etcd-key go together"},
		{"embedded tls without ca", func(c *Config) { withTLS(c); c.EtcdTLS.TrustedCAFile = "" }, "embedded etcd tls"},
		{"vni zero", func(c *Config) { c.Cluster.VNI = 0 }, "vni"},
		{"vni too big", func(c *Config) { c.Cluster.VNI = 1 << 24 }, "vni"},
		{"port", func(c *Config) { c.Cluster.Port = 70000 }, "port"},
		{"v6 underlay", func(c *Config) { c.UnderlayIP = netip.MustParseAddr("fd00::1") }, "underlay"},
		{"long device", func(c *Config) { c.VXLANDevice = "a-very-long-device-name" }, "device"},
		{"short ttl", func(c *Config) { c.LeaseTTL = time.Second }, "lease ttl"},
		{"memory limit", func(c *Config) { c.MemoryLimit = 180 << 20 }, ""},
		{"tiny memory limit", func(c *Config) { c.MemoryLimit = 1 << 20 }, "memory limit"},
		{"bad plan", func(c *Config) { c.Cluster.HostBits4 = 4 }, "host prefix"},
		{"block not power of two", func(c *Config) { c.PortBlockSize = 300 }, "port block size"},
		{"range too small", func(c *Config) { c.PortLast = c.PortFirst + 300 }, "port range"},
		{"no agent socket", func(c *Config) { c.AgentSocket = "" }, "agent socket"},
		{"keeper cgroup", func(c *Config) { c.KeeperCgroup = "slim.keeper" }, ""},
		{"keeper cgroup absolute", func(c *Config) { c.KeeperCgroup = "/sys/fs/cgroup/slim" }, "keeper cgroup"},
		{"keeper cgroup above the mount", func(c *Config) { c.KeeperCgroup = "../x" }, "keeper cgroup"},
		{"keeper cgroup the root", func(c *Config) { c.KeeperCgroup = "a/.." }, "keeper cgroup"},
		{"no service cidr", func(c *Config) { c.ServiceCIDR = netip.Prefix{} }, "service cidr"},
		{"service cidr in the cluster's", func(c *Config) { c.ServiceCIDR = netip.MustParsePrefix("10.244.128.0/20") }, "overlaps"},
		{"IPv6 service cidr", func(c *Config) { c.ServiceCIDR = netip.MustParsePrefix("fd00::/112") }, "service cidr"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig()
			tc.mutate(&c)
			err := c.Validate()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.wantErr)
			}
		})
	}
}

func TestParsePortRange(t *testing.T) {
	for _, tc := range []struct {
		in          string
		first, last uint16
		ok          bool
	}{
		{"20480-32767", 20480, 32767, true},
		{"1-1", 1, 1, true},
		{"0-10", 0, 0, false},
		{"10-5", 0, 0, false},
		{"10", 0, 0, false},
		{"a-b", 0, 0, false},
		{"1-70000", 0, 0, false},
	} {
		f, l, err := ParsePortRange(tc.in)
		if (err == nil) != tc.ok || (tc.ok && (f != tc.first || l != tc.last)) {
			t.Errorf("ParsePortRange(%q) = %d, %d, %v", tc.in, f, l, err)
		}
	}
}
