package lab

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// nsHandle is a netlink handle working in one named namespace, without
// switching any thread into it.
type nsHandle struct {
	*netlink.Handle
	fd netns.NsHandle
}

func openNS(name string) (*nsHandle, error) {
	fd, err := netns.GetFromPath(NetnsPath(name))
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w", name, err)
	}
	h, err := netlink.NewHandleAt(fd)
	if err != nil {
		fd.Close()
		return nil, fmt.Errorf("netlink in %s: %w", name, err)
	}
	return &nsHandle{Handle: h, fd: fd}, nil
}

func (h *nsHandle) Close() {
	h.Handle.Close()
	h.fd.Close()
}

// linkByName returns the named link, or nil if there is none.
func (h *nsHandle) linkByName(name string) (netlink.Link, error) {
	l, err := h.LinkByName(name)
	var nf netlink.LinkNotFoundError
	if errors.As(err, &nf) {
		return nil, nil
	}
	return l, err
}

// ensureWire makes the wire: namespace WireNetns holding an up bridge.
func ensureWire(mtu int) error {
	if _, err := createNetns(WireNetns, false); err != nil {
		return err
	}
	h, err := openNS(WireNetns)
	if err != nil {
		return err
	}
	defer h.Close()
	br, err := h.linkByName(bridgeName)
	if err != nil {
		return err
	}
	if br == nil {
		la := netlink.NewLinkAttrs()
		la.Name = bridgeName
		la.MTU = mtu
		if err := h.LinkAdd(&netlink.Bridge{LinkAttrs: la}); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("add bridge %s: %w", bridgeName, err)
		}
		if br, err = h.LinkByName(bridgeName); err != nil {
			return err
		}
	}
	if err := h.LinkSetUp(br); err != nil {
		return fmt.Errorf("bridge %s up: %w", bridgeName, err)
	}
	return nil
}

// ensureHost makes host i's namespace and plugs it into the wire: a veth
// whose end "h<i>" is a port of the bridge and whose end "eth0" in the host
// holds the underlay address. It is idempotent, and repairs a host whose
// cable is half there.
func ensureHost(i int, addr netip.Prefix, mtu int) error {
	if err := ensureNode(HostName(i), addr, mtu); err != nil {
		return err
	}
	return setHostSysctls(HostNetns(HostName(i)))
}

// ensureNode makes a machine on the wire: namespace HostNetns(host) with
// interface HostIface holding addr, cabled to the bridge's port host.
func ensureNode(host string, addr netip.Prefix, mtu int) error {
	if _, err := createNetns(HostNetns(host), false); err != nil {
		return err
	}
	w, err := openNS(WireNetns)
	if err != nil {
		return err
	}
	defer w.Close()
	hn, err := openNS(HostNetns(host))
	if err != nil {
		return err
	}
	defer hn.Close()

	br, err := w.LinkByName(bridgeName)
	if err != nil {
		return fmt.Errorf("bridge %s: %w", bridgeName, err)
	}
	port, err := w.linkByName(host)
	if err != nil {
		return err
	}
	eth, err := hn.linkByName(HostIface)
	if err != nil {
		return err
	}
	// Both ends of a veth live or die together, so one end without the
	// other means it belongs to some other pair: start over.
	if (port == nil) != (eth == nil) {
		if port != nil {
			if err := w.LinkDel(port); err != nil {
				return fmt.Errorf("remove stale %s: %w", host, err)
			}
		}
		if eth != nil {
			if err := hn.LinkDel(eth); err != nil {
				return fmt.Errorf("remove stale %s in %s: %w", HostIface, host, err)
			}
		}
		port, eth = nil, nil
	}
	if port == nil {
		la := netlink.NewLinkAttrs()
		la.Name = host
		la.MTU = mtu
		la.MasterIndex = br.Attrs().Index
		// The peer is created directly in the host's namespace, so no
		// interface is ever renamed or moved.
		veth := &netlink.Veth{LinkAttrs: la, PeerName: HostIface, PeerNamespace: netlink.NsFd(hn.fd)}
		if err := w.LinkAdd(veth); err != nil {
			return fmt.Errorf("add veth %s/%s: %w", host, HostIface, err)
		}
		if port, err = w.LinkByName(host); err != nil {
			return err
		}
		if eth, err = hn.LinkByName(HostIface); err != nil {
			return err
		}
	}
	if err := w.LinkSetMaster(port, br); err != nil {
		return fmt.Errorf("%s into bridge: %w", host, err)
	}
	if err := w.LinkSetUp(port); err != nil {
		return fmt.Errorf("%s up: %w", host, err)
	}
	a := &netlink.Addr{IPNet: &net.IPNet{IP: addr.Addr().AsSlice(), Mask: net.CIDRMask(addr.Bits(), 32)}}
	if err := hn.AddrReplace(eth, a); err != nil {
		return fmt.Errorf("address %s on %s/%s: %w", addr, host, HostIface, err)
	}
	if err := hn.LinkSetUp(eth); err != nil {
		return fmt.Errorf("%s/%s up: %w", host, HostIface, err)
	}
	if err := hn.loopbackUp(); err != nil {
		return fmt.Errorf("%s: %w", host, err)
	}
	return nil
}

func (h *nsHandle) loopbackUp() error {
	lo, err := h.LinkByName("lo")
	if err != nil {
		return err
	}
	if err := h.LinkSetUp(lo); err != nil {
		return fmt.Errorf("lo up: %w", err)
	}
	return nil
}

// loopbackUp sets lo up in the named namespace, as container runtimes do,
// so a container can reach itself on 127.0.0.1.
func loopbackUp(name string) error {
	h, err := openNS(name)
	if err != nil {
		return err
	}
	defer h.Close()
	return h.loopbackUp()
}

// hostSysctls configure a lab host as a router for its containers, which
// are routed, not bridged.
var hostSysctls = map[string]string{
	"net/ipv4/ip_forward":          "1",
	"net/ipv6/conf/all/forwarding": "1",
}

// setHostSysctls writes hostSysctls in the named namespace. /proc/sys/net
// shows the namespace of the thread that opens it, so this is one of the
// few places the lab switches a thread (through ns.Do).
func setHostSysctls(name string) error {
	n, err := ns.GetNS(NetnsPath(name))
	if err != nil {
		return err
	}
	defer n.Close()
	return n.Do(func(ns.NetNS) error {
		for k, v := range hostSysctls {
			p := filepath.Join("/proc/sys", k)
			if err := os.WriteFile(p, []byte(v), 0); err != nil {
				return fmt.Errorf("sysctl %s in %s: %w", k, name, err)
			}
		}
		return nil
	})
}
