//go:build linux

package lab_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sys/unix"

	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/lab"
	"github.com/slimnet/slim/internal/lab/labtest"
)

// cniRig drives the real slim-cni through libcni, as a runtime does,
// against host h1 of a lab.
type cniRig struct {
	t    *testing.T
	l    *labtest.Lab
	host ns.NetNS
	cni  *libcni.CNIConfig
}

// newCNILab builds a one-host lab (with opts) and its rig, and a context
// that ends after timeout.
func newCNILab(t *testing.T, timeout time.Duration, opts ...labtest.Option) (*cniRig, context.Context) {
	labtest.Require(t)
	l := labtest.New(t, append([]labtest.Option{labtest.Hosts(1)}, opts...)...)
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	t.Cleanup(cancel)
	return newCNIRig(t, l), ctx
}

func newCNIRig(t *testing.T, l *labtest.Lab) *cniRig {
	h, err := ns.GetNS(lab.NetnsPath(lab.HostNetns("h1")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return &cniRig{t: t, l: l, host: h, cni: libcni.NewCNIConfigWithCacheDir([]string{l.Config.BinDir}, t.TempDir(), nil)}
}

// list is a configuration list of version ver: slim-cni, then extra
// plugins chained after it.
func (r *cniRig) list(ver string, extra ...string) *libcni.NetworkConfigList {
	r.t.Helper()
	plugins := append([]string{fmt.Sprintf(`{"type":"slim-cni","socket":%q}`, lab.SocketPath(r.l.Config, "h1"))}, extra...)
	l, err := libcni.NetworkConfFromBytes(fmt.Appendf(nil, `{"cniVersion":%q,"name":"slim","plugins":[%s]}`, ver, strings.Join(plugins, ",")))
	if err != nil {
		r.t.Fatal(err)
	}
	return l
}

// pod is a container network namespace and its runtime configuration.
func (r *cniRig) pod(id string) (*libcni.RuntimeConf, ns.NetNS) {
	r.t.Helper()
	n, err := testutils.NewNS()
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { n.Close(); testutils.UnmountNS(n) })
	return &libcni.RuntimeConf{ContainerID: id, NetNS: n.Path(), IfName: "eth0",
		Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "spec"}, {"K8S_POD_NAME", id}}}, n
}

// do runs fn in the lab host's namespace, where a runtime runs plugins.
func (r *cniRig) do(fn func() error) error {
	return r.host.Do(func(ns.NetNS) error { return fn() })
}

// add runs ADD; the result is converted to the current version, after
// checking that the plugins answered in the configuration's.
func (r *cniRig) add(ctx context.Context, l *libcni.NetworkConfigList, rt *libcni.RuntimeConf) (*types100.Result, error) {
	var res *types100.Result
	err := r.do(func() error {
		got, err := r.cni.AddNetworkList(ctx, l, rt)
		if err != nil {
			return err
		}
		if got.Version() != l.CNIVersion {
			return fmt.Errorf("result of version %s for a %s configuration", got.Version(), l.CNIVersion)
		}
		res, err = types100.GetResult(got)
		return err
	})
	return res, err
}

func (r *cniRig) check(ctx context.Context, l *libcni.NetworkConfigList, rt *libcni.RuntimeConf) error {
	return r.do(func() error { return r.cni.CheckNetworkList(ctx, l, rt) })
}

func (r *cniRig) del(ctx context.Context, l *libcni.NetworkConfigList, rt *libcni.RuntimeConf) error {
	return r.do(func() error { return r.cni.DelNetworkList(ctx, l, rt) })
}

// endpoints are h1's endpoints whose container id starts with prefix.
func (r *cniRig) endpoints(ctx context.Context, prefix string) []api.Endpoint {
	r.t.Helper()
	eps, err := api.NewClient(lab.SocketPath(r.l.Config, "h1")).Endpoints(ctx, "h1")
	if err != nil {
		r.t.Fatal(err)
	}
	return slices.DeleteFunc(eps, func(ep api.Endpoint) bool { return !strings.HasPrefix(ep.ContainerID, prefix) })
}

