package bench

// The application tests, as in the Slim paper's evaluation: the servers
// are Debian's, started once per mode in the mode's server namespace (h1,
// or the server container) as lab processes, and kept for all runs; the
// clients run in the client namespace for each measurement.
//
//	memcached    memcached; slimprobe memcached (text protocol, one
//	             request outstanding per connection, 1:10 sets:gets)
//	nginx        nginx (one process, a 612-byte static page); wrk with
//	             keep-alive connections
//	nginx-close  the same with `Connection: close`: one request per
//	             connection, so connection setup dominates
//	pgbench      PostgreSQL (initdb into a temporary directory, as the
//	             postgres user); pgbench -S, select-only
//	redis        redis-server without persistence; redis-benchmark SET
//	             and GET
//
// The CPU time per operation is the whole machine's over the client's
// run (/proc/stat read before and after it), so it includes the client's
// start and, for pgbench and redis-benchmark, their connection setup.

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/slimnet/slim/internal/lab"
	"github.com/slimnet/slim/internal/lab/apps"
)

// Ports of the application servers, the same in every mode's server
// namespace.
const (
	memcachedPort = 11211
	nginxPort     = 8080
	postgresPort  = 5432
	redisPort     = 6379
)

// The application tests' load. The machine has 2 cores that the client,
// the server and (in slim mode) slimd share; the loads keep both busy
// without piling up runnable threads.
const (
	// memcachedConns: one per core. Each has one request outstanding,
	// so throughput follows latency, as in the paper's memcached test.
	memcachedConns     = 2
	memcachedKeys      = 1000
	memcachedValueSize = 64
	memcachedRatio     = "1:10" // sets:gets, memtier_benchmark's default
	memcachedThreads   = 2      // memcached -t
	wrkThreads         = 2
	wrkConns           = 32
	pgbenchClients     = 4
	pgbenchThreads     = 2
	pgbenchScale       = 1
	// redisClients is redis-benchmark's default.
	redisClients = 50
	// redisWarmupRequests size the warm-up run that sizes the measured
	// ones (redis-benchmark counts requests; it has no duration).
	redisWarmupRequests = 5000
	// memcachedWarmup: a short load generator run per mode before
	// measuring (also checks that it works).
	memcachedWarmup = 300 * time.Millisecond
	// pgInitRetry is how often the pgbench -i of a starting server is
	// tried again ("the database system is starting up").
	pgInitRetry = 200 * time.Millisecond
)

// nginxPage is the size of the page nginx serves: the size of nginx's own
// welcome page.
const nginxPage = 612

// appSettings are the application tests' parameters.
func (c Config) appSettings() AppSettings {
	return AppSettings{Seconds: c.appSeconds(), MemcachedConns: memcachedConns, MemcachedKeys: memcachedKeys,
		MemcachedValueSize: memcachedValueSize, MemcachedRatio: memcachedRatio, WrkThreads: wrkThreads, WrkConns: wrkConns,
		PgbenchClients: pgbenchClients, PgbenchThreads: pgbenchThreads, PgbenchScale: pgbenchScale, RedisClients: redisClients}
}

// appTest is what the application tests share: no check beyond their
// needs, and Config.AppTime (whole seconds) per measurement.
type appTest struct{}

func (appTest) check(context.Context, *runner) error { return nil }

func (appTest) duration(c Config) (time.Duration, time.Duration) {
	d := time.Duration(c.appSeconds()) * time.Second
	return d, d
}

// memcachedTest is memcached with slimprobe's load generator.
type memcachedTest struct{ appTest }

func (*memcachedTest) name() string     { return TestMemcached }
func (*memcachedTest) needs() []tool    { return []tool{{what: "memcached", pkg: "memcached"}} }
func (t *memcachedTest) server() server { return t }

func (*memcachedTest) prepare(context.Context, *runner) error { return nil }

func (*memcachedTest) start(ctx context.Context, r *runner, e *env) (*proc, int) {
	return r.start(ctx, e.server, "memcached", "-u", "nobody", "-l", e.addr.String(), "-p", strconv.Itoa(memcachedPort),
		"-U", "0", "-t", strconv.Itoa(memcachedThreads), "-m", "64", "-c", "4096"), memcachedPort
}

// warmup is a short load, which also checks the load generator.
func (t *memcachedTest) warmup(ctx context.Context, r *runner, e *env) error {
	_, err := t.run(ctx, r, e, memcachedWarmup)
	return err
}

func (t *memcachedTest) measure(ctx context.Context, r *runner, e *env) ([]value, error) {
	return t.run(ctx, r, e, time.Duration(r.cfg.appSeconds())*time.Second)
}

