package cni

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/slimnet/slim/internal/api"
)

// Config is what Run needs from main.
type Config struct {
	// Stderr receives diagnostics; nil means os.Stderr.
	Stderr io.Writer
	// Version is the build's version, shown when run without CNI_COMMAND.
	Version string
}

// rollbackTimeout bounds undoing a failed ADD. It runs on a context of its
// own, because the runtime may have given up on ours, and the endpoint must
// still be released; slimd is local, so a few seconds is plenty.
const rollbackTimeout = 10 * time.Second

// minMTU is IPv4's minimum; an MTU below it from slimd is a bug there.
const minMTU = 68

// scopeLink is RT_SCOPE_LINK, the scope of the route to the gateway.
const scopeLink = 253

// Run executes the CNI command the runtime asked for through the
// environment (CNI_COMMAND and friends) and stdin. As the spec requires,
// the result, or the error as JSON, goes to stdout; Run also returns the
// error so that main can exit non-zero.
func Run(ctx context.Context, cfg Config) error {
	stderr := cfg.Stderr
	if stderr == nil {
		stderr = os.Stderr
	}
	p := &plugin{
		log:    slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo})),
		stdout: os.Stdout,
	}
	about := "CNI plugin " + PluginType + " " + cfg.Version
	// skel reads the environment and stdin and writes VERSION answers to
	// os.Stdout itself.
	if e := skel.PluginMainFuncsWithError(p.funcs(ctx), version.PluginSupports(supportedVersions...), about); e != nil {
		if err := e.Print(); err != nil {
			p.log.Error("write error result", "err", err)
		}
		return e
	}
	return nil
}

// plugin runs the CNI commands.
type plugin struct {
	log    *slog.Logger
	stdout io.Writer
	// failAt is the fault-injection hook for tests: when it is not zero, ADD
	// fails just before step failAt, and must leave nothing behind.
	failAt step
}

// step numbers ADD's steps for the fault-injection hook.
type step int

const (
	stepStatus   step = iota + 1 // ask slimd for the host's facts
	stepEndpoint                 // allocate the endpoint
	stepVeth                     // create the veth pair
	stepLinkUp                   // bring the container end up
	stepAddress                  // container addresses
	stepNeigh                    // permanent gateway neighbours
	stepRoutes                   // container routes
	stepHost                     // host neighbours and routes to the container
	stepResult                   // print the result
	numSteps     = stepResult
)

// errFault is what the fault-injection hook fails with.
var errFault = errors.New("injected fault")

func (p *plugin) fault(s step) error {
	if p.failAt == s {
		return fmt.Errorf("step %d: %w", s, errFault)
	}
	return nil
}

func (p *plugin) funcs(ctx context.Context) skel.CNIFuncs {
	return skel.CNIFuncs{
		Add:    p.command(ctx, "ADD", p.add),
		Del:    p.command(ctx, "DEL", p.del),
		Check:  p.command(ctx, "CHECK", p.check),
		GC:     p.command(ctx, "GC", p.gc),
		Status: p.command(ctx, "STATUS", p.status),
	}
}

// command turns fn into a skel callback whose errors are CNI errors, and
// logs the failure: this is where slim-cni handles its errors.
func (p *plugin) command(ctx context.Context, name string, fn func(context.Context, *skel.CmdArgs) error) func(*skel.CmdArgs) error {
	return func(args *skel.CmdArgs) error {
		err := fn(ctx, args)
		if err == nil {
			return nil
		}
		e := cniError(err)
		p.log.Error("cni command failed", "command", name, "container", args.ContainerID,
			"ifname", args.IfName, "code", e.Code, "err", err)
		return e
	}
}

// cniError gives err the CNI error code that fits it best.
func cniError(err error) *types.Error {
	var te *types.Error
	if errors.As(err, &te) {
		if te == err {
			return te
		}
		// Keep the context added around it; its text already has te's.
		return types.NewError(te.Code, err.Error(), "")
	}
	code := types.ErrInternal
	switch {
	case errors.Is(err, api.ErrUnavailable), errors.Is(err, api.ErrExhausted):
		// Both clear up by themselves: slimd comes back, containers go.
		code = types.ErrTryAgainLater
	case errors.Is(err, api.ErrInvalid):
		code = types.ErrInvalidNetworkConfig
	}
	return types.NewError(code, err.Error(), "")
}

