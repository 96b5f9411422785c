package daemon

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// findUnderlay resolves the underlay interface and address: from the
// interface name, from the address, or else from the default route.
func findUnderlay(iface string, ip netip.Addr) (string, netip.Addr, error) {
	var link netlink.Link
	var err error
	switch {
	case iface != "":
		link, err = netlink.LinkByName(iface)
		if err != nil {
			return "", ip, fmt.Errorf("underlay interface %s: %w", iface, err)
		}
	case ip.IsValid():
		links, err := netlink.LinkList()
		if err != nil {
			return "", ip, fmt.Errorf("list links: %w", err)
		}
		for _, l := range links {
			if has, _ := linkHas(l, ip); has {
				return l.Attrs().Name, ip, nil
			}
		}
		return "", ip, fmt.Errorf("underlay ip %v is on no interface", ip)
	default:
		routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
		if err != nil {
			return "", ip, fmt.Errorf("list routes: %w", err)
		}
		for _, r := range routes {
			if r.Dst == nil || r.Dst.IP.IsUnspecified() {
				link, err = netlink.LinkByIndex(r.LinkIndex)
				if err != nil {
					return "", ip, fmt.Errorf("default route link: %w", err)
				}
				break
			}
		}
		if link == nil {
			return "", ip, errors.New("no default route: give --underlay-iface or --underlay-ip")
		}
	}
	if ip.IsValid() {
		if has, err := linkHas(link, ip); err != nil || !has {
			return "", ip, fmt.Errorf("underlay ip %v is not on %s", ip, link.Attrs().Name)
		}
		return link.Attrs().Name, ip, nil
	}
	addrs, err := netlink.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return "", ip, fmt.Errorf("addresses of %s: %w", link.Attrs().Name, err)
	}
	for _, a := range addrs {
		if na, ok := netip.AddrFromSlice(a.IP.To4()); ok && na.IsGlobalUnicast() {
			return link.Attrs().Name, na, nil
		}
	}
	return "", ip, fmt.Errorf("underlay interface %s has no IPv4 address", link.Attrs().Name)
}

func linkHas(l netlink.Link, ip netip.Addr) (bool, error) {
	addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return false, err
	}
	for _, a := range addrs {
		if na, ok := netip.AddrFromSlice(a.IP.To4()); ok && na == ip {
			return true, nil
		}
	}
	return false, nil
}
