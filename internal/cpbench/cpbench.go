// Package cpbench measures Slim's control plane at cluster size without a
// cluster: simulated hosts play against a real 3-member etcd cluster
// (`slimd etcd` processes) with the store code slimd runs, while watcher
// processes run slimd's caches beside them. It measures a new slimd's cold
// start (time, bytes read, memory), how fast a write reaches every
// watcher under churn, etcd's database size and request rate per host,
// and a mass restart of every host at once (`slimctl bench
// control-plane`, docs/scale.md).
package cpbench

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/ipam"
	"github.com/slimnet/slim/internal/store"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sync/errgroup"
)

// Config says what to simulate.
type Config struct {
	// Slimd is the slimd binary whose `slimd etcd` runs the members.
	Slimd string
	// Watcher is the command line that runs RunWatcher; the benchmark
	// appends --endpoints and --prefix.
	Watcher []string
	// Hosts are the cluster sizes to measure, one fresh cluster each.
	Hosts []int
	// EndpointsPerHost and ListenersPerHost are each host's containers
	// and published listeners.
	EndpointsPerHost, ListenersPerHost int
	// Watchers is how many simulated slimds watch the store.
	Watchers int
	// Churn is the share of endpoints replaced per minute (0.01: 1%).
	Churn float64
	// Duration is how long churn runs while propagation is timed.
	Duration time.Duration
	// Dir holds the members' data (a tmpfs is best: see docs/scale.md).
	Dir string
	// Progress gets one line per step; nil is silent.
	Progress io.Writer
}

// Result is one cluster size's figures.
type Result struct {
	Hosts     int `json:"hosts"`
	Endpoints int `json:"endpoints"`
	Listeners int `json:"listeners"`
	// SeedSeconds is how long the simulated hosts took to join and
	// create their endpoints through the store's own transactions.
	SeedSeconds float64 `json:"seedSeconds"`
	// ColdStart is a new watcher's time from start to synced caches
	// (median of the watchers), ColdStartBytes what it read.
	ColdStartSeconds float64 `json:"coldStartSeconds"`
	ColdStartBytes   int64   `json:"coldStartBytes"`
	// RSSBytes and HeapBytes are a synced watcher's memory (median).
	RSSBytes  int64  `json:"rssBytes"`
	HeapBytes uint64 `json:"heapBytes"`
	// Propagation: write start to the change applied in a watcher's
	// cache, over every watcher and write of the churn window.
	PropagationP50 float64 `json:"propagationP50Seconds"`
	PropagationP99 float64 `json:"propagationP99Seconds"`
	PropagationMax float64 `json:"propagationMaxSeconds"`
	Samples        int     `json:"samples"`
	Writes         int     `json:"writes"`
	// DBBytes is etcd's database file, DBInUseBytes the part in use.
	DBBytes      int64 `json:"dbBytes"`
	DBInUseBytes int64 `json:"dbInUseBytes"`
	// RequestsPerHost is etcd's received gRPC messages per second per
	// simulated host during the churn window (keepalives included).
	RequestsPerHost float64 `json:"requestsPerHostPerSecond"`
	// MassRestartSeconds: every host reconnects at once and attaches its
	// keys again; MassRestartSyncSeconds: every watcher restarted at that
	// moment is synced again. EtcdSurvived: every member still runs.
	MassRestartSeconds     float64 `json:"massRestartSeconds"`
	MassRestartSyncSeconds float64 `json:"massRestartSyncSeconds"`
	EtcdSurvived           bool    `json:"etcdSurvived"`
}

const (
	prefix   = "/slimbench"
	leaseTTL = 20 // seconds, slimd's default
	// hostsPerClient: simulated hosts share etcd clients (a connection
	// each would be 2,000 connections on this machine); requests are the
	// same, one lease and keepalive stream entry per host.
	hostsPerClient = 50
	seedWorkers    = 32
)

// blocks is a port range with room for 100 endpoints' blocks (with the
// default 256-port blocks a host has room for 48).
var blocks = store.BlockRange{First: 20480, Last: 32767, Size: 64}

// Run measures each cluster size in turn.
func Run(ctx context.Context, cfg Config) ([]Result, error) {
	if len(cfg.Hosts) == 0 || cfg.EndpointsPerHost < 1 || cfg.Watchers < 1 || cfg.Slimd == "" || len(cfg.Watcher) == 0 {
		return nil, errors.New("control-plane benchmark: hosts, endpoints per host, watchers, slimd and the watcher command are needed")
	}
	if cfg.ListenersPerHost > cfg.EndpointsPerHost {
		return nil, fmt.Errorf("%d listeners per host: at most one per endpoint (%d)", cfg.ListenersPerHost, cfg.EndpointsPerHost)
	}
	var out []Result
	for _, n := range cfg.Hosts {
		r, err := runOne(ctx, cfg, n)
		if err != nil {
			return out, fmt.Errorf("%d hosts: %w", n, err)
		}
		out = append(out, r)
	}
	return out, nil
}