// attachSpec is one attachment as the kernel side builds and checks it.
type attachSpec struct {
	Netns      string // container netns path
	IfName     string // container end
	HostIfName string // host end
	MTU        int
	IPv4       netip.Addr
	IPv6       netip.Addr // zero without IPv6
	Gateway4   netip.Addr
	Gateway6   netip.Addr // zero without IPv6
}

// attached is what building an attachment created.
type attached struct {
	HostMAC      net.HardwareAddr
	ContainerMAC net.HardwareAddr
}

// addrs returns the container's addresses.
func (s attachSpec) addrs() []netip.Addr {
	if s.IPv6.IsValid() {
		return []netip.Addr{s.IPv4, s.IPv6}
	}
	return []netip.Addr{s.IPv4}
}

func validateAttachment(args *skel.CmdArgs, needNetns bool) error {
	if err := (api.Attachment{ContainerID: args.ContainerID, IfName: args.IfName}).Validate(); err != nil {
		return types.NewError(types.ErrInvalidEnvironmentVariables, err.Error(), "")
	}
	if needNetns && args.Netns == "" {
		return types.NewError(types.ErrInvalidEnvironmentVariables, "CNI_NETNS is empty", "")
	}
	return nil
}

func (p *plugin) add(ctx context.Context, args *skel.CmdArgs) (err error) {
	conf, err := loadConfig(args.StdinData)
	if err != nil {
		return err
	}
	if conf.PrevResult != nil {
		return types.NewError(types.ErrInvalidNetworkConfig,
			PluginType+" creates the container interface, so it must come first in the chain, but ADD has a prevResult", "")
	}
	labels, err := endpointLabels(conf, args.Args)
	if err != nil {
		return err
	}
	if err := validateAttachment(args, true); err != nil {
		return err
	}
	// Check the namespace before asking slimd for anything, so that a bad
	// one costs no allocation.
	if err := checkNetns(args.Netns); err != nil {
		return err
	}

	c := api.NewClient(conf.Socket)
	if err := p.fault(stepStatus); err != nil {
		return err
	}
	spec, err := hostSpec(ctx, c, args)
	if err != nil {
		return err
	}

	if err := p.fault(stepEndpoint); err != nil {
		return err
	}
	att := api.Attachment{ContainerID: args.ContainerID, IfName: args.IfName}
	// AddEndpoint is idempotent, so its answer does not say whether this ADD
	// allocated the endpoint. Ask first: a rollback must release only what
	// this ADD allocated, or a repeated ADD would take a live container's
	// address away.
	_, err = c.Endpoint(ctx, att)
	existed := err == nil
	if err != nil && !errors.Is(err, api.ErrNotFound) {
		return fmt.Errorf("slimd endpoint lookup: %w", err)
	}
	ep, err := c.AddEndpoint(ctx, api.EndpointRequest{
		ContainerID: args.ContainerID, IfName: args.IfName, Netns: args.Netns, Labels: labels, Ports: conf.ports(),
	})
	if err != nil {
		return fmt.Errorf("slimd add endpoint: %w", err)
	}

	done, built := false, false
	defer func() {
		if done {
			return
		}
		// Undo in reverse order: the veth first, so the address is not
		// routed here once slimd may hand it out again.
		if built {
			if rerr := removeHostVeth(spec.HostIfName); rerr != nil {
				err = errors.Join(err, fmt.Errorf("rollback: %w", rerr))
			}
		}
		if !existed {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rollbackTimeout)
			defer cancel()
			if rerr := c.DelEndpoint(rctx, att); rerr != nil {
				err = errors.Join(err, fmt.Errorf("rollback: slimd release endpoint: %w", rerr))
			}
		}
	}()

	spec.IPv4, spec.IPv6 = ep.IPv4, ep.IPv6
	if err := spec.validate(); err != nil {
		return err
	}
	got, err := setup(spec, p.fault)
	if err != nil {
		return err
	}
	built = true

	if err := p.fault(stepResult); err != nil {
		return err
	}
	res, err := buildResult(spec, got, conf.DNS).GetAsVersion(conf.CNIVersion)
	if err != nil {
		return fmt.Errorf("convert result: %w", err)
	}
	if err := res.PrintTo(p.stdout); err != nil {
		return fmt.Errorf("write result: %w", err)
	}
	done = true
	return nil
}

