package main

import (
	"bufio"
	"errors"
	"flag"
	"os"
	"strings"
	"testing"
)

// The example systemd unit starts slimd with flags slimd takes, and stops
// only slimd, not its keeper.
func TestSystemdUnit(t *testing.T) {
	f, err := os.Open("../../examples/systemd/slimd.service")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	keys := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			keys[k] = v
		}
	}
	if keys["KillMode"] != "process" {
		t.Errorf("KillMode=%q: the keeper must survive slimd's stop (process)", keys["KillMode"])
	}
	args := strings.Fields(strings.ReplaceAll(keys["ExecStart"], "%H", "node-1"))
	if len(args) == 0 || !strings.HasSuffix(args[0], "/slimd") {
		t.Fatalf("ExecStart=%q: want slimd", keys["ExecStart"])
	}
	cfg, err := config(args[1:])
	if err != nil {
		t.Fatalf("slimd rejects the unit's flags: %v", err)
	}
	if cfg.NodeName != "node-1" || cfg.MetricsAddr == "" {
		t.Errorf("config %+v", cfg)
	}
}

func TestConfigTLSDefaults(t *testing.T) {
	cfg, err := config([]string{"--node-name", "h1", "--etcd-cacert", "ca.pem", "--etcd-cert", "c.pem", "--etcd-key", "k.pem"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.EtcdListenClient != "https://127.0.0.1:2379" || cfg.EtcdListenPeer != "https://127.0.0.1:2380" {
		t.Errorf("embedded etcd urls with TLS: %s %s", cfg.EtcdListenClient, cfg.EtcdListenPeer)
	}
	cfg, err = config([]string{"--node-name", "h1", "--etcd-cacert", "ca.pem", "--etcd-endpoints", "https://10.0.0.1:2379,https://10.0.0.2:2379"})
	if err != nil || len(cfg.EtcdEndpoints) != 2 || cfg.EtcdTLS.TrustedCAFile != "ca.pem" {
		t.Errorf("external etcd, server-checked TLS: %v %+v", err, cfg)
	}
}

func TestConfigMemoryLimit(t *testing.T) {
	cfg, err := config([]string{"--node-name", "h1", "--memory-limit", "180Mi"})
	if err != nil || cfg.MemoryLimit != 180<<20 {
		t.Errorf("--memory-limit 180Mi: %d, %v", cfg.MemoryLimit, err)
	}
}

func TestConfigRejects(t *testing.T) {
	for _, args := range [][]string{
		{"--port-range", "30000-20000"},
		{"--cluster-cidr", "nonsense"},
		{"--log-level", "loud"},
		{"--port-block-size", "65536"},
		{"extra"},
		{"--no-such-flag"},
		{"--etcd-cert", "c.pem", "--etcd-key", "k.pem"}, // the embedded etcd needs the CA too
		{"--etcd-cacert", "ca.pem", "--etcd-cert", "c.pem", "--etcd-key", "k.pem", "--etcd-listen-client", "http://127.0.0.1:2379"},
		{"--etcd-endpoints", "https://10.0.0.1:2379"},
		{"--memory-limit", "lots"},
		{"--memory-limit", "-1Mi"},
	} {
		if _, err := config(args); err == nil || errors.Is(err, flag.ErrHelp) {
			t.Errorf("%q: accepted (%v)", args, err)
		}
	}
	if _, err := config([]string{"-h"}); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: %v", err)
	}
}
