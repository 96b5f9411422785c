package overlay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// vxlanOverhead is what encapsulation adds to each packet on an IPv4
// underlay: outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8.
const vxlanOverhead = 50

// Forwarding sysctls of the current network namespace (/proc/sys/net is
// resolved against the netns of the thread that opens it).
const (
	sysctlIPv4Forward = "/proc/sys/net/ipv4/ip_forward"
	sysctlIPv6Forward = "/proc/sys/net/ipv6/conf/all/forwarding"
)

// EnsureDevice creates or adopts the vxlan device in the calling thread's
// network namespace and returns it.
//
// It is idempotent: an existing device with matching VNI, port, local IP and
// underlay link (and learning off) is kept as is, so restarting slimd never
// cuts traffic; its MTU, MAC (only when cfg.MAC is set) and addresses are
// corrected in place. A mismatching device, or a link of another type with
// the device's name, is deleted and created anew.
//
// It sets Subnet4.Addr()/32 (and Subnet6.Addr()/128, nodad) on the device
// and removes other global addresses from it, brings it up, turns transmit
// checksum offload off (see the package doc) and enables
// net.ipv4.ip_forward, and net.ipv6.conf.all.forwarding when Subnet6 is set,
// in the current network namespace.
func EnsureDevice(cfg DeviceConfig) (*Device, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	// The zero Handle opens a socket per request in the calling thread's
	// netns, like the package-level netlink functions.
	h := &netlink.Handle{}
	ctx := context.Background()

	underlay, err := findUnderlay(ctx, h, cfg)
	if err != nil {
		return nil, err
	}
	mtu := cfg.MTU
	if mtu == 0 {
		mtu = underlay.Attrs().MTU - vxlanOverhead
	}
	want := &netlink.Vxlan{
		LinkAttrs:    netlink.LinkAttrs{Name: cfg.Name, MTU: mtu},
		VxlanId:      cfg.VNI,
		VtepDevIndex: underlay.Attrs().Index,
		SrcAddr:      net.IP(cfg.UnderlayIP.AsSlice()),
		Port:         cfg.Port,
		Learning:     false,
	}

	link, err := h.LinkByName(cfg.Name)
	var notFound netlink.LinkNotFoundError
	switch {
	case errors.As(err, &notFound):
		link = nil
	case err != nil:
		return nil, fmt.Errorf("look up %s: %w", cfg.Name, err)
	case !sameVxlan(link, want):
		// Ours by name, but not what we want: VNI, port, local address and
		// underlay cannot all be changed in place.
		if err := h.LinkDel(link); err != nil && !errors.Is(err, unix.ENODEV) {
			return nil, fmt.Errorf("delete mismatching %s: %w", cfg.Name, err)
		}
		link = nil
	}

	if link == nil {
		want.HardwareAddr = cfg.MAC
		if want.HardwareAddr == nil {
			want.HardwareAddr = deriveMAC(cfg.UnderlayIP)
		}
		if err := h.LinkAdd(want); err != nil {
			return nil, fmt.Errorf("create vxlan %s vni %d: %w", cfg.Name, cfg.VNI, err)
		}
		if link, err = h.LinkByName(cfg.Name); err != nil {
			return nil, fmt.Errorf("look up %s: %w", cfg.Name, err)
		}
	} else {
		if cfg.MAC != nil && !bytes.Equal(link.Attrs().HardwareAddr, cfg.MAC) {
			if err := h.LinkSetHardwareAddr(link, cfg.MAC); err != nil {
				return nil, fmt.Errorf("set %s mac %s: %w", cfg.Name, cfg.MAC, err)
			}
		}
		if link.Attrs().MTU != mtu {
			if err := h.LinkSetMTU(link, mtu); err != nil {
				return nil, fmt.Errorf("set %s mtu %d: %w", cfg.Name, mtu, err)
			}
		}
	}

	if err := ensureAddrs(ctx, h, link, cfg); err != nil {
		return nil, err
	}
	if err := setTxChecksum(cfg.Name, false); err != nil {
		return nil, err
	}
	if err := h.LinkSetUp(link); err != nil {
		return nil, fmt.Errorf("set %s up: %w", cfg.Name, err)
	}
	if err := enableSysctl(sysctlIPv4Forward); err != nil {
		return nil, err
	}
	if cfg.Subnet6.IsValid() {
		if err := enableSysctl(sysctlIPv6Forward); err != nil {
			return nil, err
		}
	}

	if link, err = h.LinkByIndex(link.Attrs().Index); err != nil {
		return nil, fmt.Errorf("read back %s: %w", cfg.Name, err)
	}
	return &Device{
		Name:          cfg.Name,
		Index:         link.Attrs().Index,
		MAC:           link.Attrs().HardwareAddr,
		MTU:           link.Attrs().MTU,
		VNI:           cfg.VNI,
		Port:          cfg.Port,
		UnderlayIndex: underlay.Attrs().Index,
		UnderlayIP:    cfg.UnderlayIP,
		Subnet4:       cfg.Subnet4,
		Subnet6:       cfg.Subnet6,
		cfg:           cfg,
	}, nil
}