// hostSpec is the attachment of args as far as the host decides it: the
// host's facts from slimd's status, the container's namespace and
// interface, the host veth's name.
func hostSpec(ctx context.Context, c *api.Client, args *skel.CmdArgs) (attachSpec, error) {
	st, err := c.Status(ctx)
	if err != nil {
		return attachSpec{}, fmt.Errorf("slimd status: %w", err)
	}
	spec, err := specFromStatus(st)
	if err != nil {
		return attachSpec{}, err
	}
	spec.Netns, spec.IfName = args.Netns, args.IfName
	spec.HostIfName = hostVethName(args.ContainerID, args.IfName)
	return spec, nil
}

// specFromStatus takes the host's facts from slimd's status.
func specFromStatus(st api.Status) (attachSpec, error) {
	if st.Host.MTU < minMTU {
		return attachSpec{}, fmt.Errorf("slimd reports MTU %d", st.Host.MTU)
	}
	if !st.Gateway4.Is4() {
		return attachSpec{}, fmt.Errorf("slimd reports IPv4 gateway %v", st.Gateway4)
	}
	if st.Gateway6.IsValid() && !st.Gateway6.Is6() {
		return attachSpec{}, fmt.Errorf("slimd reports IPv6 gateway %v", st.Gateway6)
	}
	return attachSpec{MTU: st.Host.MTU, Gateway4: st.Gateway4, Gateway6: st.Gateway6}, nil
}

func (s attachSpec) validate() error {
	if !s.IPv4.Is4() {
		return fmt.Errorf("slimd gave endpoint IPv4 address %v", s.IPv4)
	}
	if s.IPv6.IsValid() {
		if !s.IPv6.Is6() || s.IPv6.Is4In6() {
			return fmt.Errorf("slimd gave endpoint IPv6 address %v", s.IPv6)
		}
		if !s.Gateway6.IsValid() {
			return fmt.Errorf("slimd gave endpoint IPv6 address %v but reports no IPv6 gateway", s.IPv6)
		}
	}
	return nil
}

// hostPrefix is a as a single-address net.IPNet.
func hostPrefix(a netip.Addr) *net.IPNet {
	return &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(a.BitLen(), a.BitLen())}
}

// defaultDst is the default destination of a's family.
func defaultDst(a netip.Addr) net.IPNet {
	return net.IPNet{IP: net.IP(make([]byte, a.BitLen()/8)), Mask: net.CIDRMask(0, a.BitLen())}
}

// buildResult describes an attachment as a CNI result. Interface 0 is the
// host end, 1 the container end, which the addresses belong to.
func buildResult(s attachSpec, got attached, dns types.DNS) *current.Result {
	r := &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{
			{Name: s.HostIfName, Mac: got.HostMAC.String(), Mtu: s.MTU},
			{Name: s.IfName, Mac: got.ContainerMAC.String(), Mtu: s.MTU, Sandbox: s.Netns},
		},
		DNS: dns,
	}
	gws := []netip.Addr{s.Gateway4, s.Gateway6}
	for i, a := range s.addrs() {
		gw := gws[i]
		r.IPs = append(r.IPs, &current.IPConfig{Interface: current.Int(1), Address: *hostPrefix(a), Gateway: gw.AsSlice()})
		if gw.Is4() {
			r.Routes = append(r.Routes, &types.Route{Dst: *hostPrefix(gw), Scope: current.Int(scopeLink)})
		}
		r.Routes = append(r.Routes, &types.Route{Dst: defaultDst(gw), GW: gw.AsSlice()})
	}
	return r
}

func (p *plugin) del(ctx context.Context, args *skel.CmdArgs) error {
	conf, err := loadConfig(args.StdinData)
	if err != nil {
		return err
	}
	if err := validateAttachment(args, false); err != nil {
		return err
	}
	host := hostVethName(args.ContainerID, args.IfName)
	// The kernel side goes first, the address last: slimd must not hand the
	// address to another container while this veth still routes it. The
	// veth is removed even if slimd is down; the runtime retries DEL for the
	// rest.
	kerr := teardown(host, args.Netns, args.IfName, p.log)
	att := api.Attachment{ContainerID: args.ContainerID, IfName: args.IfName}
	if err := api.NewClient(conf.Socket).DelEndpoint(ctx, att); err != nil {
		return errors.Join(kerr, fmt.Errorf("slimd release endpoint: %w", err))
	}
	return kerr
}

