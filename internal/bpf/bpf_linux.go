//go:build linux && (amd64 || arm64)

package bpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// Pin names inside Config.PinDir. Maps are pinned by their ELF names
// (LIBBPF_PIN_BY_NAME in slim.c); each attachment is a bpf_link pinned as
// linkPrefix + program name.
const (
	linkPrefix = "link_"
	// bpfRoot is where Load mounts bpffs when PinDir lies below it and
	// nothing is mounted there yet.
	bpfRoot = "/sys/fs/bpf"
	// lockTimeout bounds the wait for another Load or Unpin on the same pin
	// dir; each holds the lock for milliseconds.
	lockTimeout = 5 * time.Second
)

// mapNames are the pinned maps, for Unpin.
var mapNames = []string{slimMapSlimConfig, slimMapSlimSockets, slimMapSlimBlocks, slimMapSlimListeners, slimMapSlimListeners6,
	slimMapSlimApps, slimMapSlimConns, slimMapSlimPorts}

// staleMaps are pins of maps earlier versions had and this one does not
// use. A load removes them: slim_appsocks (records without flags) only
// served the recorders of the slimd that made it, whose records a new load
// disowns anyway.
var staleMaps = []string{"slim_appsocks"}

// hooksOf reads each program's cgroup hook from its ELF section name, as
// cilium/ebpf parses it (SEC("cgroup/connect4") is
// AttachCGroupInet4Connect); a program without one is an error.
func hooksOf(spec *ebpf.CollectionSpec) (map[string]ebpf.AttachType, error) {
	hooks := make(map[string]ebpf.AttachType, len(spec.Programs))
	for name, ps := range spec.Programs {
		if ps.AttachType == ebpf.AttachNone {
			return nil, fmt.Errorf("bpf program %s (section %s): no attach type", name, ps.SectionName)
		}
		hooks[name] = ps.AttachType
	}
	return hooks, nil
}

// Programs is a loaded and attached set of Slim's programs and the handles
// on their pinned maps.
type Programs struct {
	objs      slimObjects
	links     []link.Link
	blockBits int
	hooks     map[string]ebpf.AttachType // program name -> cgroup hook
	gen       uint32                     // this load's cfg.gen (see AppSocket)
	ports     *ebpf.Memory               // slim_ports, memory-mapped: read without system calls
	// written mirrors the listener entries EnsureListener wrote (key:
	// listenerKey) and no one has written since, so that it costs no
	// system call when the entry is there.
	written sync.Map
	// blocksSeen is how many port blocks the last read-back found: the
	// next one sizes its slice by it (growing a slice of 200,000 blocks
	// by appending was a fifth of a read-back's time).
	blocksSeen atomic.Int64
}

type listenerKey struct {
	host netip.AddrPort
	v6   bool
}

