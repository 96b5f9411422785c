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
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/slimnet/slim/internal/lab"
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

// appTools are the commands each application test needs in PATH, and the
// Debian packages they come in (scripts/deps.sh installs them). PostgreSQL's
// server binaries are looked up apart (postgresBinDir).
var appTools = map[string][][2]string{
	TestMemcached:  {{"memcached", "memcached"}},
	TestNginx:      {{"nginx", "nginx-light"}, {"wrk", "wrk"}},
	TestNginxClose: {{"nginx", "nginx-light"}, {"wrk", "wrk"}},
	TestPgbench:    {{"pgbench", "postgresql"}, {"setpriv", "util-linux"}},
	TestRedis:      {{"redis-server", "redis-server"}, {"redis-benchmark", "redis-tools"}},
}

// isAppTest tells the application tests from the core ones.
func isAppTest(test string) bool { return slices.Contains(AppTests, test) }

// appSettings are the application tests' parameters.
func (c Config) appSettings() AppSettings {
	return AppSettings{Seconds: c.appSeconds(), MemcachedConns: memcachedConns, MemcachedKeys: memcachedKeys,
		MemcachedValueSize: memcachedValueSize, MemcachedRatio: memcachedRatio, WrkThreads: wrkThreads, WrkConns: wrkConns,
		PgbenchClients: pgbenchClients, PgbenchThreads: pgbenchThreads, PgbenchScale: pgbenchScale, RedisClients: redisClients}
}

// apps is the state of the application tests during a run.
type apps struct {
	// dir is the benchmark's temporary directory (runner.tempDir), for
	// the servers' files: nginx's configuration and page, PostgreSQL's
	// data directories, Redis's working directory.
	dir string
	// pgBin holds initdb and postgres.
	pgBin string
	// redisRequests is redis-benchmark's -n, sized by the warm-up.
	redisRequests int
}

// checkTools finds the applications' tools, and builds crr1's client,
// before anything else is built. A missing tool is an error when the test
// was asked for by name (Config.Tests); otherwise the test is left out
// with a warning.
func (r *runner) checkTools(ctx context.Context) error {
	errs := []error{r.checkCRR1(ctx)}
	for _, test := range slices.Clone(r.tests) {
		if !isAppTest(test) {
			continue
		}
		var missing []string
		for _, t := range appTools[test] {
			if _, err := exec.LookPath(t[0]); err != nil {
				missing = append(missing, fmt.Sprintf("%s (Debian package %s)", t[0], t[1]))
			}
		}
		if test == TestPgbench {
			if _, err := postgresBinDir(); err != nil {
				missing = append(missing, "postgres and initdb (Debian package postgresql)")
			}
			if _, err := user.Lookup("postgres"); err != nil {
				missing = append(missing, "the postgres user (Debian package postgresql)")
			}
		}
		if len(missing) == 0 {
			continue
		}
		err := fmt.Errorf("%s: not installed: %s (scripts/deps.sh installs them)", test, strings.Join(missing, ", "))
		if r.cfg.Tests != nil {
			errs = append(errs, err)
			continue
		}
		r.warn("%v; the test is left out", err)
		r.tests = slices.DeleteFunc(r.tests, func(t string) bool { return t == test })
	}
	return errors.Join(errs...)
}

// postgresBinDir finds PostgreSQL's server binaries: Debian keeps them in
// /usr/lib/postgresql/<version>/bin, out of PATH (the newest version is
// taken), elsewhere they are in PATH.
func postgresBinDir() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int {
		va, _ := strconv.Atoi(filepath.Base(filepath.Dir(a)))
		vb, _ := strconv.Atoi(filepath.Base(filepath.Dir(b)))
		return vb - va
	})
	if p, err := exec.LookPath("postgres"); err == nil {
		dirs = append(dirs, filepath.Dir(p))
	}
	for _, d := range dirs {
		if isExecutable(filepath.Join(d, "postgres")) && isExecutable(filepath.Join(d, "initdb")) {
			return d, nil
		}
	}
	return "", errors.New("postgres and initdb not found")
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}

// appTestsIn lists the application tests among tests.
func appTestsIn(tests []string) []string {
	var a []string
	for _, t := range tests {
		if isAppTest(t) {
			a = append(a, t)
		}
	}
	return a
}

