package daemon

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/bpf"
	"github.com/slimnet/slim/internal/cgroupfs"
	"github.com/slimnet/slim/internal/nat"
	"github.com/slimnet/slim/internal/seccomp"
)

// check answers GET /v1/check: which protections and components are on.
func (d *Daemon) check(ctx context.Context) []api.Check {
	var out []api.Check
	add := func(name string, ok, problem bool, detail string, args ...any) {
		out = append(out, api.Check{Name: name, OK: ok, Problem: !ok && problem, Detail: fmt.Sprintf(detail, args...)})
	}
	st, _ := (&backend{d: d}).Status(ctx)
	reachable := time.Since(st.StoreContact) <= d.cfg.LeaseTTL*2/3
	add("store", st.StoreSynced && reachable, true, "caches synced: %t, last answer %s ago, %d keys, etcd %s",
		st.StoreSynced, time.Since(st.StoreContact).Truncate(time.Second), st.StoreKeys, strings.Join(st.EtcdEndpoints, ","))
	add("overlay", st.Peers == st.KnownHosts-1, true, "%d of %d remote hosts programmed on %s", st.Peers, max(0, st.KnownHosts-1), d.cfg.VXLANDevice)
	f, err := bpf.Probe()
	switch {
	case err != nil:
		add("bpf features", false, true, "probe inconclusive: %v", err)
	default:
		add("bpf features", f.Usable(), false, "sock_addr %t, sk_storage %t, sockopt %t, link %t, current cgroup %t", f.SockAddr, f.SkStorage, f.Sockopt, f.Link, f.CurrentCgroup)
		add("bpf lsm", f.LSM, false, "a second guard line where BPF LSM programs load: %t", f.LSM)
	}
	ferr := seccomp.ProbeFetch()
	add("socket fetch", ferr == nil, true, "pidfd_open(PIDFD_THREAD) and pidfd_getfd on a supervised thread's socket: %v", errText(ferr))
	add("address rewrite and guard", d.bpf != nil, false, "BPF programs attached to slimd's cgroup %s: %t (without them the fast path stays off)", d.cgroup, d.bpf != nil)
	fp := d.fastPathStatus()
	add("fast path", fp.Active || !fp.Enabled, false, "cluster switch %s, active here %t, %d supervised process trees", onOff(fp.Enabled), fp.Active, fp.Sessions)
	where, kerr := d.checkKeeper()
	add("fd keeper", kerr == nil, true, "holds notification fds across slimd restarts: %v%s", errText(kerr), where)
	add("journal", d.journal != nil, true, "in-flight notifications journaled in %s", d.cfg.DataDir)
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_reserved_ports")
	want := fmt.Sprintf("%d-%d", d.cfg.PortFirst, d.cfg.PortLast)
	add("reserved ports", err == nil && strings.Contains(string(b), want), true, "%s in net.ipv4.ip_local_reserved_ports", want)
	rules, err := d.tables.nat.Rules()
	add("dnat table", err == nil, true, "nftables table inet %s, %d DNAT map entries (%v)", nat.TableName, len(rules), errText(err))
	return out
}

// checkKeeper pings the keeper (read-only: a check never starts one)
// and, with --keeper-cgroup, checks that it lives there: in slimd's
// cgroup, stopping slimd's container would kill it.
func (d *Daemon) checkKeeper() (where string, err error) {
	c, ok := d.keeper.current()
	if !ok {
		return "", fmt.Errorf("not running")
	}
	if err := c.Ping(); err != nil {
		return "", err
	}
	cg, err := cgroupfs.Of(c.PID())
	if err != nil {
		return fmt.Sprintf(" (its cgroup: %v)", err), nil
	}
	if d.keeper.cgroup != "" && cg != d.keeper.cgroup {
		return "", fmt.Errorf("in cgroup %s, not in --keeper-cgroup's %s: stopping slimd's container would kill it", cg, d.keeper.cgroup)
	}
	return fmt.Sprintf(" (pid %d, cgroup %s)", c.PID(), cg), nil
}

func errText(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}
