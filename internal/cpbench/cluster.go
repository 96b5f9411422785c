package cpbench

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/slimnet/slim/internal/bench"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// cluster is a 3-member etcd cluster on loopback: `slimd etcd` processes,
// the server slimd embeds, with their data on tmpfs.
type cluster struct {
	dir     string
	procs   []*exec.Cmd
	clients []string // client URLs
}

const members = 3

// startCluster starts the members and waits until the cluster answers.
func startCluster(ctx context.Context, slimd, dir string, log io.Writer) (*cluster, error) {
	c := &cluster{dir: dir}
	var peers, initial []string
	for m := range members {
		cp, pp, err := freePorts()
		if err != nil {
			return nil, err
		}
		c.clients = append(c.clients, fmt.Sprintf("http://127.0.0.1:%d", cp))
		peers = append(peers, fmt.Sprintf("http://127.0.0.1:%d", pp))
		initial = append(initial, fmt.Sprintf("m%d=%s", m, peers[m]))
	}
	for m := range members {
		cmd := exec.Command(slimd, "etcd", "--name", fmt.Sprintf("m%d", m),
			"--data-dir", filepath.Join(dir, fmt.Sprintf("m%d", m)),
			"--listen-client", c.clients[m], "--listen-peer", peers[m],
			"--initial-cluster", strings.Join(initial, ","))
		cmd.Stdout, cmd.Stderr = log, log
		dieWithParent(cmd)
		if err := cmd.Start(); err != nil {
			c.stop()
			return nil, fmt.Errorf("start etcd member: %w", err)
		}
		c.procs = append(c.procs, cmd)
	}
	cli, err := c.client()
	if err != nil {
		c.stop()
		return nil, err
	}
	defer cli.Close()
	deadline := time.Now().Add(60 * time.Second)
	for {
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := cli.Get(sctx, "/ready")
		cancel()
		if err == nil {
			return c, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			c.stop()
			return nil, fmt.Errorf("etcd cluster not ready: %w", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (c *cluster) client() (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{Endpoints: c.clients, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
}

// alive reports whether every member process still runs.
func (c *cluster) alive() bool {
	for _, p := range c.procs {
		if p.Process.Signal(syscall.Signal(0)) != nil {
			return false
		}
	}
	return true
}

func (c *cluster) stop() {
	for _, p := range c.procs {
		p.Process.Signal(syscall.SIGTERM)
	}
	for _, p := range c.procs {
		done := make(chan struct{})
		go func() { p.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			p.Process.Kill()
			<-done
		}
	}
	os.RemoveAll(c.dir)
}

// received sums the gRPC messages the members received (unary requests
// and stream messages such as lease keepalives), from their /metrics.
func (c *cluster) received() (float64, error) {
	var sum float64
	for _, u := range c.clients {
		resp, err := http.Get(u + "/metrics")
		if err != nil {
			return 0, err
		}
		n, err := bench.SumCounter(resp.Body, "grpc_server_msg_received_total")
		resp.Body.Close()
		if err != nil {
			return 0, fmt.Errorf("%s/metrics: %w", u, err)
		}
		sum += n
	}
	return sum, nil
}

func freePorts() (int, int, error) {
	var ps [2]int
	for i := range ps {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, 0, err
		}
		ps[i] = ln.Addr().(*net.TCPAddr).Port
		defer ln.Close()
	}
	return ps[0], ps[1], nil
}
