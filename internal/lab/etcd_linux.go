package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/atomicfile"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
)

// memberPID returns the pid of etcd member name if it is running.
func memberPID(cgRoot, dir, name string) (int, bool) {
	return pidIn(MemberCgroup(cgRoot, name), memberPIDPath(dir, name))
}

// upMembers cables the etcd members to the wire and starts those not
// running, all at once: a new cluster needs a quorum to serve.
func upMembers(ctx context.Context, dir, binDir, launcher, cgRoot string, p plan, pr *Progress) error {
	for m := 1; m <= p.EtcdMembers; m++ {
		name := MemberName(m)
		ip, err := memberIP(p.Underlay, m)
		if err != nil {
			return err
		}
		if err := ensureNode(name, netip.PrefixFrom(ip, p.Underlay.Bits()), p.MTU); err != nil {
			return fmt.Errorf("etcd member %s: %w", name, err)
		}
		if pid, alive := memberPID(cgRoot, dir, name); alive {
			pr.Step("etcd %s: running (pid %d)", name, pid)
			continue
		}
		pid, err := startMember(ctx, dir, binDir, launcher, cgRoot, p, m)
		if err != nil {
			return err
		}
		pr.Step("etcd %s: started (pid %d) on %s, log %s", name, pid, ip, memberLogPath(dir, name))
	}
	return nil
}

func startMember(ctx context.Context, dir, binDir, launcher, cgRoot string, p plan, m int) (int, error) {
	name := MemberName(m)
	if err := os.MkdirAll(memberDataPath(dir, name), 0o700); err != nil {
		return 0, err
	}
	cg := MemberCgroup(cgRoot, name)
	if err := ensureCgroup(cg); err != nil {
		return 0, err
	}
	args, err := memberArgs(dir, p, m)
	if err != nil {
		return 0, err
	}
	log := memberLogPath(dir, name)
	if err := appendFile(log, fmt.Sprintf("--- slimctl lab: starting etcd %s at %s\n", name, time.Now().Format(time.RFC3339))); err != nil {
		return 0, err
	}
	pid, err := startDetached(ctx, launcher, LaunchSpec{
		Netns:   NetnsPath(HostNetns(name)),
		Cgroup:  cg,
		Log:     log,
		Command: append([]string{filepath.Join(binDir, "slimd")}, args...),
	})
	if err != nil {
		return 0, fmt.Errorf("start etcd %s: %w", name, err)
	}
	return pid, atomicfile.Write(memberPIDPath(dir, name), []byte(strconv.Itoa(pid)+"\n"), 0o644)
}

// StopEtcd sends sig to etcd member name of a lab with external members
// and waits until it has exited; Up starts it again. Stopping a member
// that is not running succeeds.
func StopEtcd(ctx context.Context, cfg Config, name string, sig unix.Signal) error {
	dir := cfg.stateDir()
	p, err := loadPlan(dir)
	if err != nil {
		return err
	}
	if _, err := p.memberOf(name); err != nil {
		return err
	}
	cgRoot, err := cgroupRoot()
	if err != nil {
		return err
	}
	pid, alive := memberPID(cgRoot, dir, name)
	if !alive {
		return nil
	}
	return stopProcess(ctx, pid, sig, "etcd "+name)
}

// EtcdLeader names the member that leads the lab's external etcd cluster.
func EtcdLeader(ctx context.Context, cfg Config) (string, error) {
	p, err := loadPlan(cfg.stateDir())
	if err != nil {
		return "", err
	}
	for m := 1; m <= p.EtcdMembers; m++ {
		ep, _, err := memberURLs(p.Underlay, m)
		if err != nil {
			return "", err
		}
		cli, err := clientv3.New(etcdConfigIn(MemberName(m), []string{ep}, 2*time.Second))
		if err != nil {
			return "", err
		}
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := cli.Status(sctx, ep)
		cancel()
		cli.Close()
		if err == nil && st.Leader != 0 && st.Leader == st.Header.MemberId {
			return MemberName(m), nil
		}
	}
	return "", fmt.Errorf("no etcd member of %s leads", filepath.Clean(cfg.stateDir()))
}

// EtcdClientConfig is a client configuration for the lab's external etcd
// cluster from outside the lab: connections are made in the first
// member's namespace, which the wire joins to every member.
func EtcdClientConfig(cfg Config) (clientv3.Config, error) {
	p, err := loadPlan(cfg.stateDir())
	if err != nil {
		return clientv3.Config{}, err
	}
	if p.EtcdMembers == 0 {
		return clientv3.Config{}, errors.New("the lab has no external etcd members (slimctl lab up --etcd-members 3)")
	}
	eps, err := p.etcdEndpoints()
	if err != nil {
		return clientv3.Config{}, err
	}
	return etcdConfigIn(MemberName(1), eps, 5*time.Second), nil
}

// etcdConfigIn is a client configuration for etcd endpoints that only
// the lab's machines reach: its connections are made in machine name's
// namespace.
func etcdConfigIn(name string, endpoints []string, dialTimeout time.Duration) clientv3.Config {
	return clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: dialTimeout,
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(dialIn(NetnsPath(HostNetns(name))))},
		Logger:      zap.NewNop(),
	}
}

// WaitHosts waits until the status of each host's slimd satisfies ok; it
// fails when a slimd exits or timeout passes, with the tail of its log.
func WaitHosts(ctx context.Context, cfg Config, hosts []string, timeout time.Duration, ok func(api.Status) bool) error {
	cgRoot, err := cgroupRoot()
	if err != nil {
		return err
	}
	return waitReady(ctx, cfg.stateDir(), cgRoot, hosts, timeout, ok)
}

// SlimdPID is the pid of host's slimd, if it runs.
func SlimdPID(cfg Config, host string) (int, bool) {
	cgRoot, err := cgroupRoot()
	if err != nil {
		return 0, false
	}
	return slimdPID(cgRoot, cfg.stateDir(), host)
}