// Load loads the programs, attaches them to cfg.Cgroup and pins maps and
// links in cfg.PinDir. It is idempotent: with pins from an earlier Load (a
// restarted slimd) it re-opens the pinned maps, so their contents survive,
// and swaps the new programs into the pinned links with an atomic
// link.Update instead of attaching a second time. Links that point at another
// cgroup, and link pins of programs this version does not have, are detached.
// If the pinned maps do not match this version's layout, Load fails with an
// error wrapping ebpf.ErrMapIncompatible; Unpin clears them.
func Load(cfg Config) (p *Programs, err error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.Cgroup == "" || cfg.PinDir == "" {
		return nil, errors.New("bpf config: cgroup and pin dir are required")
	}
	if !filepath.IsAbs(cfg.PinDir) {
		return nil, fmt.Errorf("bpf config: pin dir %q is not absolute", cfg.PinDir)
	}
	if cfg.BlockBits < 1 || cfg.BlockBits > 15 {
		return nil, fmt.Errorf("bpf config: block bits %d out of range 1..15", cfg.BlockBits)
	}
	cgID, err := cgroupID(cfg.Cgroup)
	if err != nil {
		return nil, err
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("remove memlock rlimit: %w", err)
	}
	if err := ensurePinDir(cfg.PinDir); err != nil {
		return nil, err
	}
	unlock, err := lockDir(cfg.PinDir)
	if err != nil {
		return nil, err
	}
	defer unlock()

	for _, name := range staleMaps {
		if err := os.Remove(filepath.Join(cfg.PinDir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("remove stale map pin: %w", err)
		}
	}
	spec, err := loadSlim()
	if err != nil {
		return nil, err
	}
	hooks, err := hooksOf(spec)
	if err != nil {
		return nil, err
	}
	if err := growPinned(spec, cfg.PinDir, log); err != nil {
		return nil, err
	}
	p = &Programs{blockBits: cfg.BlockBits, hooks: hooks}
	err = spec.LoadAndAssign(&p.objs, &ebpf.CollectionOptions{
		Maps: ebpf.MapOptions{PinPath: cfg.PinDir},
	})
	if err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			log.Debug("bpf verifier log", "log", fmt.Sprintf("%+v", ve))
		}
		// A VerifierError prints in short form: the last log line.
		return nil, fmt.Errorf("load bpf objects: %w", notSupported(err))
	}
	done := false
	defer func() {
		if !done {
			err = errors.Join(err, p.Close())
		}
	}()

	// Configure before any program runs: unconfigured, the guard trusts
	// nobody, not even slimd.
	if err := p.configure(cgID, cfg.BlockBits); err != nil {
		return nil, err
	}
	if p.ports, err = p.objs.SlimPorts.Memory(); err != nil {
		return nil, fmt.Errorf("map slim_ports: %w", err)
	}
	if err := p.attach(cfg.Cgroup, cgID, cfg.PinDir); err != nil {
		return nil, err
	}
	done = true
	return p, nil
}

// growPinned moves every pinned hash map whose capacity this version
// raised into a map of the new size, its entries included: a pinned map is
// reused only if it matches the program's declaration, and an upgrade must
// keep the state that outlives slimd. The new map takes the pin by an
// atomic rename; the old one lives on while the running programs hold it,
// until Load swaps them. Maps whose layout changed otherwise are left to
// fail as incompatible.
func growPinned(spec *ebpf.CollectionSpec, pinDir string, log *slog.Logger) error {
	for _, name := range slices.Sorted(maps.Keys(spec.Maps)) {
		ms := spec.Maps[name]
		if ms.Pinning != ebpf.PinByName || ms.Type != ebpf.Hash {
			continue
		}
		path := filepath.Join(pinDir, name)
		old, err := ebpf.LoadPinnedMap(path, nil)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("open pinned map %s: %w", name, err)
		}
		grow := old.Type() == ms.Type && old.KeySize() == ms.KeySize && old.ValueSize() == ms.ValueSize &&
			old.Flags() == ms.Flags && old.MaxEntries() < ms.MaxEntries
		if !grow {
			old.Close()
			continue
		}
		err = moveInto(old, ms, path)
		log.Info("pinned map grown", "map", name, "from", old.MaxEntries(), "to", ms.MaxEntries, "err", err)
		old.Close()
		if err != nil {
			return fmt.Errorf("grow pinned map %s: %w", name, err)
		}
	}
	return nil
}

