package lab

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/slimnet/slim/internal/atomicfile"
)

func TestValidateName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"web", true},
		{"a", true},
		{"0", true},
		{"web-1", true},
		{"abcdefghij0123456789", true},
		{"abcdefghij01234567890", false}, // 21 characters
		{"", false},
		{"-web", false},
		{"Web", false},
		{"web_1", false},
		{"web.1", false},
		{"web/1", false},
		{"wéb", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := ValidateName(tc.name); (err == nil) != tc.ok {
				t.Errorf("ValidateName(%q) = %v, want ok %t", tc.name, err, tc.ok)
			}
		})
	}
}

func TestHostIndex(t *testing.T) {
	for in, want := range map[string]int{
		"h1": 1, "h12": 12, "h250": 250,
		"h0": 0, "h01": 0, "h": 0, "1": 0, "h1a": 0, "h-1": 0, "web": 0, "H1": 0,
	} {
		if got := hostIndex(in); got != want {
			t.Errorf("hostIndex(%q) = %d, want %d", in, got, want)
		}
	}
}

func TestHostIP(t *testing.T) {
	for _, tc := range []struct {
		underlay string
		i        int
		want     string // "" for an error
	}{
		{"192.168.77.0/24", 1, "192.168.77.1"},
		{"192.168.77.0/24", 254, "192.168.77.254"},
		{"192.168.77.0/24", 255, ""}, // broadcast
		{"192.168.77.0/24", 0, ""},
		{"192.168.77.5/24", 3, "192.168.77.3"}, // host bits ignored
		{"10.1.0.0/16", 300, "10.1.1.44"},
		{"10.1.0.0/30", 2, "10.1.0.2"},
		{"10.1.0.0/30", 3, ""},
		{"10.1.0.0/31", 1, ""},
	} {
		got, err := hostIP(netip.MustParsePrefix(tc.underlay), tc.i)
		if tc.want == "" {
			if err == nil {
				t.Errorf("hostIP(%s, %d) = %s, want an error", tc.underlay, tc.i, got)
			}
			continue
		}
		if err != nil || got.String() != tc.want {
			t.Errorf("hostIP(%s, %d) = %s, %v; want %s", tc.underlay, tc.i, got, err, tc.want)
		}
	}
}

func TestNames(t *testing.T) {
	if got := HostNetns(HostName(3)); got != "slimlab-h3" {
		t.Errorf("host netns %q", got)
	}
	if got := ContainerNetns("web"); got != "slimlab-c-web" {
		t.Errorf("container netns %q", got)
	}
	if got := ContainerID("web"); got != "slimlab-web" {
		t.Errorf("container id %q", got)
	}
	if got := ContainerCgroup("/sys/fs/cgroup/unified", "h2", "web"); got != "/sys/fs/cgroup/unified/slimlab/h2/c-web" {
		t.Errorf("container cgroup %q", got)
	}
	if got := SlimdCgroup("/sys/fs/cgroup", "h1"); got != "/sys/fs/cgroup/slimlab/h1/slimd" {
		t.Errorf("slimd cgroup %q", got)
	}
}

func TestSlimdArgs(t *testing.T) {
	p := plan{Hosts: 3, Underlay: DefaultUnderlay, LeaseTTL: "10s"}
	common := func(host string) []string {
		return []string{
			"--node-name", host,
			"--data-dir", "/run/slimlab/" + host + "/data",
			"--socket", "/run/slimlab/" + host + "/slimd.sock",
			"--agent-socket", "/run/slimlab/" + host + "/agent.sock",
			"--bpf-pin-dir", "/sys/fs/bpf/slimlab/" + host,
			"--keeper-cgroup", "slimlab/" + host + "/keeper",
			"--metrics-addr", "127.0.0.1:9612",
			"--pprof",
			"--underlay-iface", "eth0",
			"--lease-ttl", "10s",
			"--resync-interval", "5s",
			"--log-level", "debug",
		}
	}
	for _, tc := range []struct {
		i    int
		ipv6 bool
		tls  bool
		want []string
	}{
		{1, false, false, append(common("h1"), "--etcd-listen-client", "http://192.168.77.1:2379", "--etcd-listen-peer", "http://192.168.77.1:2380")},
		{2, false, false, append(common("h2"), "--etcd-endpoints", "http://192.168.77.1:2379")},
		{3, true, false, append(common("h3"), "--etcd-endpoints", "http://192.168.77.1:2379", "--cluster-cidr6", "fd5a:11::/48")},
		{1, false, true, append(common("h1"), "--etcd-cacert", "/run/slimlab/pki/ca.pem", "--etcd-cert", "/run/slimlab/pki/h1.pem", "--etcd-key", "/run/slimlab/pki/h1-key.pem",
			"--etcd-listen-client", "https://192.168.77.1:2379", "--etcd-listen-peer", "https://192.168.77.1:2380")},
		{2, false, true, append(common("h2"), "--etcd-cacert", "/run/slimlab/pki/ca.pem", "--etcd-cert", "/run/slimlab/pki/h2.pem", "--etcd-key", "/run/slimlab/pki/h2-key.pem",
			"--etcd-endpoints", "https://192.168.77.1:2379")},
	} {
		p.IPv6, p.TLS = tc.ipv6, tc.tls
		got, err := slimdArgs("/run/slimlab", p, tc.i)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("host %d:\n got %q\nwant %q", tc.i, got, tc.want)
		}
	}
	p.IPv6, p.TLS, p.SlimdMemoryLimit, p.PortBlockSize = false, false, "180Mi", 64
	got, err := slimdArgs("/run/slimlab", p, 2)
	if err != nil {
		t.Fatal(err)
	}
	if want := append(common("h2"), "--etcd-endpoints", "http://192.168.77.1:2379", "--memory-limit", "180Mi", "--port-block-size", "64"); !slices.Equal(got, want) {
		t.Errorf("with a memory limit:\n got %q\nwant %q", got, want)
	}
}