// run runs the load generator in e for d.
func (*memcachedTest) run(ctx context.Context, r *runner, e *env, d time.Duration) ([]value, error) {
	out, err := r.probe(ctx, e, "memcached", "-addr", r.dst(e, memcachedPort), "-conns", strconv.Itoa(memcachedConns),
		"-duration", d.String(), "-keys", strconv.Itoa(memcachedKeys), "-size", strconv.Itoa(memcachedValueSize),
		"-ratio", memcachedRatio)
	res, perr := ParseMemcached(out)
	if perr != nil && (len(out) > 0 || err == nil) {
		err = perr // the report says more than the exit status
	}
	if err != nil {
		return nil, err
	}
	return withProbeCPU([]value{
		{id: FigMemcachedRate, v: res.OpsPerSec, show: "ops/s"},
		{id: FigMemcachedP50, v: res.P50, show: "µs p50"},
		{id: FigMemcachedP99, v: res.P99, show: "µs p99"},
	}, FigMemcachedCPU, res.CPUStart, res.CPUEnd, float64(res.Ops))
}

// nginxTest is nginx with wrk: keep-alive connections (nginx), or one
// request per connection (nginx-close), against the same nginx.
type nginxTest struct {
	appTest
	srv        *nginxServer
	closeConns bool
}

func (t *nginxTest) name() string {
	if t.closeConns {
		return TestNginxClose
	}
	return TestNginx
}

func (*nginxTest) needs() []tool {
	return []tool{{what: "nginx", pkg: "nginx-light"}, {what: "wrk", pkg: "wrk"}}
}

func (t *nginxTest) server() server { return t.srv }

func (t *nginxTest) measure(ctx context.Context, r *runner, e *env) ([]value, error) {
	closeConns := t.closeConns
	args := []string{"wrk", "-t", strconv.Itoa(wrkThreads), "-c", strconv.Itoa(wrkConns),
		"-d", strconv.Itoa(r.cfg.appSeconds()) + "s", "--latency"}
	if closeConns {
		args = append(args, "-H", "Connection: close")
	}
	args = append(args, "http://"+r.dst(e, nginxPort)+"/")
	out, cpu, err := r.clientCommand(ctx, e, args...)
	res, perr := ParseWrk(out)
	if perr != nil && (errors.Is(perr, ErrWrk) || err == nil) {
		err = perr
	}
	if err != nil {
		return nil, err
	}
	test, rate, p50, p99, cpuFig := TestNginx, FigNginxRate, FigNginxP50, FigNginxP99, FigNginxCPU
	if closeConns {
		test, rate, p50, p99, cpuFig = TestNginxClose, FigNginxCloseRate, FigNginxCloseP50, FigNginxCloseP99, FigNginxCloseCPU
	}
	if n := res.Errors(); n > 0 {
		r.warn("%s %s: %d errors in %d requests (socket errors: connect %d, read %d, write %d, timeout %d; non-2xx responses %d)",
			e.mode, test, n, res.Requests, res.ConnectErrors, res.ReadErrors, res.WriteErrors, res.Timeouts, res.Non2xx)
	}
	return []value{
		{id: rate, v: res.RPS, show: "requests/s"},
		{id: p50, v: res.Latency.P50, show: "µs p50"},
		{id: p99, v: res.Latency.P99, show: "µs p99"},
		perOp(cpuFig, cpu, float64(res.Requests)),
	}, nil
}

// nginxServer is the nginx both nginx tests measure: one process
// (master_process off), so that stopping the process the benchmark
// started stops nginx.
type nginxServer struct{}

// prepare writes each mode's nginx configuration and the page. The
// temporary paths are under nginx's prefix, as Debian's defaults in
// /var/lib/nginx may not exist.
func (*nginxServer) prepare(_ context.Context, r *runner) error {
	www := r.path("www")
	if err := os.MkdirAll(www, 0o755); err != nil {
		return err
	}
	page := []byte(strings.Repeat("Slim benchmark page. ", nginxPage/21+1)[:nginxPage-1] + "\n")
	if err := os.WriteFile(filepath.Join(www, "index.html"), page, 0o644); err != nil {
		return err
	}
	for _, e := range r.envs {
		n := apps.Nginx{Prefix: r.path("nginx-" + e.mode), Listen: r.dst(e, nginxPort), Root: www,
			Comment: "slimctl bench, " + e.mode + " mode"}
		if err := n.Write(); err != nil {
			return err
		}
	}
	return nil
}

