package cpbench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"runtime/debug"
	"sync"
	"time"

	"github.com/slimnet/slim/internal/store"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// synced is a watcher's first report.
type synced struct {
	Millis    int64  `json:"ms"`
	Bytes     int64  `json:"bytes"`
	Hosts     int    `json:"hosts"`
	Endpoints int    `json:"endpoints"`
	Listeners int    `json:"listeners"`
	HeapBytes uint64 `json:"heap"`
}

// RunWatcher is one simulated slimd's view of the store (the hidden
// `slimctl bench control-plane-watcher`): the same caches slimd runs for
// hosts, endpoints and listeners. It reports to out one JSON line once
// they are synced, then one line "<key> <unix ns>" per change it applies,
// until ctx ends.
func RunWatcher(ctx context.Context, endpoints []string, prefix string, out io.Writer) error {
	start := time.Now()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return err
	}
	defer cli.Close()
	s := store.New(cli, prefix)
	log := slog.New(slog.DiscardHandler)
	w := bufio.NewWriter(out)
	var mu sync.Mutex
	ready := false
	event := func(kind string) func(string, bool) {
		return func(key string, deleted bool) {
			if deleted {
				return
			}
			now := time.Now().UnixNano()
			mu.Lock()
			if ready {
				fmt.Fprintf(w, "%s/%s %d\n", kind, key, now)
				w.Flush()
			}
			mu.Unlock()
		}
	}
	hosts, eps, ls := s.HostCache(log, nil), s.EndpointCache("", log, nil), s.ListenerCache(log, nil)
	hosts.OnEvent, eps.OnEvent, ls.OnEvent = event("hosts"), event("endpoints"), event("listeners")
	for _, c := range []interface{ Run(context.Context) error }{hosts, eps, ls} {
		go c.Run(ctx)
	}
	for !hosts.Synced() || !eps.Synced() || !ls.Synced() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	took := time.Since(start)
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b, _ := json.Marshal(synced{
		Millis: took.Milliseconds(), Bytes: hosts.ListedBytes() + eps.ListedBytes() + ls.ListedBytes(),
		Hosts: hosts.Len(), Endpoints: eps.Len(), Listeners: ls.Len(), HeapBytes: ms.HeapInuse,
	})
	mu.Lock()
	w.Write(append(b, '\n'))
	w.Flush()
	ready = true
	mu.Unlock()
	<-ctx.Done()
	return nil
}
