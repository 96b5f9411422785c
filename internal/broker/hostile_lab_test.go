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
	"strconv"
	"testing"
	"time"

	"github.com/slimnet/slim/internal/api"
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
		var hostPort netip.AddrPort
		ls, err := api.NewClient(lab.SocketPath(l.Config, "h1")).Listeners(ctx, "")
		for _, li := range ls {
			if li.VIP == vip.Addr() && li.Port == vip.Port() {
				hostPort = netip.AddrPortFrom(li.HostIP, li.HostPort)
			}
		}
		if !hostPort.IsValid() {
			t.Fatalf("srv's listener: not in h1's listeners %v (%v)", ls, err)
		}
		const races = 300
		swaps := metric(t, "h2", "slim_broker_swaps_total", `op="connect"`)
		out := l.Output(ctx, "evil", probe, "attack", "-vip", vip.String(), "-store", store,
			"-hostport", hostPort.String(), "-races", strconv.Itoa(races))
		var got map[string]string
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("attack: %s (%v)", out, err)
		}
		if n := metric(t, "h2", "slim_broker_swaps_total", `op="connect"`) - swaps; n < 1 {
			t.Errorf("%v connects swapped, want at least 1: the attacks need a host socket", n)
		}
		// Another thread rewrote the sockaddr between the listener and
		// its host port while connect was decided. Every connect ended
		// at the listener (swapped, or on the overlay where the broker
		// read the host port and the kernel the listener), was refused
		// (by the guard, where the broker read the listener and the
		// kernel the host port; or by the host port's filter) or was
		// reset at once; none reached the host port. Each refusal
		// happened: the race was run both ways.
		n := func(k string) int { v, _ := strconv.Atoi(got[k]); return v }
		t.Logf("sockaddr race: %d at the listener, %d refused by the guard, %d by the host port's filter, %d reset",
			n("race-vip"), n("race-refused-guard"), n("race-refused-host"), n("race-reset"))
		if n("race-hostport") != 0 || n("race-other") != 0 || n("race-vip") == 0 || n("race-refused-guard") == 0 || n("race-refused-host") == 0 ||
			n("race-vip")+n("race-refused-guard")+n("race-refused-host")+n("race-reset") != races {
			t.Errorf("sockaddr race: %v; want 0 at the host port, 0 other, some at the listener and some refused each way", got)
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
			// The connection still carries its own bytes.
			"traffic-after-attacks": "ok",
			// Passed to another process of the container (SCM_RIGHTS),
			// the socket is as guarded there.
			"passed-connect-elsewhere":          "EISCONN",
			"passed-bind":                       "EINVAL",
			"passed-listen":                     "EINVAL",
			"passed-setsockopt-SO_MARK":         "EPERM",
			"passed-setsockopt-SO_BINDTODEVICE": "EPERM",
			"passed-disconnect":                 "ENOTSUP",
			"dial-store":                        "timeout", // dropped by the control-plane guard
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