func (*nginxServer) start(ctx context.Context, r *runner, e *env) (*proc, int) {
	return r.start(ctx, e.server, apps.Nginx{Prefix: r.path("nginx-" + e.mode)}.Command()...), nginxPort
}

func (*nginxServer) warmup(context.Context, *runner, *env) error { return nil }

// pgbenchTest is PostgreSQL with pgbench -S.
type pgbenchTest struct {
	appTest
	// bin holds initdb and postgres.
	bin string
}

func (*pgbenchTest) name() string { return TestPgbench }

// needs: PostgreSQL's server binaries are out of PATH on Debian
// (apps.PostgresBinDir), and the server runs as the postgres user.
func (*pgbenchTest) needs() []tool {
	return []tool{{what: "pgbench", pkg: "postgresql"}, {what: "setpriv", pkg: "util-linux"},
		{what: "postgres and initdb", pkg: "postgresql", find: func() error { _, err := apps.PostgresBinDir(); return err }},
		{what: "the postgres user", pkg: "postgresql", find: func() error { _, err := user.Lookup("postgres"); return err }}}
}

func (t *pgbenchTest) server() server { return t }

// prepare makes one data directory with initdb (in h1, as a lab
// process), lets any host connect without a password (only the lab's
// namespaces can reach the servers), and copies it for every mode.
func (t *pgbenchTest) prepare(ctx context.Context, r *runner) error {
	bin, err := apps.PostgresBinDir()
	if err != nil {
		return err
	}
	t.bin = bin
	tmpl := r.path("pg-template")
	err = apps.InitPostgres(tmpl, bin, func(command ...string) ([]byte, error) {
		return lab.Output(ctx, r.lab, serverHost, command...)
	})
	if err != nil {
		return err
	}
	for _, e := range r.envs {
		if out, err := exec.CommandContext(ctx, "cp", "-a", tmpl, r.path("pg-"+e.mode)).CombinedOutput(); err != nil {
			return fmt.Errorf("copy data directory: %w: %s", err, out)
		}
	}
	return nil
}