// hostVeths are the host ends of containers' veths left in h1's namespace.
func (r *cniRig) hostVeths() []string {
	r.t.Helper()
	var names []string
	err := r.do(func() error {
		links, err := netlink.LinkList()
		for _, l := range links {
			if l.Type() == "veth" && strings.HasPrefix(l.Attrs().Name, "slim") {
				names = append(names, l.Attrs().Name)
			}
		}
		return err
	})
	if err != nil {
		r.t.Fatal(err)
	}
	return names
}

// CNI 1.1 in full through libcni, for every version slim-cni claims: ADD
// gives a result of the configuration's version, CHECK passes, STATUS
// and GC (1.1.0) work, DEL removes everything and can be repeated.
func TestCNISpecVersions(t *testing.T) {
	r, ctx := newCNILab(t, 2*time.Minute)
	veths := r.hostVeths()
	for _, ver := range []string{"1.0.0", "1.1.0"} {
		t.Run(ver, func(t *testing.T) {
			list := r.list(ver)
			rt, _ := r.pod("spec-" + strings.ReplaceAll(ver, ".", ""))
			res, err := r.add(ctx, list, rt)
			if err != nil {
				t.Fatal(err)
			}
			if len(res.IPs) == 0 || len(res.Interfaces) != 2 {
				t.Fatalf("ADD result %+v", res)
			}
			if err := r.check(ctx, list, rt); err != nil {
				t.Fatalf("CHECK: %v", err)
			}
			if err := r.do(func() error { return r.cni.GetStatusNetworkList(ctx, list) }); err != nil {
				t.Fatalf("STATUS: %v", err)
			}
			// GC with the attachment valid keeps it.
			gc := func(valid ...types.GCAttachment) error {
				return r.do(func() error {
					return r.cni.GCNetworkList(ctx, list, &libcni.GCArgs{ValidAttachments: valid})
				})
			}
			if err := gc(types.GCAttachment{ContainerID: rt.ContainerID, IfName: rt.IfName}); err != nil {
				t.Fatalf("GC: %v", err)
			}
			if eps := r.endpoints(ctx, rt.ContainerID); len(eps) != 1 {
				t.Fatalf("after GC keeping it: %d endpoints", len(eps))
			}
			for range 2 {
				if err := r.del(ctx, list, rt); err != nil {
					t.Fatalf("DEL: %v", err)
				}
			}
			if eps := r.endpoints(ctx, rt.ContainerID); len(eps) != 0 {
				t.Errorf("after DEL: endpoints %v", eps)
			}
		})
	}
	if got := r.hostVeths(); !slices.Equal(got, veths) {
		t.Errorf("host veths %v, before %v", got, veths)
	}
}

