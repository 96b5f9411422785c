package daemon

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/bits"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"time"

	"github.com/opencontainers/runtime-spec/specs-go"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/bpf"
	"github.com/slimnet/slim/internal/broker"
	"github.com/slimnet/slim/internal/embedetcd"
	"github.com/slimnet/slim/internal/keeper"
	"github.com/slimnet/slim/internal/kube"
	"github.com/slimnet/slim/internal/nat"
	"github.com/slimnet/slim/internal/overlay"
	"github.com/slimnet/slim/internal/seccomp"
	"github.com/slimnet/slim/internal/store"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

// etcdDialTimeout bounds the first connection to etcd; slimd retries the
// whole start-up step after it, so a slow etcd only delays start-up.
const etcdDialTimeout = 5 * time.Second

// etcdReconnect is how gRPC retries a lost connection to etcd. Its default
// backs off to two minutes, so after an outage of a minute slimd found
// the store back tens of seconds late, its lease gone meanwhile; capped
// at 2 s, slimd is back within seconds of etcd (an idle retry costs one
// TCP SYN per endpoint).
var etcdReconnect = grpc.ConnectParams{
	Backoff:           backoff.Config{BaseDelay: 250 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
	MinConnectTimeout: 5 * time.Second,
}

// startupStepTimeout bounds one try of a store step during start-up.
const startupStepTimeout = 10 * time.Second

// Gateways containers route through: link-local, so they never collide
// with any cluster or host address, and identical on every host.
var (
	Gateway4 = netip.MustParseAddr("169.254.1.1")
	Gateway6 = netip.MustParseAddr("fe80::1")
)

// Daemon is one running slimd.
type Daemon struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics
	etcd    *embedetcd.Server
	cli     *clientv3.Client
	store   *store.Store
	self    api.Host
	hostNet store.HostNet

	// kube mirrors pods' and namespaces' labels, NetworkPolicies and
	// Services (nil outside Kubernetes).
	kube *kube.Syncer
	// cgroup is slimd's own, where the BPF programs attach.
	cgroup string

	hosts     *store.Cache[api.Host]
	endpoints *store.Cache[api.Endpoint]
	listeners *store.Cache[api.Listener]
	fpSwitch  *store.Cache[store.FastPath]
	pols      *store.Cache[networkingv1.NetworkPolicy]
	nss       *store.Cache[map[string]string]
	svcs      *store.Cache[corev1.Service]
	policies  *policies
	services  *services
	lease     *store.Lease
	overlay   *overlay.Reconciler
	view      *view
	fp        *fastPath
	tables    *hostTables
	// owned are this host's listeners as the pinned BPF map had them at
	// start (restoreListeners takes them over).
	owned     []bpf.Listener
	broker    *broker.Broker
	bpf       *bpf.Programs
	keeper    *keeperLink
	valid     *validator
	journal   *keeper.Journal
	leftovers []keeper.Entry

	// revokeDirty asks for a pass that cuts connections policies now deny.
	revokeDirty chan struct{}

	allocMu  sync.Mutex // serializes allocation on this host
	lastIPv4 netip.Addr
}

// Run starts slimd and blocks until ctx ends or a component fails.
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if cfg.MemoryLimit > 0 {
		debug.SetMemoryLimit(cfg.MemoryLimit)
	}
	d := &Daemon{cfg: cfg, log: cfg.Log, metrics: newMetrics(), revokeDirty: make(chan struct{}, 1)}
	defer d.close()
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	if err := d.connectStore(); err != nil {
		return err
	}
	if err := d.setup(ctx); err != nil {
		return err
	}
	return d.serve(ctx)
}

func (d *Daemon) close() {
	if d.journal != nil {
		d.journal.Close()
	}
	if d.bpf != nil {
		d.bpf.Close() // pins stay: rewrite and guard outlive slimd
	}
	if d.cli != nil {
		d.cli.Close()
	}
	if d.etcd != nil {
		d.etcd.Close()
	}
}