func TestConfigValidate(t *testing.T) {
	good := Config{Hosts: 3}.withDefaults()
	if err := good.validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	if good.StateDir != DefaultStateDir || good.Underlay != DefaultUnderlay || good.LeaseTTL != DefaultLeaseTTL || good.MTU != DefaultMTU {
		t.Errorf("defaults not applied: %+v", good)
	}
	for name, mod := range map[string]func(*Config){
		"no hosts":      func(c *Config) { c.Hosts = 0 },
		"many hosts":    func(c *Config) { c.Hosts = MaxHosts + 1 },
		"small subnet":  func(c *Config) { c.Underlay = netip.MustParsePrefix("10.0.0.0/30") },
		"ipv6 underlay": func(c *Config) { c.Underlay = netip.MustParsePrefix("fd00::/64") },
		"short lease":   func(c *Config) { c.LeaseTTL = time.Millisecond },
		"small mtu":     func(c *Config) { c.MTU = 576 },
		"relative dir":  func(c *Config) { c.StateDir = "run/slimlab" },
		"long dir":      func(c *Config) { c.StateDir = "/" + strings.Repeat("d", 100) },
	} {
		c := good
		mod(&c)
		if err := c.validate(); err == nil {
			t.Errorf("%s: validate accepted %+v", name, c)
		}
	}
}

func TestLoadPlan(t *testing.T) {
	dir := t.TempDir()
	if _, err := loadPlan(dir); !errors.Is(err, ErrNoLab) {
		t.Fatalf("empty dir: %v, want ErrNoLab", err)
	}
	if err := atomicfile.Write(planPath(dir), []byte(`{"hosts":0}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := loadPlan(dir); err == nil || errors.Is(err, ErrNoLab) {
		t.Fatalf("bad plan: %v, want a parse error", err)
	}
	want := plan{Hosts: 2, Underlay: DefaultUnderlay, LeaseTTL: "10s", MTU: 1500, BinDir: "/bin"}
	if err := atomicfile.Write(planPath(dir), []byte(`{"hosts":2,"underlay":"192.168.77.0/24","leaseTTL":"10s","mtu":1500,"binDir":"/bin"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := loadPlan(dir)
	if err != nil || got != want {
		t.Fatalf("loadPlan = %+v, %v; want %+v", got, err, want)
	}
	if _, err := got.hostOf("h3"); !errors.Is(err, ErrNotFound) {
		t.Errorf("hostOf(h3) = %v, want ErrNotFound", err)
	}
	if i, err := got.hostOf("h2"); i != 2 || err != nil {
		t.Errorf("hostOf(h2) = %d, %v", i, err)
	}
}

func TestEtcdMemberArgs(t *testing.T) {
	p := plan{Hosts: 2, Underlay: DefaultUnderlay, LeaseTTL: "10s", EtcdMembers: 3}
	got, err := memberArgs("/run/slimlab", p, 2)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"etcd", "--name", "e2", "--data-dir", "/run/slimlab/e2/data",
		"--listen-client", "http://192.168.77.253:2379", "--listen-peer", "http://192.168.77.253:2380",
		"--initial-cluster", "e1=http://192.168.77.254:2380,e2=http://192.168.77.253:2380,e3=http://192.168.77.252:2380"}
	if !slices.Equal(got, want) {
		t.Errorf("member args:\n got %q\nwant %q", got, want)
	}
	args, err := slimdArgs("/run/slimlab", p, 1)
	if err != nil {
		t.Fatal(err)
	}
	if i := slices.Index(args, "--etcd-endpoints"); i < 0 || args[i+1] != "http://192.168.77.254:2379,http://192.168.77.253:2379,http://192.168.77.252:2379" {
		t.Errorf("h1 with external members: %q", args)
	}
	if slices.Contains(args, "--etcd-listen-client") {
		t.Errorf("h1 embeds etcd although the lab has external members: %q", args)
	}
	bad := Config{Hosts: 2, EtcdMembers: 3, TLS: true}.withDefaults()
	if err := bad.validate(); err == nil {
		t.Error("tls with external members accepted")
	}
	crowded := Config{Hosts: 250, EtcdMembers: 5}.withDefaults()
	if err := crowded.validate(); err == nil {
		t.Error("hosts overlapping the members' addresses accepted")
	}
}