func (p *plugin) check(ctx context.Context, args *skel.CmdArgs) error {
	conf, err := loadConfig(args.StdinData)
	if err != nil {
		return err
	}
	if err := validateAttachment(args, true); err != nil {
		return err
	}
	if conf.PrevResult == nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "CHECK needs a prevResult", "")
	}
	prev, err := current.NewResultFromResult(conf.PrevResult)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, fmt.Sprintf("prevResult: %v", err), "")
	}
	c := api.NewClient(conf.Socket)
	spec, err := hostSpec(ctx, c, args)
	if err != nil {
		return err
	}
	if err := spec.fromResult(prev); err != nil {
		return err
	}
	ep, err := c.Endpoint(ctx, api.Attachment{ContainerID: args.ContainerID, IfName: args.IfName})
	if err != nil {
		return fmt.Errorf("slimd endpoint: %w", err)
	}
	if ep.IPv4 != spec.IPv4 || ep.IPv6 != spec.IPv6 {
		return fmt.Errorf("slimd has endpoint addresses %v %v, prevResult %v %v", ep.IPv4, ep.IPv6, spec.IPv4, spec.IPv6)
	}
	if err := spec.validate(); err != nil {
		return err
	}
	return verify(spec, prev.Routes)
}

// fromResult takes the interfaces, MTU and addresses from an earlier ADD's
// result.
func (s *attachSpec) fromResult(r *current.Result) error {
	cont, host := -1, -1
	for i, ifc := range r.Interfaces {
		switch {
		case ifc.Name == s.IfName && ifc.Sandbox == s.Netns:
			cont = i
		case ifc.Name == s.HostIfName && ifc.Sandbox == "":
			host = i
		}
	}
	if cont < 0 {
		return fmt.Errorf("prevResult has no interface %s in %s", s.IfName, s.Netns)
	}
	if host < 0 {
		return fmt.Errorf("prevResult has no host interface %s", s.HostIfName)
	}
	if mtu := r.Interfaces[cont].Mtu; mtu != 0 {
		s.MTU = mtu
	}
	for _, ipc := range r.IPs {
		if ipc.Interface == nil || *ipc.Interface != cont {
			continue
		}
		a, ok := netip.AddrFromSlice(ipc.Address.IP)
		if !ok {
			return fmt.Errorf("prevResult address %v", ipc.Address)
		}
		a = a.Unmap()
		if ones, bits := ipc.Address.Mask.Size(); ones != bits || bits != a.BitLen() {
			return fmt.Errorf("prevResult address %v: want a single address", ipc.Address.String())
		}
		switch {
		case a.Is4() && !s.IPv4.IsValid():
			s.IPv4 = a
		case a.Is6() && !s.IPv6.IsValid():
			s.IPv6 = a
		default:
			return fmt.Errorf("prevResult has more than one address of the family of %v", a)
		}
	}
	if !s.IPv4.IsValid() {
		return fmt.Errorf("prevResult has no IPv4 address on %s", s.IfName)
	}
	return nil
}

func (p *plugin) status(ctx context.Context, args *skel.CmdArgs) error {
	conf, err := loadConfig(args.StdinData)
	if err != nil {
		return err
	}
	st, err := api.NewClient(conf.Socket).Status(ctx)
	if err != nil {
		return types.NewError(types.ErrPluginNotAvailable, fmt.Sprintf("slimd: %v", err), "")
	}
	if !st.StoreSynced {
		return types.NewError(types.ErrPluginNotAvailable, "slimd has not synced its store yet", "")
	}
	return nil
}

func (p *plugin) gc(ctx context.Context, args *skel.CmdArgs) error {
	conf, err := loadConfig(args.StdinData)
	if err != nil {
		return err
	}
	valid := make([]api.Attachment, 0, len(conf.ValidAttachments))
	keep := make(map[string]bool, len(conf.ValidAttachments))
	for _, a := range conf.ValidAttachments {
		valid = append(valid, api.Attachment{ContainerID: a.ContainerID, IfName: a.IfName})
		keep[hostVethName(a.ContainerID, a.IfName)] = true
	}
	// As in DEL, veths go before addresses. Each half runs even when the
	// other fails: the spec asks GC to remove as much as it can.
	removed, kerr := removeStaleHostVeths(keep)
	for _, name := range removed {
		p.log.Info("removed stale host veth", "link", name)
	}
	resp, err := api.NewClient(conf.Socket).GC(ctx, api.GCRequest{Valid: valid})
	if err != nil {
		return errors.Join(kerr, fmt.Errorf("slimd gc: %w", err))
	}
	for _, a := range resp.Released {
		p.log.Info("released stale endpoint", "container", a.ContainerID, "ifname", a.IfName)
	}
	return kerr
}
