package lab

import (
	"context"
	"slices"

	"github.com/slimnet/slim/internal/api"
)

// List describes the lab's hosts (asking each live slimd for its status)
// and containers.
func List(ctx context.Context, cfg Config) (Listing, error) {
	dir := cfg.stateDir()
	l := Listing{StateDir: dir}
	p, err := loadPlan(dir)
	if err != nil {
		return l, err
	}
	cgRoot, err := cgroupRoot()
	if err != nil {
		return l, err
	}
	for i := 1; i <= p.Hosts; i++ {
		host := HostName(i)
		h := HostStatus{Name: host}
		h.UnderlayIP, _ = hostIP(p.Underlay, i)
		h.PID, h.Alive = slimdPID(cgRoot, dir, host)
		if h.Alive {
			sctx, cancel := context.WithTimeout(ctx, statusTimeout)
			s, err := api.NewClient(socketPath(dir, host)).Status(sctx)
			cancel()
			if err != nil {
				h.Error = err.Error()
			} else {
				h.Subnet4, h.Subnet6, h.Peers = s.Host.Subnet4, s.Host.Subnet6, s.Peers
			}
		}
		l.Hosts = append(l.Hosts, h)
	}
	for m := 1; m <= p.EtcdMembers; m++ {
		ms := MemberStatus{Name: MemberName(m)}
		ms.UnderlayIP, _ = memberIP(p.Underlay, m)
		ms.PID, ms.Alive = memberPID(cgRoot, dir, ms.Name)
		l.Members = append(l.Members, ms)
	}
	cs, err := loadContainers(dir)
	for _, c := range cs {
		pids, _ := cgroupPIDs(c.Cgroup)
		l.Containers = append(l.Containers, ContainerStatus{Container: c, Alive: slices.Contains(pids, c.PID)})
	}
	return l, err
}