func moveInto(old *ebpf.Map, ms *ebpf.MapSpec, path string) error {
	ns := ms.Copy()
	ns.Pinning = ebpf.PinNone
	nm, err := ebpf.NewMap(ns)
	if err != nil {
		return err
	}
	defer nm.Close()
	k, v := make([]byte, ms.KeySize), make([]byte, ms.ValueSize)
	it := old.Iterate()
	for it.Next(&k, &v) {
		if err := nm.Put(k, v); err != nil {
			return err
		}
	}
	if err := it.Err(); err != nil {
		return err
	}
	tmp := path + "_grow" // bpffs refuses names with dots
	os.Remove(tmp)
	if err := nm.Pin(tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// configure writes the config entry. A changed block size invalidates every
// port block key, so the port blocks are then cleared for slimd to publish
// again.
func (p *Programs) configure(cgID uint64, blockBits int) error {
	var old slimCfg
	if err := p.objs.SlimConfig.Lookup(uint32(0), &old); err != nil {
		return fmt.Errorf("read bpf config: %w", err)
	}
	if old.BlockBits != 0 && old.BlockBits != uint32(blockBits) {
		if err := clearBlocks(p.objs.SlimBlocks); err != nil {
			return fmt.Errorf("clear port blocks after block size change: %w", err)
		}
	}
	// A new generation: sockets the recorders saw born before are no
	// longer known to have every setsockopt recorded.
	p.gen = old.Gen + 1
	c := slimCfg{SlimdCgroup: cgID, BlockBits: uint32(blockBits), Gen: p.gen}
	if err := p.objs.SlimConfig.Update(uint32(0), &c, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("write bpf config: %w", err)
	}
	return nil
}

// notSupported marks errors of missing kernel features with ErrNotSupported.
func notSupported(err error) error {
	if errors.Is(err, ebpf.ErrNotSupported) {
		return fmt.Errorf("%w: %w", ErrNotSupported, err)
	}
	return err
}

func clearBlocks(m *ebpf.Map) error {
	var keys []slimHostport
	var k slimHostport
	var v slimVip
	it := m.Iterate()
	for it.Next(&k, &v) {
		keys = append(keys, k)
	}
	if err := it.Err(); err != nil {
		return err
	}
	for _, k := range keys {
		if err := m.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return err
		}
	}
	return nil
}

// programs returns the loaded programs by name.
func (p *Programs) programs() map[string]*ebpf.Program {
	o := &p.objs
	return map[string]*ebpf.Program{
		slimProgSlimGetsockname4: o.SlimGetsockname4,
		slimProgSlimGetsockname6: o.SlimGetsockname6,
		slimProgSlimGetpeername4: o.SlimGetpeername4,
		slimProgSlimGetpeername6: o.SlimGetpeername6,
		slimProgSlimConnect4:     o.SlimConnect4,
		slimProgSlimConnect6:     o.SlimConnect6,
		slimProgSlimBind4:        o.SlimBind4,
		slimProgSlimBind6:        o.SlimBind6,
		slimProgSlimSetsockopt:   o.SlimSetsockopt,
		slimProgSlimRelease:      o.SlimRelease,
	}
}

// attach puts every program on the cgroup through a pinned link: an existing
// pin on the same cgroup and hook gets the new program (link.Update, atomic
// per hook, so the hook is never empty); anything else is detached and
// replaced.
func (p *Programs) attach(cgroup string, cgID uint64, pinDir string) error {
	progs := p.programs()
	// Stale link pins: programs of another version.
	entries, err := os.ReadDir(pinDir)
	if err != nil {
		return fmt.Errorf("read pin dir: %w", err)
	}
	for _, e := range entries {
		name, ok := strings.CutPrefix(e.Name(), linkPrefix)
		if !ok {
			continue
		}
		if _, known := progs[name]; !known {
			if err := detachPinned(filepath.Join(pinDir, e.Name())); err != nil {
				return err
			}
		}
	}

	for _, name := range slices.Sorted(maps.Keys(progs)) {
		prog, at := progs[name], p.hooks[name]
		pin := filepath.Join(pinDir, linkPrefix+name)
		l, err := reusePinned(pin, cgID, at)
		if err != nil {
			return err
		}
		if l != nil {
			if err := l.Update(prog); err != nil {
				l.Close()
				return fmt.Errorf("update link %s: %w", name, err)
			}
			p.links = append(p.links, l)
			continue
		}
		l, err = link.AttachCgroup(link.CgroupOptions{Path: cgroup, Attach: at, Program: prog})
		if err != nil {
			return fmt.Errorf("attach %s to %s: %w", name, cgroup, notSupported(err))
		}
		if err := l.Pin(pin); err != nil {
			// A fallback PROG_ATTACH (kernel < 5.7) cannot be pinned and
			// would not survive slimd: refuse rather than degrade silently.
			return errors.Join(fmt.Errorf("pin link %s: %w", name, err), l.Close())
		}
		p.links = append(p.links, l)
	}
	return nil
}

// reusePinned opens the link pinned at pin if it is attached to cgroup cgID
// at hook at. A pin that does not match is detached and removed, and nil is
// returned, as when there is no pin.
func reusePinned(pin string, cgID uint64, at ebpf.AttachType) (link.Link, error) {
	if _, err := os.Stat(pin); errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	l, err := link.LoadPinnedLink(pin, nil)
	if err != nil {
		return nil, err
	}
	info, err := l.Info()
	if err == nil {
		if c := info.Cgroup(); c != nil && c.CgroupId == cgID && ebpf.AttachType(c.AttachType) == at {
			return l, nil
		}
	}
	l.Close()
	return nil, detachPinned(pin)
}

// detachPinned detaches the link pinned at pin, even if other processes hold
// it open, and removes the pin.
func detachPinned(pin string) error {
	l, err := link.LoadPinnedLink(pin, nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer l.Close()
	// A link whose cgroup is gone is already defunct; Detach then fails
	// harmlessly and unpinning frees it.
	_ = l.Detach()
	if err := l.Unpin(); err != nil {
		return fmt.Errorf("unpin %s: %w", pin, err)
	}
	return nil
}

// Close releases this process's handles. Pinned maps and links stay, so the
// programs keep running and their state survives until Unpin.
func (p *Programs) Close() error {
	var errs []error
	for _, l := range p.links {
		errs = append(errs, l.Close())
	}
	p.links = nil
	errs = append(errs, p.objs.Close())
	p.ports = nil // unmapped with the map's last reference
	return errors.Join(errs...)
}

// Unpin detaches the programs and removes every pin Load made in pinDir, then
// pinDir itself. Maps are freed once no process holds them. A missing pinDir
// is success.
func Unpin(pinDir string) error {
	entries, err := os.ReadDir(pinDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read pin dir: %w", err)
	}
	unlock, err := lockDir(pinDir)
	if err != nil {
		return err
	}
	var errs []error
	// Links first: once they are gone no program uses the maps.
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), linkPrefix) {
			errs = append(errs, detachPinned(filepath.Join(pinDir, e.Name())))
		}
	}
	for _, name := range mapNames {
		if err := os.Remove(filepath.Join(pinDir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	unlock()
	if err := os.Remove(pinDir); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// SetSocket records the virtual addresses of a host socket slimd created:
// getsockname shows local, getpeername (and accept on a listener) peer. An
// invalid (zero) AddrPort leaves that side as the kernel has it, e.g. peer
// for a listener. A wildcard address (0.0.0.0 or ::) is shown as such. The
// entry lives on the socket and is freed with it. fd is a descriptor of the
// socket in the calling process.
func (p *Programs) SetSocket(fd int, local, peer netip.AddrPort) error {
	v := slimSockaddrs{Local: vaddr(local), Peer: vaddr(peer)}
	if err := p.objs.SlimSockets.Update(int32(fd), &v, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("set socket %d: %w", fd, err)
	}
	return nil
}

// AppSocket returns the record of socket fd (a copy of an application's
// socket) if the recorders saw it born under this load, so that none of
// its setsockopt calls can have been missed. A socket from before, from
// outside a recorded cgroup, or not TCP has none (ok false).
func (p *Programs) AppSocket(fd int) (a AppSocket, ok bool, err error) {
	var v slimAppsock
	if err := p.objs.SlimApps.Lookup(int32(fd), &v); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return AppSocket{}, false, nil
		}
		return AppSocket{}, false, fmt.Errorf("app socket %d: %w", fd, err)
	}
	if v.Gen != p.gen {
		return AppSocket{}, false, nil
	}
	return AppSocket{Family: int(v.Family), Protocol: int(v.Protocol), NetnsCookie: v.NetnsCookie, Opts: v.Opts,
		Connected: v.Flags&appsockConnected != 0, Listened: v.Flags&appsockListened != 0}, true, nil
}

// appsock flags (APPSOCK_* in slim.c).
const (
	appsockConnected = 1
	appsockListened  = 2
)

// MarkListened notes in the record of socket fd (a copy of an
// application's socket) that slimd left a listen() on it to the kernel,
// so that a later connect() on it is left to the kernel too. A socket
// without a record is success: its connects read the socket itself.
func (p *Programs) MarkListened(fd int) error {
	var v slimAppsock
	if err := p.objs.SlimApps.Lookup(int32(fd), &v); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		}
		return fmt.Errorf("app socket %d: %w", fd, err)
	}
	v.Flags |= appsockListened
	if err := p.objs.SlimApps.Update(int32(fd), &v, ebpf.UpdateExist); err != nil {
		return fmt.Errorf("app socket %d: %w", fd, err)
	}
	return nil
}