func (d *Daemon) connectStore() error {
	endpoints := d.cfg.EtcdEndpoints
	if len(endpoints) == 0 {
		srv, err := embedetcd.Start(embedetcd.Config{
			Name:      d.cfg.NodeName,
			DataDir:   d.cfg.DataDir,
			ClientURL: d.cfg.EtcdListenClient,
			PeerURL:   d.cfg.EtcdListenPeer,
			TLS:       d.cfg.EtcdTLS,
		})
		if err != nil {
			return err
		}
		d.etcd = srv
		endpoints = []string{srv.Endpoint()}
		d.log.Info("embedded etcd started", "endpoint", srv.Endpoint())
	}
	var tlsCfg *tls.Config
	if d.cfg.TLS() {
		var err error
		if tlsCfg, err = d.cfg.EtcdTLS.ClientConfig(); err != nil {
			return fmt.Errorf("etcd tls: %w", err)
		}
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		TLS:         tlsCfg,
		DialTimeout: etcdDialTimeout,
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(etcdReconnect)},
		// The client's own zap logging is noisy on every reconnect; our
		// caches and lease keeper log what matters.
		Logger: zap.NewNop(),
	})
	if err != nil {
		return fmt.Errorf("etcd client: %w", err)
	}
	d.cli = cli
	d.store = store.New(cli, d.cfg.Prefix)
	return nil
}

