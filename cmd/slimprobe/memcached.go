package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/slimnet/slim/internal/bench/wire"
)

// memcached is a load generator speaking memcached's text protocol: conns
// connections, each on its own thread with one request outstanding (as
// memtier_benchmark with --pipeline=1), mixing set and get of keys drawn
// uniformly from -keys keys, which it stores first (untimed).
func memcached(args []string) error {
	fs := flag.NewFlagSet("memcached", flag.ExitOnError)
	addr := fs.String("addr", "", "memcached's address")
	conns := fs.Int("conns", 4, "connections, one thread each")
	n := fs.Int("n", 0, "operations per connection (0: until -duration)")
	duration := fs.Duration("duration", 0, "time to run (0: until -n)")
	keys := fs.Int("keys", 1000, "distinct keys")
	size := fs.Int("size", 64, "value size in bytes")
	ratio := fs.String("ratio", "1:10", "sets:gets")
	fs.Parse(args)
	if *n <= 0 && *duration <= 0 {
		return fmt.Errorf("memcached: set -n or -duration")
	}
	var sets, gets int
	if _, err := fmt.Sscanf(*ratio, "%d:%d", &sets, &gets); err != nil || sets < 0 || gets < 0 || sets+gets == 0 {
		return fmt.Errorf("memcached: -ratio %q: want sets:gets, such as 1:10", *ratio)
	}
	if *keys < 1 || *size < 1 || *size > 1<<20 {
		return fmt.Errorf("memcached: -keys must be at least 1 and -size 1 to %d", 1<<20)
	}
	ap, err := netip.ParseAddrPort(*addr)
	if err != nil {
		return err
	}
	value := make([]byte, *size)
	for i := range value {
		value[i] = 'a' + byte(i%26)
	}
	names := make([]string, *keys)
	for k := range names {
		names[k] = fmt.Sprintf("slimprobe:%d", k)
	}
	// Store every key first, so that gets hit.
	pre, err := newMCConn(ap)
	if err != nil {
		return err
	}
	for k, key := range names {
		if err := pre.set(key, value); err != nil {
			pre.close()
			return fmt.Errorf("memcached: store key %d: %w", k, err)
		}
	}
	pre.close()

	w := max(1, *conns)
	type workerResult struct {
		lat                            []time.Duration
		sets, gets, hits, misses, errs int
		firstErr                       error
	}
	results := make([]workerResult, w)
	var wg sync.WaitGroup
	startGate := make(chan struct{})
	var start time.Time
	for i := range w {
		c, err := newMCConn(ap)
		if err != nil {
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.close()
			runtime.LockOSThread()
			r := &results[i]
			r.lat = make([]time.Duration, 0, max(*n, 1<<15))
			rnd := rand.New(rand.NewPCG(uint64(i), 42))
			<-startGate
			for op := 0; *n <= 0 || op < *n; op++ {
				key := names[rnd.IntN(len(names))]
				t := time.Now()
				var hit bool
				var err error
				isSet := op%(sets+gets) < sets
				if isSet {
					err = c.set(key, value)
				} else {
					hit, err = c.get(key)
				}
				now := time.Now()
				if err != nil {
					// The connection's state is unknown: this worker stops.
					r.errs++
					r.firstErr = err
					return
				}
				r.lat = append(r.lat, now.Sub(t))
				switch {
				case isSet:
					r.sets++
				case hit:
					r.gets++
					r.hits++
				default:
					r.gets++
					r.misses++
				}
				if *duration > 0 && now.Sub(start) >= *duration {
					return
				}
			}
		}()
	}
	res := wire.MemcachedResult{Mode: "memcached", Addr: ap.String(), Conns: w, Keys: *keys, ValueSize: *size, Ratio: *ratio}
	el, c0, c1, err := timed(func(t time.Time) error {
		start = t
		close(startGate)
		wg.Wait()
		return nil
	})
	if err != nil {
		return err
	}
	res.CPUStart, res.CPUEnd = c0, c1
	var lat []time.Duration
	for _, r := range results {
		lat = append(lat, r.lat...)
		res.Sets += r.sets
		res.Gets += r.gets
		res.Hits += r.hits
		res.Misses += r.misses
		res.Errors += r.errs
		if r.firstErr != nil && res.FirstError == "" {
			res.FirstError = r.firstErr.Error()
		}
	}
	res.Ops = len(lat)
	res.Seconds = el.Seconds()
	res.OpsPerSec = float64(len(lat)) / el.Seconds()
	res.Latencies = summarize(lat)
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		return err
	}
	if res.Errors > 0 {
		return fmt.Errorf("memcached: %d of %d connections failed: %s", res.Errors, w, res.FirstError)
	}
	return nil
}

// mcConn is a blocking memcached text-protocol connection.
type mcConn struct {
	fd  int
	rd  *bufio.Reader
	req []byte
}

func newMCConn(ap netip.AddrPort) (*mcConn, error) {
	fd, err := dialBlocking(ap, nil)
	if err != nil {
		return nil, err
	}
	unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	return &mcConn{fd: fd, rd: bufio.NewReaderSize(fdReader(fd), 64<<10)}, nil
}

func (c *mcConn) close() { unix.Close(c.fd) }

// set stores value under key: "set <key> 0 0 <bytes>\r\n<value>\r\n",
// answered "STORED\r\n".
func (c *mcConn) set(key string, value []byte) error {
	c.req = fmt.Appendf(c.req[:0], "set %s 0 0 %d\r\n", key, len(value))
	c.req = append(append(c.req, value...), "\r\n"...)
	if err := writeAll(c.fd, c.req); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	line, err := c.line()
	if err != nil {
		return err
	}
	if line != "STORED" {
		return fmt.Errorf("set %s: %q", key, line)
	}
	return nil
}

// get fetches key: "get <key>\r\n", answered by "VALUE <key> <flags>
// <bytes>\r\n<data>\r\n" (absent on a miss), then "END\r\n".
func (c *mcConn) get(key string) (hit bool, err error) {
	c.req = append(append(append(c.req[:0], "get "...), key...), "\r\n"...)
	if err := writeAll(c.fd, c.req); err != nil {
		return false, fmt.Errorf("send: %w", err)
	}
	for {
		line, err := c.line()
		if err != nil {
			return false, err
		}
		if line == "END" {
			return hit, nil
		}
		f := strings.Fields(line)
		if len(f) != 4 || f[0] != "VALUE" {
			return false, fmt.Errorf("get %s: %q", key, line)
		}
		size, err := strconv.Atoi(f[3])
		if err != nil || size < 0 {
			return false, fmt.Errorf("get %s: %q", key, line)
		}
		if _, err := c.rd.Discard(size + 2); err != nil {
			return false, fmt.Errorf("receive: %w", err)
		}
		hit = true
	}
}

// line reads one "\r\n"-terminated line.
func (c *mcConn) line() (string, error) {
	b, err := c.rd.ReadSlice('\n')
	if err != nil {
		return "", fmt.Errorf("receive: %w", err)
	}
	return strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r"), nil
}
