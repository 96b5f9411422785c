package lab

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
)

// MaxEtcdMembers bounds a lab's external etcd cluster.
const MaxEtcdMembers = 5

// MemberName is the name of etcd member m (1-based): e1, e2, ...
func MemberName(m int) string { return "e" + strconv.Itoa(m) }

// memberIndex parses a member name; 0 if it is not one.
func memberIndex(name string) int {
	n, ok := strings.CutPrefix(name, "e")
	if !ok || n == "" || n[0] == '0' {
		return 0
	}
	m, err := strconv.Atoi(n)
	if err != nil || m < 1 {
		return 0
	}
	return m
}

// memberSlot is member m's index on the wire: members take the highest
// addresses of the underlay (.254, .253, ... in a /24), hosts the lowest.
func memberSlot(underlay netip.Prefix, m int) int {
	bits := underlay.Addr().BitLen() - underlay.Bits()
	return 1<<min(bits, 16) - 1 - m
}

// memberIP is member m's underlay address.
func memberIP(underlay netip.Prefix, m int) (netip.Addr, error) {
	return hostIP(underlay, memberSlot(underlay, m))
}

// memberURLs are member m's client and peer URLs.
func memberURLs(underlay netip.Prefix, m int) (client, peer string, err error) {
	ip, err := memberIP(underlay, m)
	if err != nil {
		return "", "", err
	}
	return "http://" + netip.AddrPortFrom(ip, etcdClientPort).String(),
		"http://" + netip.AddrPortFrom(ip, etcdPeerPort).String(), nil
}

// etcdEndpoints are the client URLs of every member of p's cluster.
func (p plan) etcdEndpoints() ([]string, error) {
	var eps []string
	for m := 1; m <= p.EtcdMembers; m++ {
		c, _, err := memberURLs(p.Underlay, m)
		if err != nil {
			return nil, err
		}
		eps = append(eps, c)
	}
	return eps, nil
}

// memberArgs is member m's command line after the slimd binary.
func memberArgs(dir string, p plan, m int) ([]string, error) {
	var initial []string
	for k := 1; k <= p.EtcdMembers; k++ {
		_, peer, err := memberURLs(p.Underlay, k)
		if err != nil {
			return nil, err
		}
		initial = append(initial, MemberName(k)+"="+peer)
	}
	client, peer, err := memberURLs(p.Underlay, m)
	if err != nil {
		return nil, err
	}
	return []string{"etcd",
		"--name", MemberName(m),
		"--data-dir", memberDataPath(dir, MemberName(m)),
		"--listen-client", client,
		"--listen-peer", peer,
		"--initial-cluster", strings.Join(initial, ","),
	}, nil
}

// memberOf checks that name names one of p's etcd members.
func (p plan) memberOf(name string) (int, error) {
	m := memberIndex(name)
	if m < 1 || m > p.EtcdMembers {
		return 0, fmt.Errorf("etcd member %q: %w (the lab has %d members)", name, ErrNotFound, p.EtcdMembers)
	}
	return m, nil
}

func memberDataPath(dir, name string) string { return filepath.Join(dir, name, "data") }
func memberLogPath(dir, name string) string  { return filepath.Join(dir, name, "etcd.log") }
func memberPIDPath(dir, name string) string  { return filepath.Join(dir, name, "etcd.pid") }

// MemberCgroup is the cgroup of etcd member name.
func MemberCgroup(root, name string) string { return filepath.Join(root, cgroupDir, name) }

// EtcdMembers lists the lab's external etcd members and their underlay
// addresses (none when h1 embeds the store).
func EtcdMembers(cfg Config) (map[string]netip.Addr, error) {
	p, err := loadPlan(cfg.stateDir())
	if err != nil {
		return nil, err
	}
	out := map[string]netip.Addr{}
	for m := 1; m <= p.EtcdMembers; m++ {
		ip, err := memberIP(p.Underlay, m)
		if err != nil {
			return nil, err
		}
		out[MemberName(m)] = ip
	}
	return out, nil
}