// retry runs a start-up step until it succeeds, so slimd can start while
// etcd is still coming up; errors that retrying cannot fix end it.
func (d *Daemon) retry(ctx context.Context, what string, fn func(ctx context.Context) error) error {
	backoff := 250 * time.Millisecond
	for {
		sctx, cancel := context.WithTimeout(ctx, startupStepTimeout)
		err := fn(sctx)
		cancel()
		if err == nil {
			return nil
		}
		if errors.Is(err, store.ErrConfigMismatch) || ctx.Err() != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		d.log.Warn("start-up step failed, retrying", "step", what, "err", err, "backoff", backoff)
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", what, ctx.Err())
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (d *Daemon) setup(ctx context.Context) error {
	if err := d.setupKube(); err != nil {
		return err
	}
	cc := d.cfg.Cluster
	if err := d.retry(ctx, "cluster config", func(ctx context.Context) error {
		_, err := d.store.EnsureConfig(ctx, cc)
		return err
	}); err != nil {
		return err
	}
	d.valid = newValidator(store.Limits{Config: cc, PortFirst: d.cfg.PortFirst, PortLast: d.cfg.PortLast},
		d.log.With("component", "store"), d.metrics.refused)
	var slot int
	if err := d.retry(ctx, "claim host subnet", func(ctx context.Context) (err error) {
		slot, err = d.store.ClaimSlot(ctx, d.cfg.NodeName, cc.Plan())
		return err
	}); err != nil {
		return err
	}
	sub4, sub6, err := cc.Plan().Slot(slot)
	if err != nil {
		return err
	}
	iface, uip, err := findUnderlay(d.cfg.UnderlayIface, d.cfg.UnderlayIP)
	if err != nil {
		return err
	}
	dev, err := overlay.EnsureDevice(overlay.DeviceConfig{
		Name:          d.cfg.VXLANDevice,
		VNI:           cc.VNI,
		Port:          cc.Port,
		UnderlayIface: iface,
		UnderlayIP:    uip,
		Subnet4:       sub4,
		Subnet6:       sub6,
	})
	if err != nil {
		return fmt.Errorf("vxlan device: %w", err)
	}
	d.self = api.Host{
		Name:       d.cfg.NodeName,
		UnderlayIP: uip,
		VTEPMAC:    dev.MAC.String(),
		Subnet4:    sub4,
		Subnet6:    sub6,
		MTU:        dev.MTU,
		Started:    time.Now().UTC().Truncate(time.Second),
	}
	d.hostNet = store.HostNet{Host: d.cfg.NodeName, Subnet4: sub4, Subnet6: sub6}
	d.log.Info("host joined", "host", d.self.Name, "underlay", uip, "iface", iface,
		"subnet4", sub4, "subnet6", sub6, "vtep", d.self.VTEPMAC, "mtu", dev.MTU)

	d.lease = store.NewLease(store.LeaseConfig{
		Client: d.cli,
		TTL:    d.cfg.LeaseTTL,
		File:   filepath.Join(d.cfg.DataDir, "lease"),
		Log:    d.log.With("component", "lease"),
		Attach: d.attachLease,
	})
	if err := d.retry(ctx, "host lease", d.lease.Acquire); err != nil {
		return err
	}

	d.overlay = overlay.NewReconciler(overlay.ReconcilerConfig{
		Dataplane: overlay.NewDataplane(dev),
		Desired:   d.desiredPeers,
		Interval:  d.cfg.ResyncInterval,
		Log:       d.log.With("component", "overlay"),
		OnApply: func(ensured, removed, failed int) {
			d.metrics.overlayApply.WithLabelValues("ensured").Add(float64(ensured))
			d.metrics.overlayApply.WithLabelValues("removed").Add(float64(removed))
			d.metrics.overlayApply.WithLabelValues("failed").Add(float64(failed))
		},
	})
	// The caches call back only once they run (serve), when d.fp and
	// d.tables exist.
	d.hosts = d.store.HostCache(d.log.With("component", "hosts"), func() {
		d.overlay.Trigger()
		d.tables.mark()
		if d.kube != nil {
			d.kube.Kick() // the leader may have changed
		}
	})
	d.hosts.OnResync = func() { d.metrics.resyncs.WithLabelValues("hosts").Inc() }
	d.endpoints = d.store.EndpointCache(d.self.Name, d.log.With("component", "endpoints"), func() {
		d.fp.update()
		d.tables.mark()
		d.policies.mark()
		d.services.mark()
		if d.kube != nil {
			d.kube.Kick()
		}
	})
	d.endpoints.OnResync = func() { d.metrics.resyncs.WithLabelValues("endpoints").Inc() }
	d.listeners = d.store.ListenerCache(d.log.With("component", "listeners"), func() {
		d.tables.mark()
		// A backend's listener closed: connections through services
		// that ask for it are cut.
		if d.services.resetting() {
			d.markRevoke()
		}
	})
	d.listeners.OnResync = func() { d.metrics.resyncs.WithLabelValues("listeners").Inc() }
	d.fpSwitch = d.store.FastPathCache(d.log.With("component", "fastpath"), nil)
	d.pols = d.store.PolicyCache(d.log.With("component", "policies"), func() {
		d.policies.mark()
		if d.kube != nil {
			d.kube.Kick() // a mirrored policy changed by hand is put back
		}
	})
	d.pols.OnResync = func() { d.metrics.resyncs.WithLabelValues("policies").Inc() }
	d.nss = d.store.NamespaceCache(d.log.With("component", "namespaces"), func() { d.policies.mark() })
	d.svcs = d.store.ServiceCache(d.log.With("component", "services"), func() {
		d.services.mark()
		if d.kube != nil {
			d.kube.Kick() // a mirrored service changed by hand is put back
		}
	})
	d.svcs.OnResync = func() { d.metrics.resyncs.WithLabelValues("services").Inc() }
	d.metrics.watch(counts{peers: d.overlay.Programmed, hosts: d.hosts.Len, endpoints: d.endpoints.Len, policies: d.pols.Len})
	d.view = &view{self: d.self, lease: d.lease.ID, hosts: d.hosts, endpoints: d.endpoints, listeners: d.listeners,
		fpSwitch: d.fpSwitch, valid: d.valid}
	d.policies = newPolicies(d.self.Name, d.pols, d.nss, d.endpoints, d.view.validEndpoint, d.metrics.policyDenied,
		d.log.With("component", "policies"))
	d.services = newServices(d.svcs, d.endpoints, d.view.validEndpoint)
	return d.setupFastPath(uip)
}

// tagger is the BPF programs as the broker's Tagger, or nil without them.
func (d *Daemon) tagger() broker.Tagger {
	if d.bpf == nil {
		return nil
	}
	return d.bpf
}

// permits is the BPF programs as the broker's Permits, or nil without
// them.
func (d *Daemon) permits() broker.Permits {
	if d.bpf == nil {
		return nil
	}
	return d.bpf
}

// recorder is the BPF programs as the broker's Recorder, or nil without
// them.
func (d *Daemon) recorder() broker.Recorder {
	if d.bpf == nil {
		return nil
	}
	return d.bpf
}

// setupFastPath prepares the broker: reserved ports, the DNAT table, and
// the broker itself (it starts serving in serve).
func (d *Daemon) setupFastPath(hostIP netip.Addr) error {
	if err := reservePorts(d.cfg.PortFirst, d.cfg.PortLast); err != nil {
		return err
	}
	t, err := nat.New(-1)
	if err != nil {
		return err
	}
	cg, err := d.ownCgroup()
	if err != nil {
		return fmt.Errorf("slimd cgroup: %w", err)
	}
	d.cgroup = cg
	pin := d.cfg.BPFPinDir
	if pin == "" {
		pin = filepath.Join("/sys/fs/bpf/slim", d.cfg.NodeName)
	}
	progs, err := bpf.Load(bpf.Config{Cgroup: cg, PinDir: pin, BlockBits: bits.TrailingZeros16(d.cfg.PortBlockSize),
		Logger: d.log.With("component", "bpf")})
	switch {
	case errors.Is(err, bpf.ErrNotSupported):
		d.log.Warn("BPF programs not supported here: fast path off, everything uses the overlay", "err", err)
	case err != nil:
		return fmt.Errorf("bpf: %w", err)
	default:
		d.bpf = progs
		d.log.Info("bpf programs attached", "cgroup", cg, "pins", pin)
		// The pinned listener map remembers this host's listeners even
		// if their store records expired while slimd was away; read it
		// before anything syncs the map to the store.
		if ls, err := progs.Listeners(); err == nil {
			for _, l := range ls {
				if l.HostIP == d.self.UnderlayIP {
					d.owned = append(d.owned, l)
				}
			}
		}
	}
	var maps addrMaps
	if d.bpf != nil {
		maps = d.bpf
	}
	d.tables = newHostTables(d.view, t, maps, d.cfg.guardBase(), d.cfg.ResyncInterval, d.log.With("component", "tables"))
	d.tables.pol, d.tables.ports, d.tables.svc = d.policies, d.cfg.Blocks(), d.services
	d.services.changed = func() {
		d.tables.mark()
		if d.services.resetting() {
			d.markRevoke()
		}
	}
	d.services.picked = func(svc string) { d.metrics.serviceConns.WithLabelValues(svc).Inc() }
	d.metrics.reg.MustRegister(newServiceBackends(func() []api.ServiceInfo { return d.services.info(d.fp.listener) }))
	if d.tables.slimd, err = cgroupOf(cg); err != nil {
		return fmt.Errorf("slimd cgroup: %w", err)
	}
	d.policies.changed = func() {
		d.tables.mark()
		d.markRevoke()
	}
	d.fp = newFastPath(d.view, d.store, d.cfg.Blocks(), d.bpf != nil, d.tables.mark, d.log.With("component", "fastpath"))
	d.fp.services = d.services
	if err := d.openKeeper(context.Background()); err != nil {
		return err
	}
	bm := broker.NewMetrics()
	d.metrics.reg.MustRegister(bm.Collectors()...)
	d.broker, err = broker.New(broker.Config{
		HostIP:    hostIP,
		View:      d.fp,
		Resolver:  d.fp,
		Ports:     d.fp,
		Publisher: d.fp,
		Tagger:    d.tagger(),
		Permits:   d.permits(),
		Recorder:  d.recorder(),
		Keeper:    d.keeper,
		Journal:   d.journal,
		Policy:    d.policies,
		Log:       d.log.With("component", "broker"),
		Metrics:   bm,
	})
	if err != nil {
		return err
	}
	d.keeper.rekeep = d.broker.Rekeep
	return nil
}

// attachLease (re)writes what hangs on the host's lease: the host record
// and, once the broker runs, the listeners it serves (a new lease after a
// long outage must carry them again).
func (d *Daemon) attachLease(ctx context.Context, id clientv3.LeaseID) error {
	if err := d.store.PutHost(ctx, d.self, id); err != nil {
		return err
	}
	if d.broker == nil {
		return nil
	}
	for _, l := range d.broker.Published() {
		l.Host = d.self.Name
		if _, err := d.store.PutListener(ctx, l, id); err != nil {
			return err
		}
	}
	return nil
}

// desiredPeers turns the host cache into overlay peers: every other host
// with a complete record.
func (d *Daemon) desiredPeers() ([]overlay.Peer, bool) {
	hosts, synced := d.hosts.Snapshot()
	if !synced {
		return nil, false
	}
	peers := make([]overlay.Peer, 0, len(hosts))
	for _, h := range hosts {
		if h.Name == d.self.Name || h.UnderlayIP == d.self.UnderlayIP || !d.valid.host(h) {
			continue
		}
		mac, err := net.ParseMAC(h.VTEPMAC)
		if err != nil || !h.UnderlayIP.Is4() || !h.Subnet4.IsValid() {
			d.log.Warn("skipping host with incomplete record", "peer", h.Name)
			continue
		}
		peers = append(peers, overlay.Peer{Host: h.Name, UnderlayIP: h.UnderlayIP, VTEPMAC: mac, Subnet4: h.Subnet4, Subnet6: h.Subnet6})
	}
	return peers, true
}

func (d *Daemon) serve(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return d.lease.Run(ctx) })
	g.Go(func() error { return d.hosts.Run(ctx) })
	g.Go(func() error { return d.endpoints.Run(ctx) })
	g.Go(func() error { return d.listeners.Run(ctx) })
	g.Go(func() error { return d.fpSwitch.Run(ctx) })
	g.Go(func() error { return d.pols.Run(ctx) })
	g.Go(func() error { return d.nss.Run(ctx) })
	g.Go(func() error { d.policies.run(ctx); return nil })
	g.Go(func() error { return d.svcs.Run(ctx) })
	g.Go(func() error { d.services.run(ctx); return nil })
	g.Go(func() error { return d.runRevoke(ctx) })
	g.Go(func() error { return d.tables.run(ctx) })
	g.Go(func() error { return d.serveFastPath(ctx) })
	if d.kube != nil {
		g.Go(func() error { return d.kube.Run(ctx) })
	}
	g.Go(func() error {
		return d.overlay.Run(ctx)
	})
	srv := api.NewServer(&backend{d: d}, d.log.With("component", "api"))
	srv.OnRequest = func(route string, code int) {
		d.metrics.apiRequests.WithLabelValues(route, fmt.Sprint(code)).Inc()
	}
	d.routes(srv)
	g.Go(func() error { return srv.Run(ctx, d.cfg.Socket) })
	if d.cfg.MetricsAddr != "" {
		g.Go(func() error { return d.serveMetrics(ctx) })
	}
	if d.etcd != nil {
		g.Go(func() error {
			select {
			case err := <-d.etcd.Err():
				return fmt.Errorf("embedded etcd: %w", err)
			case <-ctx.Done():
				return nil
			}
		})
	}
	d.log.Info("slimd ready", "socket", d.cfg.Socket)
	err := g.Wait()
	d.log.Info("slimd stopped; datapath left in place")
	return err
}