// Record attaches the recorders to a container's cgroup until the returned
// Closer is closed. The links are not pinned: when slimd goes, recording
// stops, and the next load's generation disowns what was recorded.
func (p *Programs) Record(cgroup string) (io.Closer, error) {
	var ls recorders
	for _, r := range []struct {
		prog *ebpf.Program
		name string
	}{
		{p.objs.SlimRecordCreate, slimProgSlimRecordCreate},
		{p.objs.SlimRecordSetsockopt, slimProgSlimRecordSetsockopt},
		{p.objs.SlimRecordConnect4, slimProgSlimRecordConnect4},
		{p.objs.SlimRecordConnect6, slimProgSlimRecordConnect6},
	} {
		l, err := link.AttachCgroup(link.CgroupOptions{Path: cgroup, Attach: p.hooks[r.name], Program: r.prog})
		if err != nil {
			return nil, errors.Join(fmt.Errorf("attach recorder to %s: %w", cgroup, notSupported(err)), ls.Close())
		}
		ls = append(ls, l)
	}
	return ls, nil
}

// recorders are one cgroup's recorder links.
type recorders []link.Link

func (r recorders) Close() error {
	var errs []error
	for _, l := range r {
		errs = append(errs, l.Close())
	}
	return errors.Join(errs...)
}

