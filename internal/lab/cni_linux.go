package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"time"

	"github.com/containernetworking/cni/libcni"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/slimnet/slim/internal/api"
)

// cniCall says which container attachment a CNI call is about.
type cniCall struct {
	dir, binDir, host, name string
	labels                  map[string]string
	namespace               string
	ports                   []api.NamedPort
}

// cniCallOf is the plugin call for container c, the same for ADD and DEL.
func cniCallOf(dir, binDir string, c Container) cniCall {
	return cniCall{dir: dir, binDir: binDir, host: c.Host, name: c.Name, labels: c.Labels, namespace: c.Namespace, ports: c.Ports}
}

// cniTimeout bounds one plugin run: slim-cni makes a veth and asks the
// local slimd, which answers within its own request timeout (30 s).
const cniTimeout = 40 * time.Second

// attachment is what an ADD produced.
type attachment struct {
	ipv4, ipv6 netip.Addr
	result     json.RawMessage
}

func (c cniCall) prepare() (*libcni.CNIConfig, *libcni.NetworkConfigList, *libcni.RuntimeConf, error) {
	b, err := conflist(socketPath(c.dir, c.host), c.labels, c.ports)
	if err != nil {
		return nil, nil, nil, err
	}
	list, err := libcni.NetworkConfFromBytes(b)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("cni config: %w", err)
	}
	cfg := libcni.NewCNIConfigWithCacheDir([]string{c.binDir}, cniCacheDir(c.dir), nil)
	rt := &libcni.RuntimeConf{
		ContainerID: ContainerID(c.name),
		NetNS:       NetnsPath(ContainerNetns(c.name)),
		IfName:      ContainerIface,
	}
	if c.namespace != "" {
		// As a Kubernetes runtime passes a pod's identity.
		rt.Args = [][2]string{{"K8S_POD_NAMESPACE", c.namespace}, {"K8S_POD_NAME", c.name}}
	}
	return cfg, list, rt, nil
}

// inHost runs fn with the calling goroutine's thread in the host's
// namespace. The plugin must run where the host's slimd and routes are,
// the way a runtime runs it in the host's namespace; libcni forks it from
// the current (locked) thread, so it starts there.
func (c cniCall) inHost(fn func() error) error {
	h, err := ns.GetNS(NetnsPath(HostNetns(c.host)))
	if err != nil {
		return err
	}
	defer h.Close()
	return h.Do(func(ns.NetNS) error { return fn() })
}

// add runs CNI ADD.
func (c cniCall) add(ctx context.Context) (attachment, error) {
	var a attachment
	cfg, list, rt, err := c.prepare()
	if err != nil {
		return a, err
	}
	ctx, cancel := context.WithTimeout(ctx, cniTimeout)
	defer cancel()
	var res types100.Result
	err = c.inHost(func() error {
		r, err := cfg.AddNetworkList(ctx, list, rt)
		if err != nil {
			return err
		}
		r100, err := types100.GetResult(r)
		if err != nil {
			return err
		}
		res = *r100
		return nil
	})
	if err != nil {
		return a, fmt.Errorf("cni add %s on %s: %w", c.name, c.host, err)
	}
	for _, ipc := range res.IPs {
		ip, ok := netip.AddrFromSlice(ipc.Address.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		switch {
		case ip.Is4() && !a.ipv4.IsValid():
			a.ipv4 = ip
		case ip.Is6() && !a.ipv6.IsValid():
			a.ipv6 = ip
		}
	}
	if a.result, err = json.Marshal(res); err != nil {
		return a, err
	}
	if !a.ipv4.IsValid() {
		return a, fmt.Errorf("cni add %s on %s: the result has no IPv4 address", c.name, c.host)
	}
	return a, nil
}

// del runs CNI DEL; deleting what is already gone succeeds.
func (c cniCall) del(ctx context.Context) error {
	cfg, list, rt, err := c.prepare()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, cniTimeout)
	defer cancel()
	if err := c.inHost(func() error { return cfg.DelNetworkList(ctx, list, rt) }); err != nil {
		return fmt.Errorf("cni del %s on %s: %w", c.name, c.host, err)
	}
	return nil
}
