package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/atomicfile"
	"github.com/slimnet/slim/internal/store"
)

// Up builds the lab cfg describes and returns when every host's slimd
// reports all the others as peers. Running it again is harmless: hosts and
// live slimds are kept, a dead slimd is restarted. A lab with a different
// plan in the same state directory is an error (Down it first).
//
// Order: the wire, then the hosts (namespace, cable, address), then h1's
// slimd with the embedded etcd; once h1 answers, the other slimds, which
// join h1's etcd, start all at once.
func Up(ctx context.Context, cfg Config) error {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return err
	}
	pr := NewProgress(cfg.Progress)
	dir := cfg.StateDir
	cgRoot, err := cgroupRoot()
	if err != nil {
		return err
	}
	binDir, err := cfg.binDir(plan{})
	if err != nil {
		return err
	}
	launcher := cfg.launcher(binDir)
	for _, bin := range []string{filepath.Join(binDir, "slimd"), filepath.Join(binDir, cniPlugin), launcher} {
		if _, err := os.Stat(bin); err != nil {
			return fmt.Errorf("%w (build slimd, slim-cni and slimctl into one directory, or pass the bin dir)", err)
		}
	}

	p, err := upPlan(cfg, binDir)
	if err != nil {
		return err
	}
	pr.Step("state in %s", dir)
	if p.TLS {
		if err := ensurePKI(dir, p); err != nil {
			return fmt.Errorf("lab certificates: %w", err)
		}
		pr.Step("certificates in %s", pkiDir(dir))
	}

	if err := ensureWire(p.MTU); err != nil {
		return fmt.Errorf("wire: %w", err)
	}
	pr.Step("wire %s: bridge %s", WireNetns, bridgeName)
	for i := 1; i <= p.Hosts; i++ {
		ip, err := hostIP(p.Underlay, i)
		if err != nil {
			return err
		}
		addr := netip.PrefixFrom(ip, p.Underlay.Bits())
		if err := ensureHost(i, addr, p.MTU); err != nil {
			return fmt.Errorf("host %s: %w", HostName(i), err)
		}
		pr.Step("host %s: netns %s, %s %s", HostName(i), HostNetns(HostName(i)), HostIface, addr)
	}

	start := func(ctx context.Context, i int) error {
		host := HostName(i)
		if pid, alive := slimdPID(cgRoot, dir, host); alive {
			pr.Step("slimd %s: running (pid %d)", host, pid)
			return nil
		}
		pid, err := startSlimd(ctx, dir, binDir, launcher, cgRoot, p, i)
		if err != nil {
			return err
		}
		pr.Step("slimd %s: started (pid %d), log %s", host, pid, slimdLogPath(dir, host))
		return nil
	}
	first := 2
	if p.EtcdMembers > 0 {
		// The store runs apart from the hosts: every slimd starts at once.
		if err := upMembers(ctx, dir, binDir, launcher, cgRoot, p, pr); err != nil {
			return err
		}
		first = 1
	} else {
		// h1 runs the etcd the others join: it must answer first.
		if err := start(ctx, 1); err != nil {
			return err
		}
		if err := waitReady(ctx, dir, cgRoot, []string{HostName(1)}, cfg.ReadyTimeout, func(api.Status) bool { return true }); err != nil {
			return err
		}
		pr.Step("slimd %s: answering", HostName(1))
		if p.TLS {
			if err := grantHosts(ctx, dir, p); err != nil {
				return err
			}
			pr.Step("etcd: authentication on, role %s for %d hosts", store.Role, p.Hosts)
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	for i := first; i <= p.Hosts; i++ {
		g.Go(func() error { return start(gctx, i) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	hosts := make([]string, p.Hosts)
	for i := range hosts {
		hosts[i] = HostName(i + 1)
	}
	want := p.Hosts - 1
	if err := waitReady(ctx, dir, cgRoot, hosts, cfg.ReadyTimeout, func(s api.Status) bool { return s.Peers >= want }); err != nil {
		return err
	}
	pr.Step("lab ready: %d hosts, each with %d peers", p.Hosts, want)
	return nil
}

// upPlan records cfg's plan in the state directory, or checks that the
// recorded one matches.
func upPlan(cfg Config, binDir string) (plan, error) {
	dir := cfg.StateDir
	want := plan{
		Hosts:       cfg.Hosts,
		Underlay:    cfg.Underlay.Masked(),
		IPv6:        cfg.IPv6,
		LeaseTTL:    cfg.LeaseTTL.String(),
		MTU:         cfg.MTU,
		TLS:         cfg.TLS,
		EtcdMembers: cfg.EtcdMembers,
		ClusterCIDR: cfg.ClusterCIDR, PortBlockSize: cfg.PortBlockSize, SlimdMemoryLimit: cfg.SlimdMemoryLimit,
		BinDir:  binDir,
		Created: time.Now().UTC().Truncate(time.Second),
	}
	have, err := loadPlan(dir)
	switch {
	case errors.Is(err, ErrNoLab):
		// The names are machine-wide: a lab recorded elsewhere owns them.
		if isNetns(NetnsPath(WireNetns)) {
			return want, fmt.Errorf("a lab exists whose state is not in %s (remove it with slimctl lab down)", dir)
		}
	case err != nil:
		return want, err
	default:
		if have.Hosts != want.Hosts || have.Underlay != want.Underlay || have.IPv6 != want.IPv6 ||
			have.LeaseTTL != want.LeaseTTL || have.MTU != want.MTU || have.TLS != want.TLS || have.EtcdMembers != want.EtcdMembers ||
			have.ClusterCIDR != want.ClusterCIDR || have.PortBlockSize != want.PortBlockSize || have.SlimdMemoryLimit != want.SlimdMemoryLimit {
			return want, fmt.Errorf("the lab in %s was made with %d hosts, underlay %s, ipv6 %t, lease ttl %s, mtu %d, tls %t, %d etcd members (slimctl lab down first to change it)",
				dir, have.Hosts, have.Underlay, have.IPv6, have.LeaseTTL, have.MTU, have.TLS, have.EtcdMembers)
		}
		want.Created = have.Created
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return want, err
	}
	b, err := json.MarshalIndent(want, "", "  ")
	if err != nil {
		return want, err
	}
	return want, atomicfile.Write(planPath(dir), append(b, '\n'), 0o644)
}

// UpAgain is Up with the plan the lab in cfg.StateDir was made with: it
// starts again whatever of it is down.
func UpAgain(ctx context.Context, cfg Config) error {
	p, err := loadPlan(cfg.stateDir())
	if err != nil {
		return err
	}
	ttl, err := time.ParseDuration(p.LeaseTTL)
	if err != nil {
		return fmt.Errorf("lab plan: lease ttl %q: %w", p.LeaseTTL, err)
	}
	cfg.Hosts, cfg.Underlay, cfg.IPv6, cfg.TLS, cfg.LeaseTTL, cfg.MTU = p.Hosts, p.Underlay, p.IPv6, p.TLS, ttl, p.MTU
	cfg.EtcdMembers, cfg.ClusterCIDR, cfg.PortBlockSize, cfg.SlimdMemoryLimit = p.EtcdMembers, p.ClusterCIDR, p.PortBlockSize, p.SlimdMemoryLimit
	if cfg.BinDir == "" {
		cfg.BinDir = p.BinDir
	}
	return Up(ctx, cfg)
}