func (cfg Config) step(format string, args ...any) {
	if cfg.Progress != nil {
		fmt.Fprintf(cfg.Progress, "%s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
	}
}

// simHost is one simulated host.
type simHost struct {
	prefix string
	s      *store.Store
	cli    *clientv3.Client
	host   api.Host
	lease  clientv3.LeaseID
	eps    []api.Endpoint
	lsts   []api.Listener
	serial int
	mu     sync.Mutex
}

func runOne(ctx context.Context, cfg Config, n int) (Result, error) {
	r := Result{Hosts: n}
	dir, err := os.MkdirTemp(cfg.Dir, "slim-cpbench-")
	if err != nil {
		return r, err
	}
	cfg.step("%d hosts: starting a 3-member etcd cluster in %s", n, dir)
	cl, err := startCluster(ctx, cfg.Slimd, dir, io.Discard)
	if err != nil {
		return r, err
	}
	defer cl.stop()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	t0 := time.Now()
	hosts, clients, err := seed(ctx, cfg, cl.client, prefix, n)
	seedTook := time.Since(t0)
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	if err != nil {
		return r, err
	}
	for _, h := range hosts {
		r.Endpoints += len(h.eps)
		r.Listeners += len(h.lsts)
	}
	r.SeedSeconds = seedTook.Seconds()
	cfg.step("%d hosts: %d endpoints and %d listeners written in %.1f s", n, r.Endpoints, r.Listeners, r.SeedSeconds)

	// Cold start: the watchers start at once, as slimds restarted together.
	ws, err := startWatchers(ctx, cfg, cl)
	if err != nil {
		return r, err
	}
	defer stopWatchers(ws)
	if err := fillColdStart(&r, ws, n); err != nil {
		return r, err
	}
	cfg.step("%d hosts: cold start %.2f s, %d kB read, %d MB RSS", n, r.ColdStartSeconds, r.ColdStartBytes>>10, r.RSSBytes>>20)

	// Churn: endpoints replaced (container restarts) and listeners moved.
	if err := churn(ctx, cfg, cl, hosts, ws, &r); err != nil {
		return r, err
	}
	cfg.step("%d hosts: %d writes, propagation p50 %.0f ms, p99 %.0f ms, %.1f requests/s per host",
		n, r.Writes, r.PropagationP50*1000, r.PropagationP99*1000, r.RequestsPerHost)

	cli, err := cl.client()
	if err != nil {
		return r, err
	}
	defer cli.Close()
	st, err := cli.Status(ctx, cl.clients[0])
	if err != nil {
		return r, err
	}
	r.DBBytes, r.DBInUseBytes = st.DbSize, st.DbSizeInUse

	if err := massRestart(ctx, cfg, cl, hosts, &clients, &ws, &r); err != nil {
		return r, err
	}
	cfg.step("%d hosts: mass restart: hosts back in %.1f s, watchers synced in %.1f s, etcd up: %t",
		n, r.MassRestartSeconds, r.MassRestartSyncSeconds, r.EtcdSurvived)
	return r, nil
}

// seed makes n hosts join through the store's own calls: slot claim,
// lease, host record, endpoints (address and port blocks by
// transaction), listeners on the lease.
func seed(ctx context.Context, cfg Config, newClient func() (*clientv3.Client, error), prefix string, n int) ([]*simHost, []*clientv3.Client, error) {
	hosts := make([]*simHost, n)
	for i := range hosts {
		hosts[i] = &simHost{prefix: prefix}
	}
	clients, err := connect(hosts, newClient)
	if err != nil {
		return nil, clients, err
	}
	cc := store.ClusterConfig{Cluster4: netip.MustParsePrefix("10.0.0.0/8"), HostBits4: 24, VNI: 1, Port: 4789}
	have, err := hosts[0].s.EnsureConfig(ctx, cc)
	if errors.Is(err, store.ErrConfigMismatch) {
		// A cluster of real hosts (the lab): join it as it is.
		cc, err = have, nil
	}
	if err != nil {
		return nil, clients, err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(seedWorkers)
	for i, h := range hosts {
		g.Go(func() error { return h.join(gctx, cfg, cc.Plan(), i) })
	}
	return hosts, clients, g.Wait()
}

// connect gives the hosts their etcd clients, hostsPerClient to a client,
// and returns the clients.
func connect(hosts []*simHost, newClient func() (*clientv3.Client, error)) ([]*clientv3.Client, error) {
	var clients []*clientv3.Client
	for i, h := range hosts {
		if i%hostsPerClient == 0 {
			c, err := newClient()
			if err != nil {
				return clients, err
			}
			clients = append(clients, c)
		}
		h.cli = clients[len(clients)-1]
		h.s = store.New(h.cli, h.prefix)
	}
	return clients, nil
}

func (h *simHost) join(ctx context.Context, cfg Config, plan ipam.Plan, i int) error {
	name := fmt.Sprintf("sim%05d", i)
	slot, err := h.s.ClaimSlot(ctx, name, plan)
	if err != nil {
		return err
	}
	sub4, _, err := plan.Slot(slot)
	if err != nil {
		return err
	}
	// Underlay addresses from 100.64.0.0/10, MACs from the index.
	u := 100<<24 | 64<<16 | uint32(i+1)
	h.host = api.Host{
		Name: name, UnderlayIP: netip.AddrFrom4([4]byte{byte(u >> 24), byte(u >> 16), byte(u >> 8), byte(u)}),
		VTEPMAC: fmt.Sprintf("02:53:00:%02x:%02x:%02x", byte(i>>16), byte(i>>8), byte(i)),
		Subnet4: sub4, MTU: 1450, Started: time.Now().UTC().Truncate(time.Second),
	}
	if err := h.attach(ctx); err != nil {
		return err
	}
	hn := store.HostNet{Host: name, Subnet4: sub4}
	var last netip.Addr
	for j := range cfg.EndpointsPerHost {
		ep, err := h.s.AddEndpoint(ctx, hn, h.request(), blocks, last, time.Now())
		if err != nil {
			return fmt.Errorf("%s endpoint %d: %w", name, j, err)
		}
		last = ep.IPv4
		h.eps = append(h.eps, ep)
	}
	for j := range cfg.ListenersPerHost {
		l := h.listener(h.eps[j], uint16(j))
		if _, err := h.s.PutListener(ctx, l, h.lease); err != nil {
			return err
		}
		h.lsts = append(h.lsts, l)
	}
	return nil
}

// attach takes a lease (the live one again, as a restarted slimd does)
// and writes the host record and the listeners on it.
func (h *simHost) attach(ctx context.Context) error {
	if h.lease != 0 {
		if ttl, err := h.cli.TimeToLive(ctx, h.lease); err != nil || ttl.TTL <= 0 {
			h.lease = 0
		}
	}
	if h.lease == 0 {
		g, err := h.cli.Grant(ctx, leaseTTL)
		if err != nil {
			return err
		}
		h.lease = g.ID
	}
	ka, err := h.cli.KeepAlive(context.WithoutCancel(ctx), h.lease)
	if err != nil {
		return err
	}
	go func() {
		for range ka {
		}
	}()
	if err := h.s.PutHost(ctx, h.host, h.lease); err != nil {
		return err
	}
	for _, l := range h.lsts {
		if _, err := h.s.PutListener(ctx, l, h.lease); err != nil {
			return err
		}
	}
	return nil
}

func (h *simHost) request() api.EndpointRequest {
	h.serial++
	return api.EndpointRequest{
		ContainerID: fmt.Sprintf("%s-c%06d", h.host.Name, h.serial), IfName: "eth0",
		Netns:  fmt.Sprintf("/var/run/netns/cni-%s-%06d", h.host.Name, h.serial),
		Labels: map[string]string{"app": "app" + strconv.Itoa(h.serial%10), "io.kubernetes.pod.namespace": "default"},
	}
}

func (h *simHost) listener(ep api.Endpoint, j uint16) api.Listener {
	return api.Listener{VIP: ep.IPv4, Port: 8080, Host: h.host.Name, HostIP: h.host.UnderlayIP,
		HostPort: blocks.Last - j, ContainerID: ep.ContainerID, IfName: ep.IfName}
}

// watcher is one RunWatcher process.
type watcher struct {
	cmd     *exec.Cmd
	synced  chan synced
	mu      sync.Mutex
	seen    map[string]time.Time // "<cache>/<key>" -> when applied
	stopped chan struct{}
}

func startWatchers(ctx context.Context, cfg Config, cl *cluster) ([]*watcher, error) {
	var ws []*watcher
	for range cfg.Watchers {
		args := append(slices.Clone(cfg.Watcher[1:]), "--endpoints", strings.Join(cl.clients, ","), "--prefix", prefix)
		cmd := exec.CommandContext(ctx, cfg.Watcher[0], args...)
		dieWithParent(cmd)
		out, err := cmd.StdoutPipe()
		if err != nil {
			return ws, err
		}
		cmd.Stderr = os.Stderr
		w := &watcher{cmd: cmd, synced: make(chan synced, 1), seen: map[string]time.Time{}, stopped: make(chan struct{})}
		if err := cmd.Start(); err != nil {
			return ws, fmt.Errorf("start watcher: %w", err)
		}
		go w.read(out)
		ws = append(ws, w)
	}
	return ws, nil
}

func (w *watcher) read(out io.Reader) {
	defer close(w.stopped)
	sc := bufio.NewScanner(out)
	first := true
	for sc.Scan() {
		if first {
			first = false
			var s synced
			if json.Unmarshal(sc.Bytes(), &s) == nil {
				w.synced <- s
			}
			continue
		}
		key, ns, ok := strings.Cut(sc.Text(), " ")
		if v, err := strconv.ParseInt(ns, 10, 64); ok && err == nil {
			w.mu.Lock()
			w.seen[key] = time.Unix(0, v)
			w.mu.Unlock()
		}
	}
}

// seenAt is when the watcher applied key, if it has.
func (w *watcher) seenAt(key string) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	t, ok := w.seen[key]
	return t, ok
}

func stopWatchers(ws []*watcher) {
	for _, w := range ws {
		w.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-w.stopped:
		case <-time.After(5 * time.Second):
			w.cmd.Process.Kill()
		}
		w.cmd.Wait()
	}
}