// serveFastPath restores what a previous slimd left, then runs the broker
// and takes notification fds on the agent socket.
func (d *Daemon) serveFastPath(ctx context.Context) error {
	// Policies too: a broker that served before they were read would
	// let denied connections through.
	for !d.listeners.Synced() || !d.endpoints.Synced() || !d.pols.Synced() || !d.nss.Synced() || !d.svcs.Synced() {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(20 * time.Millisecond):
		}
	}
	d.policies.rebuild()
	d.services.rebuild()
	if err := d.retry(ctx, "restore fast path", d.fp.restore); err != nil {
		return err
	}
	err := d.fp.restoreListeners(ctx, d.owned, d.broker.RestoreListener)
	d.tables.restored.Store(true)
	d.tables.mark()
	if err != nil {
		return err
	}
	if err := d.resume(ctx); err != nil {
		return err
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return d.keeper.watch(ctx) })
	g.Go(func() error { return d.broker.Run(ctx) })
	g.Go(func() error {
		return seccomp.ServeAgent(ctx, d.cfg.AgentSocket, d.log.With("component", "agent"),
			func(st specs.ContainerProcessState, fds map[string]int) {
				fd, ok := fds[specs.SeccompFdName]
				for name, other := range fds {
					if name != specs.SeccompFdName {
						unix.Close(other)
					}
				}
				if !ok {
					d.log.Warn("agent message without a seccomp fd", "pid", st.Pid)
					return
				}
				if err := d.broker.Adopt(ctx, st.Pid, fd); err != nil {
					d.log.Warn("adopting notification fd failed", "pid", st.Pid, "err", err)
				}
			})
	})
	return g.Wait()
}

func (d *Daemon) serveMetrics(ctx context.Context) error {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(d.metrics.reg, promhttp.HandlerOpts{}))
	if d.cfg.Pprof {
		// Profiles of a live slimd (docs/scale.md); off by default, as
		// they show the process's internals to whoever reaches the port.
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	srv := &http.Server{Addr: d.cfg.MetricsAddr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	ln, err := net.Listen("tcp", d.cfg.MetricsAddr)
	if err != nil {
		return fmt.Errorf("metrics listen: %w", err)
	}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("metrics: %w", err)
	}
	return nil
}