// CHECK fails when slimd no longer holds the container's address, and
// when slimd is down, with the spec's codes; it passes again once slimd
// is back.
func TestCNICheckFails(t *testing.T) {
	r, ctx := newCNILab(t, 2*time.Minute)
	l := r.l
	list := r.list("1.1.0")

	gone, _ := r.pod("check-gone")
	if _, err := r.add(ctx, list, gone); err != nil {
		t.Fatal(err)
	}
	if err := api.NewClient(lab.SocketPath(l.Config, "h1")).DelEndpoint(ctx, api.Attachment{ContainerID: gone.ContainerID, IfName: gone.IfName}); err != nil {
		t.Fatal(err)
	}
	err := r.check(ctx, list, gone)
	if err == nil {
		t.Fatal("CHECK passed for an address slimd released")
	}
	t.Logf("address gone: %v", err)
	if err := r.del(ctx, list, gone); err != nil {
		t.Fatalf("DEL after the address went: %v", err)
	}

	down, _ := r.pod("check-down")
	if _, err := r.add(ctx, list, down); err != nil {
		t.Fatal(err)
	}
	if err := lab.StopSlimd(ctx, l.Config, "h1", unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err = r.check(ctx, list, down)
	var cerr *types.Error
	if !errors.As(err, &cerr) || (cerr.Code != types.ErrTryAgainLater && cerr.Code != types.ErrPluginNotAvailable) {
		t.Fatalf("CHECK with slimd down: %v, want code %d or %d", err, types.ErrTryAgainLater, types.ErrPluginNotAvailable)
	}
	t.Logf("slimd down: %v", err)
	if err := lab.UpAgain(ctx, l.Config); err != nil {
		t.Fatal(err)
	}
	if err := r.check(ctx, list, down); err != nil {
		t.Fatalf("CHECK once slimd is back: %v", err)
	}
	if err := r.del(ctx, list, down); err != nil {
		t.Fatal(err)
	}
}

// referencePlugins is where Debian's containernetworking-plugins puts
// the reference plugins.
const referencePlugins = "/usr/lib/cni"

// slim-cni chained with the reference portmap and tuning plugins:
// portmap gets slim-cni's result as its prevResult and passes it on
// (ADD's result is slim-cni's addresses and interfaces, and tuning after
// it runs), CHECK hands each plugin the cached result, and DEL removes
// every plugin's state.
func TestCNIChained(t *testing.T) {
	labtest.Require(t)
	if _, err := os.Stat(filepath.Join(referencePlugins, "portmap")); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("portmap: %v (scripts/deps.sh installs containernetworking-plugins)", err)
		}
		t.Skipf("portmap: %v", err)
	}
	r, ctx := newCNILab(t, 2*time.Minute)
	r.cni = libcni.NewCNIConfigWithCacheDir([]string{r.l.Config.BinDir, referencePlugins}, t.TempDir(), nil)
	// Debian's plugins (1.1.1) speak up to 1.0.0.
	alone := r.list("1.0.0")
	chained := r.list("1.0.0", `{"type":"portmap","capabilities":{"portMappings":true},"snat":false}`,
		`{"type":"tuning","sysctl":{"net.ipv4.conf.eth0.accept_local":"1"}}`)
	rt, cont := r.pod("chained")
	rt.CapabilityArgs = map[string]any{"portMappings": []map[string]any{{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}}}
	res, err := r.add(ctx, chained, rt)
	if err != nil {
		t.Fatal(err)
	}
	ref, _ := r.pod("alone")
	want, err := r.add(ctx, alone, ref)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.IPs) != len(want.IPs) || len(res.Interfaces) != len(want.Interfaces) || res.Interfaces[1].Sandbox != rt.NetNS {
		t.Fatalf("chained result %+v, slim-cni alone gives %+v", res, want)
	}
	// tuning ran in the container after portmap: the chain went through.
	var v string
	if err := cont.Do(func(ns.NetNS) error {
		b, err := os.ReadFile("/proc/sys/net/ipv4/conf/eth0/accept_local")
		v = strings.TrimSpace(string(b))
		return err
	}); err != nil || v != "1" {
		t.Errorf("tuning's sysctl %q, %v: the chain stopped before it", v, err)
	}
	if !strings.Contains(r.ruleset(), "18080") {
		t.Errorf("portmap's rule for host port 18080 is not in h1's ruleset")
	}
	// CHECK hands every plugin of the chain the cached result as its
	// prevResult. Debian's portmap 1.1.1 fails its own CHECK whenever it
	// has mappings (it looks for its IPv4 rule in the IPv6 table), so the
	// chain is checked on a pod without mappings: portmap then has
	// nothing to check, and slim-cni and tuning check theirs.
	plain, _ := r.pod("chained-plain")
	if _, err := r.add(ctx, chained, plain); err != nil {
		t.Fatal(err)
	}
	if err := r.check(ctx, chained, plain); err != nil {
		t.Fatalf("CHECK of the chain: %v", err)
	}
	for _, c := range []struct {
		l  *libcni.NetworkConfigList
		rt *libcni.RuntimeConf
	}{{chained, rt}, {chained, plain}, {alone, ref}} {
		if err := r.del(ctx, c.l, c.rt); err != nil {
			t.Fatalf("DEL %s: %v", c.rt.ContainerID, err)
		}
	}
	if strings.Contains(r.ruleset(), "18080") {
		t.Errorf("portmap's rule survived DEL")
	}
	if eps := r.endpoints(ctx, "chained"); len(eps) != 0 {
		t.Errorf("endpoints after DEL: %v", eps)
	}
}