// waitSynced collects every watcher's first report.
func waitSynced(ws []*watcher, timeout time.Duration) ([]synced, []time.Duration, error) {
	var ss []synced
	var took []time.Duration
	deadline := time.After(timeout)
	for _, w := range ws {
		select {
		case s := <-w.synced:
			ss = append(ss, s)
			took = append(took, time.Duration(s.Millis)*time.Millisecond)
		case <-w.stopped:
			return nil, nil, errors.New("a watcher exited before its caches synced")
		case <-deadline:
			return nil, nil, fmt.Errorf("watchers not synced after %s", timeout)
		}
	}
	return ss, took, nil
}

func fillColdStart(r *Result, ws []*watcher, n int) error {
	ss, took, err := waitSynced(ws, 10*time.Minute)
	if err != nil {
		return err
	}
	for _, s := range ss {
		if s.Hosts != n || s.Endpoints != r.Endpoints || s.Listeners != r.Listeners {
			return fmt.Errorf("a watcher synced %d hosts, %d endpoints, %d listeners; want %d, %d, %d",
				s.Hosts, s.Endpoints, s.Listeners, n, r.Endpoints, r.Listeners)
		}
	}
	r.ColdStartSeconds = median(took).Seconds()
	r.ColdStartBytes = ss[0].Bytes
	var rss []int64
	for _, w := range ws {
		b, err := rssOf(w.cmd.Process.Pid)
		if err != nil {
			return err
		}
		rss = append(rss, b)
	}
	r.RSSBytes = median(rss)
	heaps := make([]uint64, len(ss))
	for i, s := range ss {
		heaps[i] = s.HeapBytes
	}
	r.HeapBytes = median(heaps)
	return nil
}