// ArmConn gives a client host socket slimd made for a container its
// connect permit: the application's next connect() on it, naming exactly
// c.Want, binds it to c.Src and a free port of c.Blocks and goes to c.Dst
// (slim_connect4/6); no other connect or bind by anyone but slimd ever
// passes. getsockname then shows c.Local with the port chosen, and
// getpeername c.Peer. fd is a descriptor of the socket in the calling
// process.
func (p *Programs) ArmConn(fd int, c Conn) error {
	if c.NBlocks < 1 || c.NBlocks > MaxBlocks {
		return fmt.Errorf("arm socket %d: %d port blocks, want 1..%d", fd, c.NBlocks, MaxBlocks)
	}
	v := slimConn{
		Local:    slimVaddr{Addr: words(c.Local)},
		Peer:     vaddr(c.Peer),
		Want:     words(c.Want.Addr()),
		Dst:      words(c.Dst.Addr()),
		Src:      words(c.Src),
		WantPort: c.Want.Port(),
		DstPort:  c.Dst.Port(),
		Blocks:   c.Blocks,
		Nblocks:  uint16(c.NBlocks),
		State:    connArmed,
	}
	if err := p.objs.SlimConns.Update(int32(fd), &v, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("arm socket %d: %w", fd, err)
	}
	return nil
}

// ConnState returns the permit state of a host socket (ConnNone if it has
// no permit record).
func (p *Programs) ConnState(fd int) (ConnState, error) {
	var v slimConn
	if err := p.objs.SlimConns.Lookup(int32(fd), &v); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return ConnNone, nil
		}
		return ConnNone, fmt.Errorf("socket %d permit: %w", fd, err)
	}
	return ConnState(v.State), nil
}

// PortsInUse returns how many client host sockets are bound to ports of
// the local port block starting at start and not yet released. It reads
// memory shared with the programs: no system call.
func (p *Programs) PortsInUse(start uint16) uint32 {
	var b [8]byte
	off := int64(start>>p.blockBits) * 8
	if _, err := p.ports.ReadAt(b[:], off); err != nil {
		return 0
	}
	return binary.NativeEndian.Uint32(b[4:])
}

// DeleteSocket removes the entry SetSocket made; a socket without one is
// success.
func (p *Programs) DeleteSocket(fd int) error {
	err := p.objs.SlimSockets.Delete(int32(fd))
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete socket %d: %w", fd, err)
	}
	return nil
}

// PutPortBlock publishes that host source ports [start, start+block size) of
// hostIP belong to the endpoint with virtual IP vip. start must be aligned to
// the block size.
func (p *Programs) PutPortBlock(hostIP netip.Addr, start uint16, vip netip.Addr) error {
	if !hostIP.IsValid() || !vip.IsValid() {
		return fmt.Errorf("put port block %s/%d: invalid address", hostIP, start)
	}
	if start&(1<<p.blockBits-1) != 0 {
		return fmt.Errorf("put port block %s/%d: start not aligned to %d ports", hostIP, start, 1<<p.blockBits)
	}
	k := hostport(hostIP, start)
	v := slimVip{Addr: words(vip)}
	if err := p.objs.SlimBlocks.Update(&k, &v, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("put port block %s/%d: %w", hostIP, start, err)
	}
	return nil
}