// ruleset is h1's nftables ruleset (iptables-nft rules included).
func (r *cniRig) ruleset() string {
	r.t.Helper()
	var out []byte
	if err := r.do(func() (err error) {
		out, err = exec.Command("nft", "list", "ruleset").Output()
		return err
	}); err != nil {
		r.t.Fatal(err)
	}
	return string(out)
}

// claims counts the store's keys under prefix (an address or port block
// claim is a key: store.ipKey, store.portBlocksPrefix).
func (r *cniRig) claims(ctx context.Context, prefix string) int64 {
	r.t.Helper()
	cc, err := lab.EtcdClientConfig(r.l.Config)
	if err != nil {
		r.t.Fatal(err)
	}
	cli, err := clientv3.New(cc)
	if err != nil {
		r.t.Fatal(err)
	}
	defer cli.Close()
	resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		r.t.Fatal(err)
	}
	return resp.Count
}

// Fifty pods attached and detached at once get fifty different
// addresses, and leave no endpoint, address claim, port block claim or
// veth behind.
func TestCNIParallel(t *testing.T) {
	// The store on a member of its own, which the test reads directly.
	r, ctx := newCNILab(t, 5*time.Minute, labtest.EtcdMembers(1))
	list := r.list("1.1.0")
	veths := r.hostVeths()
	ipClaims, blockClaims := r.claims(ctx, "/slim/ips/h1/"), r.claims(ctx, "/slim/portblocks/h1/")
	// libcni sets its executor up lazily and without a lock: one call
	// first, so the parallel ones only read it (go test -race).
	if err := r.do(func() error { return r.cni.GetStatusNetworkList(ctx, list) }); err != nil {
		t.Fatal(err)
	}
	const n = 50
	rts := make([]*libcni.RuntimeConf, n)
	for i := range rts {
		rts[i], _ = r.pod(fmt.Sprintf("par-%02d", i))
	}
	all := func(op func(*libcni.RuntimeConf) error) []error {
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i, rt := range rts {
			wg.Go(func() { errs[i] = op(rt) })
		}
		wg.Wait()
		return errs
	}
	var mu sync.Mutex
	ips := map[string]string{}
	for i, err := range all(func(rt *libcni.RuntimeConf) error {
		res, err := r.add(ctx, list, rt)
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		for _, ipc := range res.IPs {
			if other, dup := ips[ipc.Address.IP.String()]; dup {
				return fmt.Errorf("address %s given to %s and %s", ipc.Address.IP, other, rt.ContainerID)
			}
			ips[ipc.Address.IP.String()] = rt.ContainerID
		}
		return nil
	}) {
		if err != nil {
			t.Errorf("ADD %d: %v", i, err)
		}
	}
	if eps := r.endpoints(ctx, "par-"); len(eps) != n {
		t.Fatalf("%d endpoints after %d ADDs", len(eps), n)
	}
	for i, err := range all(func(rt *libcni.RuntimeConf) error { return r.del(ctx, list, rt) }) {
		if err != nil {
			t.Errorf("DEL %d: %v", i, err)
		}
	}
	if eps := r.endpoints(ctx, "par-"); len(eps) != 0 {
		t.Errorf("%d endpoints left after DEL", len(eps))
	}
	if got := r.hostVeths(); !slices.Equal(got, veths) {
		t.Errorf("host veths %v, before %v", got, veths)
	}
	if got := r.claims(ctx, "/slim/ips/h1/"); got != ipClaims {
		t.Errorf("%d address claims after DEL, %d before ADD", got, ipClaims)
	}
	if got := r.claims(ctx, "/slim/portblocks/h1/"); got != blockClaims {
		t.Errorf("%d port block claims after DEL, %d before ADD", got, blockClaims)
	}
}