// findUnderlay returns the underlay link: cfg.UnderlayIface, or else the link
// that holds cfg.UnderlayIP.
func findUnderlay(ctx context.Context, h *netlink.Handle, cfg DeviceConfig) (netlink.Link, error) {
	if cfg.UnderlayIface != "" {
		l, err := h.LinkByName(cfg.UnderlayIface)
		if err != nil {
			return nil, fmt.Errorf("underlay link %s: %w", cfg.UnderlayIface, err)
		}
		return l, nil
	}
	addrs, err := dump(ctx, "addresses", func() ([]netlink.Addr, error) {
		return h.AddrList(nil, netlink.FAMILY_V4)
	})
	if err != nil {
		return nil, err
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == cfg.UnderlayIP {
			l, err := h.LinkByIndex(a.LinkIndex)
			if err != nil {
				return nil, fmt.Errorf("underlay link of %s: %w", cfg.UnderlayIP, err)
			}
			return l, nil
		}
	}
	return nil, fmt.Errorf("no link holds underlay address %s", cfg.UnderlayIP)
}

// sameVxlan reports whether the existing link is the vxlan device want
// describes, as far as it cannot be changed in place.
func sameVxlan(link netlink.Link, want *netlink.Vxlan) bool {
	vx, ok := link.(*netlink.Vxlan)
	return ok &&
		vx.VxlanId == want.VxlanId &&
		vx.Port == want.Port &&
		vx.SrcAddr.Equal(want.SrcAddr) &&
		vx.VtepDevIndex == want.VtepDevIndex &&
		(vx.Group == nil || vx.Group.IsUnspecified()) &&
		!vx.Learning &&
		!vx.FlowBased
}

// ensureAddrs leaves exactly the gateway addresses (and IPv6 link-local
// ones, which the kernel manages) on the device.
func ensureAddrs(ctx context.Context, h *netlink.Handle, link netlink.Link, cfg DeviceConfig) error {
	want := []netip.Prefix{netip.PrefixFrom(cfg.Subnet4.Addr(), 32)}
	if cfg.Subnet6.IsValid() {
		want = append(want, netip.PrefixFrom(cfg.Subnet6.Addr(), 128))
	}
	have, err := dump(ctx, "addresses of "+cfg.Name, func() ([]netlink.Addr, error) {
		return h.AddrList(link, netlink.FAMILY_ALL)
	})
	if err != nil {
		return err
	}
	present := make(map[netip.Prefix]bool)
	for _, a := range have {
		p, ok := prefixOf(a.IPNet)
		if !ok || p.Addr().IsLinkLocalUnicast() {
			continue
		}
		if !containsPrefix(want, p) {
			if err := h.AddrDel(link, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
				return fmt.Errorf("remove stale address %s from %s: %w", p, cfg.Name, err)
			}
			continue
		}
		present[p] = true
	}
	for _, p := range want {
		if present[p] {
			continue
		}
		a := &netlink.Addr{IPNet: ipNet(p)}
		if p.Addr().Is6() {
			// nodad: the gateway must answer at once, and nobody else
			// on the device can hold it.
			a.Flags = unix.IFA_F_NODAD
		}
		if err := h.AddrAdd(link, a); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("add address %s to %s: %w", p, cfg.Name, err)
		}
	}
	return nil
}

func containsPrefix(ps []netip.Prefix, p netip.Prefix) bool {
	for _, q := range ps {
		if q == p {
			return true
		}
	}
	return false
}

// enableSysctl sets a boolean sysctl to 1 unless it already is.
func enableSysctl(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read sysctl: %w", err)
	}
	if strings.TrimSpace(string(b)) == "1" {
		return nil
	}
	if err := os.WriteFile(path, []byte("1\n"), 0o644); err != nil {
		return fmt.Errorf("enable sysctl: %w", err)
	}
	return nil
}

// prefixOf converts a netlink address or destination to a netip.Prefix.
func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	ip, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ip = ip.Unmap()
	ones, bits := n.Mask.Size()
	if bits != ip.BitLen() {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(ip, ones), true
}

// ipNet converts a netip.Prefix to the *net.IPNet that netlink wants.
func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// addrOf converts a net.IP from netlink to a netip.Addr (invalid for nil).
func addrOf(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap()
}
