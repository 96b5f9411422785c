package bench

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/slimnet/slim/internal/cgroupfs"
	"github.com/slimnet/slim/internal/lab"
)

// ParseCgroupCPUStat reads usage_usec, the CPU time of a cgroup and its
// descendants, from a cgroup v2 cpu.stat file. The file exists in every
// cgroup, with or without the cpu controller (the lab enables none).
func ParseCgroupCPUStat(r io.Reader) (time.Duration, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if !ok || k != "usage_usec" {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 63)
		if err != nil {
			return 0, fmt.Errorf("parse cpu.stat: usage_usec: %w", err)
		}
		return time.Duration(n) * time.Microsecond, nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("read cpu.stat: %w", err)
	}
	return 0, errors.New("parse cpu.stat: no usage_usec")
}

// sides are the cgroups of one mode's two sides: the client's and the
// server's (a lab host's exec cgroup in host mode, the containers' in the
// others), and the slimds of both hosts; clientSlimd is the client host's
// alone (its broker handles the client's connects). The lab enables no
// controllers, but cpu.stat's usage_usec exists in every cgroup v2 cgroup.
type sides struct {
	client, server string
	slimd          []string
	clientSlimd    string
}

// sidesOf returns the cgroups of a mode whose client and server are lab
// targets: a host name (h1, h2), or a container on clientHost and
// serverHost respectively.
func sidesOf(client, server string) (sides, error) {
	root, err := cgroupfs.Mount()
	if err != nil {
		return sides{}, err
	}
	cg := func(host, target string) string {
		if target == host {
			return lab.HostCgroup(root, host)
		}
		return lab.ContainerCgroup(root, host, target)
	}
	return sides{
		client:      cg(clientHost, client),
		server:      cg(serverHost, server),
		slimd:       []string{lab.SlimdCgroup(root, serverHost), lab.SlimdCgroup(root, clientHost)},
		clientSlimd: lab.SlimdCgroup(root, clientHost),
	}, nil
}

// sideCPU is CPU time per side; clientSlimd is part of slimd.
type sideCPU struct{ client, server, slimd, clientSlimd time.Duration }

// read returns the sides' CPU time so far.
func (s sides) read() (sideCPU, error) {
	var c sideCPU
	var errs [4]error
	c.client, errs[0] = CgroupsCPU([]string{s.client})
	c.server, errs[1] = CgroupsCPU([]string{s.server})
	c.slimd, errs[2] = CgroupsCPU(s.slimd)
	if s.clientSlimd != "" {
		c.clientSlimd, errs[3] = CgroupsCPU([]string{s.clientSlimd})
	}
	return c, errors.Join(errs[:]...)
}

// since is the CPU time each side used since start.
func (c sideCPU) since(start sideCPU) sideCPU {
	return sideCPU{client: c.client - start.client, server: c.server - start.server, slimd: c.slimd - start.slimd,
		clientSlimd: c.clientSlimd - start.clientSlimd}
}

// CgroupsCPU sums the CPU time of the cgroups (their cpu.stat).
func CgroupsCPU(cgs []string) (time.Duration, error) {
	var sum time.Duration
	for _, cg := range cgs {
		f, err := os.Open(filepath.Join(cg, "cpu.stat"))
		if err != nil {
			return 0, err
		}
		d, err := ParseCgroupCPUStat(f)
		f.Close()
		if err != nil {
			return 0, fmt.Errorf("%s: %w", cg, err)
		}
		sum += d
	}
	return sum, nil
}
