//go:build linux

package broker_test

// A hostile tenant in a fast-path container: what it tries with the host
// sockets it is given and with the host and store it can reach, and what
// it must get.

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/slimnet/slim/internal/bench/wire"
	"github.com/slimnet/slim/internal/lab"
	"github.com/slimnet/slim/internal/lab/labtest"
	"github.com/slimnet/slim/internal/poll"
)

func TestHostileContainer(t *testing.T) {
	l := labtest.New(t, labtest.Hosts(2))
	probe := labtest.Probe(t)
	ctx := t.Context()
	srv := l.Run(lab.RunSpec{Host: "h1", Name: "srv", Command: []string{probe, "serve", "-addr", "0.0.0.0:7500"}})
	l.Run(lab.RunSpec{Host: "h2", Name: "evil", Command: []string{"sleep", "infinity"}})
	waitListener(t, l.Config, "h1", srv.IPv4, 7500, true)
	vip := netip.AddrPortFrom(srv.IPv4, 7500)
	store := "192.168.77.1:2379" // h1's embedded etcd, on the underlay

	t.Run("host-sockets-and-control-plane", func(t *testing.T) {
		swaps := metric(t, "h2", "slim_broker_swaps_total", `op="connect"`)
		out := l.Output(ctx, "evil", probe, "attack", "-vip", vip.String(), "-store", store)
		var got map[string]string
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("attack: %s (%v)", out, err)
		}
		if n := metric(t, "h2", "slim_broker_swaps_total", `op="connect"`) - swaps; n != 1 {
			t.Errorf("%v connects swapped, want 1 (the attacks need a host socket)", n)
		}
		want := map[string]string{
			"connect":                      "ok",
			"connect-elsewhere":            "EISCONN", // the kernel's own answer
			"bind":                         "EINVAL",  // the broker: a host socket is bound already
			"listen":                       "EINVAL",  // the broker: not on a client host socket
			"setsockopt-SO_MARK":           "EPERM",
			"setsockopt-SO_BINDTODEVICE":   "EPERM",
			"setsockopt-SO_PRIORITY-7":     "EPERM",
			"setsockopt-IP_TOS-EF":         "EPERM",
			"setsockopt-IP_TOS-big-optlen": "EPERM", // the program cannot see the whole value
			"setsockopt-TCP_NODELAY":       "ok",
			"sendto-fastopen-elsewhere":    "EISCONN", // connected: the kernel refuses another address
			"disconnect":                   "ENOTSUP", // EOPNOTSUPP: the broker refuses it on host sockets
			"connect-after-disconnect":     "EISCONN",
			"listen-after-disconnect":      "EINVAL",
			"io_uring_setup":               "EPERM",
			"dial-store":                   "timeout", // dropped by the control-plane guard
		}
		for k, w := range want {
			if got[k] != w {
				t.Errorf("%s: %s, want %s", k, got[k], w)
			}
		}
	})

	t.Run("forged-listener-refused", func(t *testing.T) {
		// Anyone who can write to the store (here: the h2 host, with
		// curl through etcd's JSON gateway) forges a listener: a made-up
		// virtual address mapped to a service on the host's own loopback,
		// and one mapped to a control-plane port; both on h1's own lease
		// (read from h1's host record), so that the record passes the
		// lease check and the address checks must catch it.
		b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
		var hostRec struct{ Kvs []struct{ Lease string } }
		out := l.Output(ctx, "h2", "curl", "-sf", "-X", "POST", "http://"+store+"/v3/kv/range", "-d",
			fmt.Sprintf(`{"key":%q}`, b64("/slim/hosts/h1")))
		if err := json.Unmarshal([]byte(out), &hostRec); err != nil || len(hostRec.Kvs) != 1 || hostRec.Kvs[0].Lease == "" {
			t.Fatalf("h1's host record: %s (%v)", out, err)
		}
		forge := func(vip netip.AddrPort, hostIP string, hostPort int) {
			t.Helper()
			rec := fmt.Sprintf(`{"vip":%q,"port":%d,"host":"h1","hostIP":%q,"hostPort":%d,"containerID":"forged","ifName":"eth0"}`,
				vip.Addr(), vip.Port(), hostIP, hostPort)
			key := fmt.Sprintf("/slim/listeners/%s/%d", vip.Addr(), vip.Port())
			body := fmt.Sprintf(`{"key":%q,"value":%q,"lease":%q}`, b64(key), b64(rec), hostRec.Kvs[0].Lease)
			l.Output(ctx, "h2", "curl", "-sf", "-X", "POST", "http://"+store+"/v3/kv/put", "-d", body)
		}
		sub := srv.IPv4.As4()
		loopVIP := netip.AddrPortFrom(netip.AddrFrom4([4]byte{sub[0], sub[1], sub[2], 77}), 80)
		cpVIP := netip.AddrPortFrom(netip.AddrFrom4([4]byte{sub[0], sub[1], sub[2], 78}), 80)
		refused := map[string]float64{"h1": metric(t, "h1", "slim_store_records_refused_total", `kind="listener"`),
			"h2": metric(t, "h2", "slim_store_records_refused_total", `kind="listener"`)}
		forge(loopVIP, "127.0.0.1", 22)
		forge(cpVIP, "192.168.77.1", 2379)
		poll.Until(t, 10*time.Second, func() error {
			for h, before := range refused {
				if n := metric(t, h, "slim_store_records_refused_total", `kind="listener"`) - before; n < 2 {
					return fmt.Errorf("%s refused %v forged listeners, want 2", h, n)
				}
			}
			return nil
		})
		swaps := metric(t, "h2", "slim_broker_swaps_total", `op="connect"`)
		for _, v := range []netip.AddrPort{loopVIP, cpVIP} {
			// It fails (nothing answers there on the overlay): the exit
			// status is 1 and the summary says so.
			out, _ := lab.Output(ctx, l.Config, "evil", probe, "connect", "-summary", "-addr", v.String(), "-bytes", "1")
			var sum wire.ConnectSummary
			json.Unmarshal(out, &sum)
			if sum.Failed != 1 {
				t.Errorf("connect to the forged %s: %s; want it to fail (no such container on the overlay)", v, out)
			}
		}
		if n := metric(t, "h2", "slim_broker_swaps_total", `op="connect"`) - swaps; n != 0 {
			t.Errorf("%v connects to forged listeners swapped onto host sockets, want 0", n)
		}
	})
}