func rssOf(pid int) (int64, error) { return procStatus(pid, "VmRSS") }

// procStatus reads one memory field of /proc/PID/status, in bytes (VmRSS:
// resident now; VmHWM: the most the process has been resident).
func procStatus(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

func median[T cmp.Ordered](xs []T) T {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// churn replaces endpoints (a container restart: delete, then add) and
// moves listeners at cfg.Churn of the endpoints per minute, and times
// each write's arrival in every watcher.
func churn(ctx context.Context, cfg Config, cl *cluster, hosts []*simHost, ws []*watcher, r *Result) error {
	before, err := cl.received()
	if err != nil {
		return err
	}
	writes, took, err := runChurn(ctx, cfg, hosts, r.Endpoints)
	if err != nil {
		return err
	}
	after, err := cl.received()
	if err != nil {
		return err
	}
	r.RequestsPerHost = (after - before) / took.Seconds() / float64(len(hosts))
	r.Writes = len(writes)
	// Give the last writes time to arrive, then collect.
	time.Sleep(2 * time.Second)
	var lat []time.Duration
	missing := 0
	for _, w := range writes {
		for _, wt := range ws {
			if at, ok := wt.seenAt(w.key); ok {
				lat = append(lat, at.Sub(w.at))
			} else {
				missing++
			}
		}
	}
	if missing > 0 {
		return fmt.Errorf("%d of %d writes never reached a watcher", missing, len(writes)*len(ws))
	}
	slices.Sort(lat)
	r.Samples = len(lat)
	r.PropagationP50 = lat[len(lat)/2].Seconds()
	r.PropagationP99 = lat[min(len(lat)-1, len(lat)*99/100)].Seconds()
	r.PropagationMax = lat[len(lat)-1].Seconds()
	return nil
}

// write is one churn write: the key the watchers see, when it started.
type write struct {
	key string
	at  time.Time
}

// runChurn replaces endpoints at cfg.Churn of endpoints per minute for
// cfg.Duration.
func runChurn(ctx context.Context, cfg Config, hosts []*simHost, endpoints int) ([]write, time.Duration, error) {
	perSec := cfg.Churn * float64(endpoints) / 60
	if perSec <= 0 {
		return nil, 0, errors.New("no churn")
	}
	interval := time.Duration(float64(time.Second) / perSec)
	var writes []write
	start := time.Now()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var g errgroup.Group
	g.SetLimit(64)
	var mu sync.Mutex
	for time.Since(start) < cfg.Duration {
		select {
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		case <-tick.C:
		}
		h := hosts[rand.IntN(len(hosts))]
		g.Go(func() error {
			key, at, err := h.replace(ctx, cfg)
			if err != nil {
				return err
			}
			mu.Lock()
			writes = append(writes, write{key, at})
			mu.Unlock()
			return nil
		})
	}
	err := g.Wait()
	return writes, time.Since(start), err
}

// replace restarts one of h's containers: the old endpoint goes, a new
// one comes (and takes over its listener, if it had one). It returns the
// key the watchers will see and when the write started.
func (h *simHost) replace(ctx context.Context, cfg Config) (string, time.Time, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	j := rand.IntN(len(h.eps))
	old := h.eps[j]
	if err := h.s.DelEndpoint(ctx, h.host.Name, api.Attachment{ContainerID: old.ContainerID, IfName: old.IfName}); err != nil {
		return "", time.Time{}, err
	}
	at := time.Now()
	ep, err := h.s.AddEndpoint(ctx, store.HostNet{Host: h.host.Name, Subnet4: h.host.Subnet4}, h.request(), blocks, old.IPv4, at)
	if err != nil {
		return "", time.Time{}, err
	}
	h.eps[j] = ep
	key := "endpoints/" + h.host.Name + "/" + ep.ContainerID + "/" + ep.IfName
	if j < len(h.lsts) {
		// The restarted server listens again: the listener record moves
		// to the new container (and its new address).
		if err := h.s.DeleteListener(ctx, h.host.Name, h.lsts[j].VIP, h.lsts[j].Port); err != nil {
			return "", time.Time{}, err
		}
		l := h.listener(ep, uint16(j))
		at = time.Now()
		if _, err := h.s.PutListener(ctx, l, h.lease); err != nil {
			return "", time.Time{}, err
		}
		h.lsts[j] = l
		key = "listeners/" + store.ListenerKey(l.VIP, l.Port)
	}
	return key, at, nil
}

// massRestart drops every host's connection and watcher at once, as a
// power cut or an upgrade of every slimd would, and times their return.
func massRestart(ctx context.Context, cfg Config, cl *cluster, hosts []*simHost, clients *[]*clientv3.Client, ws *[]*watcher, r *Result) error {
	stopWatchers(*ws)
	for _, c := range *clients {
		c.Close()
	}
	var err error
	if *clients, err = connect(hosts, cl.client); err != nil {
		return err
	}
	start := time.Now()
	nws, err := startWatchers(ctx, cfg, cl)
	*ws = nws
	if err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	for _, h := range hosts {
		g.Go(func() error { return h.attach(gctx) })
	}
	if err := g.Wait(); err != nil {
		return fmt.Errorf("mass restart: %w", err)
	}
	r.MassRestartSeconds = time.Since(start).Seconds()
	_, took, err := waitSynced(nws, 10*time.Minute)
	if err != nil {
		return err
	}
	r.MassRestartSyncSeconds = slices.MaxFunc(took, cmp.Compare).Seconds()
	time.Sleep(time.Second)
	r.EtcdSurvived = cl.alive()
	return nil
}