// start starts e's PostgreSQL, listening on e's address and on a Unix
// socket in its data directory (the namespaces share the file system).
// Durability is off: the benchmark measures the network.
func (t *pgbenchTest) start(ctx context.Context, r *runner, e *env) (*proc, int) {
	data := r.path("pg-" + e.mode)
	p := r.start(ctx, e.server, apps.AsPostgres(filepath.Join(t.bin, "postgres"), "-D", data,
		"-p", strconv.Itoa(postgresPort), "-k", data, "-c", "listen_addresses="+e.addr.String(),
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off", "-c", "max_connections=100")...)
	// postgres forks a backend per connection: stopping only the
	// postmaster with SIGKILL would leave them. SIGINT is its fast
	// shutdown: backends are told to exit and waited for.
	p.interrupt = func() error {
		b, err := os.ReadFile(filepath.Join(data, "postmaster.pid"))
		if err != nil {
			return err
		}
		line, _, _ := strings.Cut(string(b), "\n")
		pid, err := strconv.Atoi(strings.TrimSpace(line))
		if err != nil || pid <= 1 {
			return fmt.Errorf("postmaster.pid: %q", line)
		}
		return syscall.Kill(pid, syscall.SIGINT)
	}
	return p, postgresPort
}

// warmup creates pgbench's tables over the Unix socket, as a lab process
// in e's server namespace, retrying while the server starts up.
func (*pgbenchTest) warmup(ctx context.Context, r *runner, e *env) error {
	deadline := time.Now().Add(readyTimeout)
	for {
		out, err := lab.Output(ctx, r.lab, e.server, "pgbench", "-i", "-q", "-s", strconv.Itoa(pgbenchScale),
			"-h", r.path("pg-"+e.mode), "-p", strconv.Itoa(postgresPort), "-U", "postgres", "postgres")
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("pgbench -i: %w (%s)", err, trim(strings.TrimSpace(string(out)), 200))
		}
		select {
		case <-ctx.Done():
		case <-time.After(pgInitRetry):
		}
	}
}

func (*pgbenchTest) measure(ctx context.Context, r *runner, e *env) ([]value, error) {
	out, cpu, err := r.clientCommand(ctx, e, "pgbench", "-n", "-S", "-c", strconv.Itoa(pgbenchClients), "-j", strconv.Itoa(pgbenchThreads),
		"-T", strconv.Itoa(r.cfg.appSeconds()), "-h", e.addr.String(), "-p", strconv.Itoa(postgresPort), "-U", "postgres", "postgres")
	res, perr := ParsePgbench(out)
	if perr != nil && (errors.Is(perr, ErrPgbench) || err == nil) {
		err = errors.Join(err, perr)
	}
	if err != nil {
		return nil, err
	}
	if res.Failed > 0 {
		r.warn("%s pgbench: %d of %d transactions failed", e.mode, res.Failed, res.Failed+res.Transactions)
	}
	return []value{
		{id: FigPgbenchRate, v: res.TPS, show: "tps"},
		{id: FigPgbenchLatency, v: res.LatencyAvg, show: "µs avg"},
		perOp(FigPgbenchCPU, cpu, float64(res.Transactions)),
	}, nil
}

// redisTest is Redis with redis-benchmark, SET and GET.
type redisTest struct {
	appTest
	// requests is redis-benchmark's -n, sized by the warm-up.
	requests int
}

func (*redisTest) name() string { return TestRedis }

func (*redisTest) needs() []tool {
	return []tool{{what: "redis-server", pkg: "redis-server"}, {what: "redis-benchmark", pkg: "redis-tools"}}
}

// duration: redis-benchmark counts requests, sized for host mode's rate,
// so slower modes take longer.
func (*redisTest) duration(c Config) (time.Duration, time.Duration) {
	d := time.Duration(c.appSeconds()) * time.Second
	return d, 4 * d
}

func (t *redisTest) server() server { return t }

// prepare makes each mode's working directory.
func (t *redisTest) prepare(_ context.Context, r *runner) error {
	for _, e := range r.envs {
		if err := os.MkdirAll(r.path("redis-"+e.mode), 0o755); err != nil {
			return err
		}
	}
	t.setRequests(r, redisWarmupRequests)
	return nil
}

func (*redisTest) start(ctx context.Context, r *runner, e *env) (*proc, int) {
	return r.start(ctx, e.server, "redis-server", "--bind", e.addr.String(), "--port", strconv.Itoa(redisPort),
		"--save", "", "--appendonly", "no", "--protected-mode", "no", "--daemonize", "no", "--dir", r.path("redis-"+e.mode),
		"--logfile", ""), redisPort
}

// warmup is a short run, which in host mode sizes the measured ones.
func (t *redisTest) warmup(ctx context.Context, r *runner, e *env) error {
	out, err := lab.Output(ctx, r.lab, e.client, redisBenchmark(e, redisWarmupRequests)...)
	res, perr := ParseRedisBenchmark(out)
	if err = errors.Join(err, perr); err != nil {
		return fmt.Errorf("redis-benchmark: %w", err)
	}
	if e.mode == ModeHost {
		// Each of SET and GET takes half the test's time in host mode,
		// the fastest, at the warm-up's rate.
		rate := (res["SET"].RPS + res["GET"].RPS) / 2
		n := rate * float64(r.cfg.appSeconds()) / 2
		t.setRequests(r, max(redisWarmupRequests, int(math.Round(n/1000))*1000))
	}
	return nil
}

// setRequests sets redis-benchmark's -n, and the report's.
func (t *redisTest) setRequests(r *runner, n int) {
	t.requests = n
	r.report.Settings.Apps.RedisRequests = n
}

// redisBenchmark is redis-benchmark's command line for e.
func redisBenchmark(e *env, requests int) []string {
	return []string{"redis-benchmark", "-h", e.addr.String(), "-p", strconv.Itoa(redisPort), "-t", "set,get",
		"-n", strconv.Itoa(requests), "-c", strconv.Itoa(redisClients), "--csv"}
}

func (t *redisTest) measure(ctx context.Context, r *runner, e *env) ([]value, error) {
	n := t.requests
	out, cpu, err := r.clientCommand(ctx, e, redisBenchmark(e, n)...)
	res, perr := ParseRedisBenchmark(out)
	if err = errors.Join(err, perr); err != nil {
		return nil, err
	}
	set, okSet := res["SET"]
	get, okGet := res["GET"]
	if !okSet || !okGet {
		return nil, fmt.Errorf("redis-benchmark: no SET or GET in its report")
	}
	vals := []value{
		{id: FigRedisSetRate, v: set.RPS, show: "SET/s"},
		{id: FigRedisGetRate, v: get.RPS, show: "GET/s"},
	}
	if get.HasPercentiles {
		vals = append(vals, value{id: FigRedisGetP50, v: get.P50Us, show: "µs p50"}, value{id: FigRedisGetP99, v: get.P99Us, show: "µs p99"})
	}
	return append(vals, perOp(FigRedisCPU, cpu, float64(2*n))), nil
}