// DeletePortBlock withdraws a port block; a missing one is success.
func (p *Programs) DeletePortBlock(hostIP netip.Addr, start uint16) error {
	k := hostport(hostIP, start)
	err := p.objs.SlimBlocks.Delete(&k)
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete port block %s/%d: %w", hostIP, start, err)
	}
	return nil
}

// PutListener publishes that host port hostPort on hostIP serves vip.
// Sockets accepted there show vip as their local address.
func (p *Programs) PutListener(hostIP netip.Addr, hostPort uint16, vip netip.AddrPort) error {
	if !hostIP.IsValid() || !vip.IsValid() {
		return fmt.Errorf("put listener %s: invalid address", netip.AddrPortFrom(hostIP, hostPort))
	}
	k := hostport(hostIP, hostPort)
	v := vaddr(vip)
	if err := p.listenerMap(IsIPv6(vip.Addr())).Update(&k, &v, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("put listener %s: %w", netip.AddrPortFrom(hostIP, hostPort), err)
	}
	// Only EnsureListener records what it wrote: the map sync writes every
	// listener of the cluster (20,000 at 2,000 hosts), the connect path
	// the few it uses.
	p.written.Delete(listenerKey{netip.AddrPortFrom(hostIP, hostPort), IsIPv6(vip.Addr())})
	return nil
}

// EnsureListener is PutListener unless this process already wrote that
// entry: the connect path calls it for every swapped connect, so that the
// connect program finds the listener even before the map sync has caught
// up with a new record.
func (p *Programs) EnsureListener(hostIP netip.Addr, hostPort uint16, vip netip.AddrPort) error {
	k := listenerKey{netip.AddrPortFrom(hostIP, hostPort), IsIPv6(vip.Addr())}
	if v, ok := p.written.Load(k); ok && v == vip {
		return nil
	}
	if err := p.PutListener(hostIP, hostPort, vip); err != nil {
		return err
	}
	p.written.Store(k, vip)
	return nil
}

// listenerMap is the listener map of one family of virtual address: a
// host listener serving both of a container's addresses has an entry in
// each, and an accepted socket shows the one of its client's family.
func (p *Programs) listenerMap(ipv6 bool) *ebpf.Map {
	if ipv6 {
		return p.objs.SlimListeners6
	}
	return p.objs.SlimListeners
}

// DeleteListener withdraws a listener; a missing one is success.
func (p *Programs) DeleteListener(hostIP netip.Addr, hostPort uint16, ipv6 bool) error {
	k := hostport(hostIP, hostPort)
	p.written.Delete(listenerKey{netip.AddrPortFrom(hostIP, hostPort), ipv6})
	err := p.listenerMap(ipv6).Delete(&k)
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete listener %s: %w", netip.AddrPortFrom(hostIP, hostPort), err)
	}
	return nil
}

// PortBlocks returns the published port blocks, in no order.
func (p *Programs) PortBlocks() ([]PortBlock, error) {
	seen := p.blocksSeen.Load()
	out := make([]PortBlock, 0, seen+seen/16)
	err := dump(p.objs.SlimBlocks, func(k slimHostport, v slimVip) {
		out = append(out, PortBlock{HostIP: addr(k.Addr), Start: k.Port, VIP: addr(v.Addr)})
	})
	if err != nil {
		return nil, fmt.Errorf("dump port blocks: %w", err)
	}
	p.blocksSeen.Store(int64(len(out)))
	return out, nil
}

// Listeners returns the published listeners, in no order.
func (p *Programs) Listeners() ([]Listener, error) {
	var out []Listener
	for _, v6 := range []bool{false, true} {
		err := dump(p.listenerMap(v6), func(k slimHostport, v slimVaddr) {
			out = append(out, Listener{HostIP: addr(k.Addr), HostPort: k.Port, VIP: netip.AddrPortFrom(addr(v.Addr), v.Port), InMap6: v6})
		})
		if err != nil {
			return nil, fmt.Errorf("dump listeners: %w", err)
		}
	}
	return out, nil
}

