package overlay

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
)

// fakeDataplane is a recorded fake: it keeps the kernel objects that the
// netlink dataplane would create (neighbour entries, FDB entries, routes) in
// maps, reads them back through the same assemble function, and logs every
// operation as one line.
type fakeDataplane struct {
	mu     sync.Mutex
	neigh  map[netip.Addr]net.HardwareAddr
	fdb    map[string]netip.Addr
	routes map[netip.Prefix]netip.Addr
	lines  []string
	// now, if set, prefixes each line with a time stamp.
	now func() string
	// fail, if set, is asked before each operation ("ensure", "remove",
	// "peers"); a non-nil error fails it without changing anything.
	fail func(op string, p Peer) error
}

func newFake() *fakeDataplane {
	return &fakeDataplane{
		neigh:  make(map[netip.Addr]net.HardwareAddr),
		fdb:    make(map[string]netip.Addr),
		routes: make(map[netip.Prefix]netip.Addr),
	}
}

func (f *fakeDataplane) logf(format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	if f.now != nil {
		line = f.now() + " " + line
	}
	f.lines = append(f.lines, line)
}

// note adds a comment line to the log, for the golden file's reader.
func (f *fakeDataplane) note(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	line := "# " + fmt.Sprintf(format, args...)
	if format == "" {
		line = "" // a blank line between steps
	}
	f.lines = append(f.lines, line)
}

func (f *fakeDataplane) log() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return strings.Join(f.lines, "\n") + "\n"
}

// ops returns the logged operations (no comments).
func (f *fakeDataplane) ops() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ops []string
	for _, l := range f.lines {
		if l != "" && !strings.HasPrefix(l, "#") {
			ops = append(ops, l)
		}
	}
	return ops
}

func (f *fakeDataplane) EnsurePeer(ctx context.Context, p Peer) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.injected("ensure", p); err != nil {
		return err
	}
	if err := p.Validate(); err != nil {
		f.logf("ensure %s -> %v", p, err)
		return err
	}
	f.logf("ensure %s", p)
	p = p.normalize()
	f.neigh[p.gw4()] = p.VTEPMAC
	if p.Subnet6.IsValid() {
		f.neigh[p.gw6()] = p.VTEPMAC
	}
	f.fdb[string(p.VTEPMAC)] = p.UnderlayIP
	f.routes[p.Subnet4] = p.gw4()
	if p.Subnet6.IsValid() {
		f.routes[p.Subnet6] = p.gw6()
	}
	return nil
}

func (f *fakeDataplane) RemovePeer(ctx context.Context, p Peer) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.injected("remove", p); err != nil {
		return err
	}
	f.logf("remove %s", p)
	p = p.normalize()
	if p.Subnet6.IsValid() {
		delete(f.routes, p.Subnet6)
	}
	if p.Subnet4.IsValid() {
		delete(f.routes, p.Subnet4)
	}
	if p.VTEPMAC != nil && p.UnderlayIP.IsValid() && f.fdb[string(p.VTEPMAC)] == p.UnderlayIP {
		delete(f.fdb, string(p.VTEPMAC)) // like the kernel: only with a matching dst
	}
	if p.Subnet6.IsValid() {
		delete(f.neigh, p.gw6())
	}
	if p.Subnet4.IsValid() {
		delete(f.neigh, p.gw4())
	}
	return nil
}

func (f *fakeDataplane) Peers(ctx context.Context) ([]Peer, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.injected("peers", Peer{}); err != nil {
		return nil, err
	}
	peers := f.peersLocked()
	f.logf("peers -> %d", len(peers))
	return peers, nil
}

// state returns the peers in the fake kernel without logging.
func (f *fakeDataplane) state() []Peer {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.peersLocked()
}

func (f *fakeDataplane) peersLocked() []Peer {
	var routes []routeEntry
	for dst, gw := range f.routes {
		routes = append(routes, routeEntry{Dst: dst, Gw: gw})
	}
	var neighs []neighEntry
	for ip, mac := range f.neigh {
		neighs = append(neighs, neighEntry{IP: ip, MAC: mac})
	}
	var fdb []fdbEntry
	for mac, dst := range f.fdb {
		fdb = append(fdb, fdbEntry{MAC: net.HardwareAddr(mac), Dst: dst})
	}
	// Map order is random; the kernel dumps in a stable order.
	slices.SortFunc(fdb, func(a, b fdbEntry) int { return strings.Compare(string(a.MAC), string(b.MAC)) })
	return assemble(routes, neighs, fdb)
}

func (f *fakeDataplane) injected(op string, p Peer) error {
	if f.fail == nil {
		return nil
	}
	if err := f.fail(op, p); err != nil {
		if op == "peers" {
			f.logf("peers -> %v", err)
		} else {
			f.logf("%s %s -> %v", op, p, err)
		}
		return err
	}
	return nil
}

// drift deletes one kernel object by hand, as an operator might.
func (f *fakeDataplane) drift(kind string, key any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch kind {
	case "route":
		delete(f.routes, key.(netip.Prefix))
	case "neigh":
		delete(f.neigh, key.(netip.Addr))
	case "fdb":
		delete(f.fdb, string(key.(net.HardwareAddr)))
	}
}