// dropTest leaves test out of the rest of the run: its setup failed.
func (r *runner) dropTest(test string, err error) {
	if !slices.Contains(r.tests, test) {
		return
	}
	r.failures++
	r.done++
	r.warn("%s: %v; the test is left out", test, err)
	r.tests = slices.DeleteFunc(r.tests, func(t string) bool { return t == test })
}

// setupApps prepares and starts the application servers in every mode and
// waits until they serve. An application that fails is left out of the
// run (a warning, counted as a failed measurement); only a cancelled ctx
// fails the setup.
func (r *runner) setupApps(ctx context.Context) error {
	tests := appTestsIn(r.tests)
	if len(tests) == 0 {
		return nil
	}
	dir, err := r.tempDir()
	if err != nil {
		return err
	}
	r.apps = &apps{dir: dir}
	has := func(t string) bool { return slices.Contains(r.tests, t) }
	nginx := has(TestNginx) || has(TestNginxClose)
	dropNginx := func(err error) {
		r.dropTest(TestNginx, err)
		r.dropTest(TestNginxClose, err)
	}
	if nginx {
		if err := r.writeNginxFiles(); err != nil {
			dropNginx(err)
			nginx = false
		}
	}
	if has(TestPgbench) {
		if err := r.initdb(ctx); err != nil {
			r.dropTest(TestPgbench, err)
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}

	// Start every server in every mode, then wait for them: the modes'
	// servers start in parallel.
	type started struct {
		test string
		e    *env
		p    *proc
		port int
	}
	var all []started
	for _, e := range r.envs {
		if has(TestMemcached) {
			p := r.start(ctx, e.server, "memcached", "-u", "nobody", "-l", e.addr.String(), "-p", strconv.Itoa(memcachedPort),
				"-U", "0", "-t", strconv.Itoa(memcachedThreads), "-m", "64", "-c", "4096")
			e.servers = append(e.servers, p)
			all = append(all, started{TestMemcached, e, p, memcachedPort})
		}
		if nginx {
			prefix := r.apps.path("nginx-" + e.mode)
			p := r.start(ctx, e.server, "nginx", "-p", prefix+"/", "-e", filepath.Join(prefix, "logs", "error.log"),
				"-c", filepath.Join(prefix, "nginx.conf"))
			e.servers = append(e.servers, p)
			all = append(all, started{TestNginx, e, p, nginxPort})
		}
		if has(TestPgbench) {
			p := r.startPostgres(ctx, e)
			e.servers = append(e.servers, p)
			all = append(all, started{TestPgbench, e, p, postgresPort})
		}
		if has(TestRedis) {
			rdir := r.apps.path("redis-" + e.mode)
			if err := os.MkdirAll(rdir, 0o755); err != nil {
				return err
			}
			p := r.start(ctx, e.server, "redis-server", "--bind", e.addr.String(), "--port", strconv.Itoa(redisPort),
				"--save", "", "--appendonly", "no", "--protected-mode", "no", "--daemonize", "no", "--dir", rdir, "--logfile", "")
			e.servers = append(e.servers, p)
			all = append(all, started{TestRedis, e, p, redisPort})
		}
	}
	alive := func(test string) bool {
		if test == TestNginx {
			return has(TestNginx) || has(TestNginxClose)
		}
		return has(test)
	}
	for _, s := range all {
		if !alive(s.test) {
			continue // failed in an earlier mode
		}
		err := r.appReady(ctx, s.e, s.p, s.port)
		if err == nil {
			err = r.appWarmup(ctx, s.test, s.e)
		}
		if err == nil {
			continue
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		err = fmt.Errorf("%s: %w", s.e.mode, err)
		if s.test == TestNginx {
			dropNginx(err)
		} else {
			r.dropTest(s.test, err)
		}
	}
	if has(TestRedis) && r.apps.redisRequests == 0 {
		r.apps.redisRequests = redisWarmupRequests
	}
	r.report.Settings.Apps.RedisRequests = r.apps.redisRequests
	var names []string
	for _, t := range AppTests {
		if has(t) {
			names = append(names, t)
		}
	}
	r.pr.step("application servers ready: %s", strings.Join(names, ", "))
	return nil
}

// path is a file in the applications' directory.
func (a *apps) path(elem ...string) string { return filepath.Join(append([]string{a.dir}, elem...)...) }

// appReady waits until p serves on port in e's server namespace.
func (r *runner) appReady(ctx context.Context, e *env, p *proc, port int) error {
	if e.mode == ModeSlim {
		if err := r.waitListeners(ctx, e.addr, port); err != nil {
			if p.exited() {
				return errors.New(p.failure())
			}
			return err
		}
	}
	if _, err := r.probe(ctx, e, "wait", "-addr", r.dst(e, port), "-timeout", readyTimeout.String()); err != nil {
		if p.exited() {
			return errors.New(p.failure())
		}
		return fmt.Errorf("server %s: %w", r.dst(e, port), err)
	}
	return nil
}

// appWarmup readies an application in e once its server accepts
// connections: PostgreSQL's tables; a short load for memcached; for
// redis, a short run that sizes the measured ones (from host mode).
func (r *runner) appWarmup(ctx context.Context, test string, e *env) error {
	switch test {
	case TestMemcached:
		_, err := r.memcached(ctx, e, memcachedWarmup)
		return err
	case TestPgbench:
		return r.pgbenchInit(ctx, e)
	case TestRedis:
		out, err := lab.Output(ctx, r.lab, e.client, r.redisBenchmark(e, redisWarmupRequests)...)
		res, perr := ParseRedisBenchmark(out)
		if err = errors.Join(err, perr); err != nil {
			return fmt.Errorf("redis-benchmark: %w", err)
		}
		if e.mode == ModeHost {
			// Each of SET and GET takes half the test's time in host
			// mode, the fastest, at the warm-up's rate.
			rate := (res["SET"].RPS + res["GET"].RPS) / 2
			n := rate * float64(r.cfg.appSeconds()) / 2
			r.apps.redisRequests = max(redisWarmupRequests, int(math.Round(n/1000))*1000)
		}
	}
	return nil
}

// measureApp runs one application test in e.
func (r *runner) measureApp(ctx context.Context, test string, e *env) ([]value, error) {
	switch test {
	case TestMemcached:
		return r.memcached(ctx, e, time.Duration(r.cfg.appSeconds())*time.Second)
	case TestNginx:
		return r.wrk(ctx, e, false)
	case TestNginxClose:
		return r.wrk(ctx, e, true)
	case TestPgbench:
		return r.pgbench(ctx, e)
	case TestRedis:
		return r.redis(ctx, e)
	}
	return nil, fmt.Errorf("unknown test %q", test)
}

func (r *runner) memcached(ctx context.Context, e *env, d time.Duration) ([]value, error) {
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
	cpu, err := probeCPU(res.CPUStart, res.CPUEnd)
	if err != nil {
		return nil, err
	}
	return []value{
		{id: FigMemcachedRate, v: res.OpsPerSec, show: "ops/s"},
		{id: FigMemcachedP50, v: res.P50, show: "µs p50"},
		{id: FigMemcachedP99, v: res.P99, show: "µs p99"},
		perOp(FigMemcachedCPU, cpu, float64(res.Ops)),
	}, nil
}

func (r *runner) wrk(ctx context.Context, e *env, closeConns bool) ([]value, error) {
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

// writeNginxFiles writes each mode's nginx configuration and the page.
// nginx runs as one process (master_process off), so that stopping the
// process the benchmark started stops nginx; the temporary paths are
// under its prefix, as Debian's defaults in /var/lib/nginx may not exist.
func (r *runner) writeNginxFiles() error {
	www := r.apps.path("www")
	if err := os.MkdirAll(www, 0o755); err != nil {
		return err
	}
	page := []byte(strings.Repeat("Slim benchmark page. ", nginxPage/21+1)[:nginxPage-1] + "\n")
	if err := os.WriteFile(filepath.Join(www, "index.html"), page, 0o644); err != nil {
		return err
	}
	for _, e := range r.envs {
		prefix := r.apps.path("nginx-" + e.mode)
		if err := os.MkdirAll(filepath.Join(prefix, "logs"), 0o755); err != nil {
			return err
		}
		conf := fmt.Sprintf(`# slimctl bench, %[1]s mode
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 16384;
error_log %[2]s/logs/error.log warn;
pid %[2]s/nginx.pid;
events {
	worker_connections 8192;
}
http {
	access_log off;
	sendfile on;
	tcp_nopush on;
	keepalive_requests 1000000;
	client_body_temp_path %[2]s/body;
	proxy_temp_path %[2]s/proxy;
	fastcgi_temp_path %[2]s/fastcgi;
	uwsgi_temp_path %[2]s/uwsgi;
	scgi_temp_path %[2]s/scgi;
	server {
		listen %[3]s;
		root %[4]s;
	}
}
`, e.mode, prefix, r.dst(e, nginxPort), www)
		if err := os.WriteFile(filepath.Join(prefix, "nginx.conf"), []byte(conf), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// asPostgres runs command as the postgres user (setpriv keeps the
// namespace and cgroup the launcher put us in).
func asPostgres(command ...string) []string {
	return append([]string{"setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups"}, command...)
}

// initdb makes one data directory (in h1, as a lab process), lets any
// host connect without a password (only the lab's namespaces can reach
// the servers), and copies it for every mode.
func (r *runner) initdb(ctx context.Context) error {
	bin, err := postgresBinDir()
	if err != nil {
		return err
	}
	r.apps.pgBin = bin
	u, err := user.Lookup("postgres")
	if err != nil {
		return err
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	tmpl := r.apps.path("pg-template")
	if err := os.Mkdir(tmpl, 0o700); err != nil {
		return err
	}
	if err := os.Chown(tmpl, uid, gid); err != nil {
		return err
	}
	out, err := lab.Output(ctx, r.lab, serverHost, asPostgres(filepath.Join(bin, "initdb"), "-D", tmpl, "-U", "postgres",
		"--auth=trust", "--no-sync", "--no-instructions", "-E", "UTF8", "--locale=C")...)
	if err != nil {
		return fmt.Errorf("initdb: %w (%s)", err, trim(strings.TrimSpace(string(out)), 200))
	}
	hba := filepath.Join(tmpl, "pg_hba.conf")
	if err := os.WriteFile(hba, []byte("local all all trust\nhost all all 0.0.0.0/0 trust\n"), 0o600); err != nil {
		return err
	}
	if err := os.Chown(hba, uid, gid); err != nil {
		return err
	}
	for _, e := range r.envs {
		if out, err := exec.CommandContext(ctx, "cp", "-a", tmpl, r.apps.path("pg-"+e.mode)).CombinedOutput(); err != nil {
			return fmt.Errorf("copy data directory: %w: %s", err, out)
		}
	}
	return nil
}

// startPostgres starts e's PostgreSQL, listening on e's address and on a
// Unix socket in its data directory (the namespaces share the file
// system). Durability is off: the benchmark measures the network.
func (r *runner) startPostgres(ctx context.Context, e *env) *proc {
	data := r.apps.path("pg-" + e.mode)
	p := r.start(ctx, e.server, asPostgres(filepath.Join(r.apps.pgBin, "postgres"), "-D", data,
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
	return p
}

// pgbenchInit creates pgbench's tables over the Unix socket, as a lab
// process in e's server namespace, retrying while the server starts up.
func (r *runner) pgbenchInit(ctx context.Context, e *env) error {
	deadline := time.Now().Add(readyTimeout)
	for {
		out, err := lab.Output(ctx, r.lab, e.server, "pgbench", "-i", "-q", "-s", strconv.Itoa(pgbenchScale),
			"-h", r.apps.path("pg-"+e.mode), "-p", strconv.Itoa(postgresPort), "-U", "postgres", "postgres")
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

func (r *runner) pgbench(ctx context.Context, e *env) ([]value, error) {
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

// redisBenchmark is redis-benchmark's command line for e.
func (r *runner) redisBenchmark(e *env, requests int) []string {
	return []string{"redis-benchmark", "-h", e.addr.String(), "-p", strconv.Itoa(redisPort), "-t", "set,get",
		"-n", strconv.Itoa(requests), "-c", strconv.Itoa(redisClients), "--csv"}
}

func (r *runner) redis(ctx context.Context, e *env) ([]value, error) {
	n := r.apps.redisRequests
	out, cpu, err := r.clientCommand(ctx, e, r.redisBenchmark(e, n)...)
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

// tempDir is the benchmark's temporary directory, made on first use.
// Others may read it: the postgres user must reach its data directories.
func (r *runner) tempDir() (string, error) {
	if r.dir != "" {
		return r.dir, nil
	}
	dir, err := os.MkdirTemp("", "slim-bench-")
	if err != nil {
		return "", err
	}
	r.dir = dir
	return dir, os.Chmod(dir, 0o755)
}

// removeDir removes the temporary directory; the servers must be
// stopped.
func (r *runner) removeDir() error {
	if r.dir == "" {
		return nil
	}
	err := os.RemoveAll(r.dir)
	r.dir = ""
	return err
}