// dump calls fn for every entry of a hash map, a batch of entries per
// system call where the kernel has batch operations: iterating costs two
// system calls per entry (1.2 s for 200,000 port blocks), and the
// reconciler reads the maps back every resync interval.
func dump[K, V any](m *ebpf.Map, fn func(K, V)) error {
	const batch = 4096
	keys, vals := make([]K, batch), make([]V, batch)
	var cursor ebpf.MapBatchCursor
	for first := true; ; first = false {
		n, err := m.BatchLookup(&cursor, keys, vals, nil)
		for i := range n {
			fn(keys[i], vals[i])
		}
		switch {
		case errors.Is(err, ebpf.ErrKeyNotExist): // the end
			return nil
		case first && n == 0 && errors.Is(err, ebpf.ErrNotSupported):
			var k K
			var v V
			it := m.Iterate()
			for it.Next(&k, &v) {
				fn(k, v)
			}
			return it.Err()
		case err != nil:
			return err
		}
	}
}

// vaddrSet marks a slimVaddr to be shown (VADDR_SET in slim.c).
const vaddrSet = 1

// words is the map form of an address: 16 bytes, IPv4 v4-mapped, as four
// words holding the bytes in network order (the layout of user_ip6).
func words(a netip.Addr) [4]uint32 {
	b := a.As16()
	var w [4]uint32
	for i := range w {
		w[i] = binary.NativeEndian.Uint32(b[4*i:])
	}
	return w
}

// addr inverts words; a v4-mapped address comes back as IPv4.
func addr(w [4]uint32) netip.Addr {
	var b [16]byte
	for i := range w {
		binary.NativeEndian.PutUint32(b[4*i:], w[i])
	}
	return netip.AddrFrom16(b).Unmap()
}

func hostport(a netip.Addr, port uint16) slimHostport {
	return slimHostport{Addr: words(a), Port: port}
}

func vaddr(ap netip.AddrPort) slimVaddr {
	if !ap.IsValid() {
		return slimVaddr{}
	}
	return slimVaddr{Addr: words(ap.Addr()), Port: ap.Port(), Flags: vaddrSet}
}

// cgroupID returns the cgroup v2 id of dir: its inode number on cgroup2.
func cgroupID(dir string) (uint64, error) {
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err != nil {
		return 0, fmt.Errorf("cgroup %s: %w", dir, err)
	}
	if fs.Type != unix.CGROUP2_SUPER_MAGIC {
		return 0, fmt.Errorf("cgroup %s: not a cgroup v2 directory", dir)
	}
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return 0, fmt.Errorf("cgroup %s: %w", dir, err)
	}
	// The root cgroup's id is 1. Its programs would cover every socket of
	// the machine, and the guard would refuse every other cgroup.
	if st.Ino == 1 {
		return 0, fmt.Errorf("cgroup %s: refusing the root cgroup", dir)
	}
	return st.Ino, nil
}

// ensurePinDir creates dir on bpffs, mounting bpffs at /sys/fs/bpf first if
// dir is below it and it is not mounted.
func ensurePinDir(dir string) error {
	if rel, err := filepath.Rel(bpfRoot, dir); err == nil && rel != ".." && !strings.HasPrefix(rel, "../") {
		if !isBPFFS(bpfRoot) {
			if err := unix.Mount("bpf", bpfRoot, "bpf", 0, "mode=0700"); err != nil {
				return fmt.Errorf("mount bpffs at %s: %w", bpfRoot, err)
			}
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create pin dir: %w", err)
	}
	if !isBPFFS(dir) {
		return fmt.Errorf("pin dir %s is not on bpffs", dir)
	}
	return nil
}

func isBPFFS(dir string) bool {
	var fs unix.Statfs_t
	return unix.Statfs(dir, &fs) == nil && fs.Type == unix.BPF_FS_MAGIC
}

// lockDir takes an exclusive flock on dir, so that two slimds (or a slimd
// and an uninstall) never interleave on one pin dir.
func lockDir(dir string) (func(), error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open pin dir: %w", err)
	}
	deadline := time.Now().Add(lockTimeout)
	for {
		err = unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { unix.Close(fd) }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) || time.Now().After(deadline) {
			unix.Close(fd)
			return nil, fmt.Errorf("lock pin dir %s: %w", dir, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
