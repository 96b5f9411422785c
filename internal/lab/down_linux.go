package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Grace periods between SIGTERM and SIGKILL.
const (
	// containerGrace: what `docker stop` gives, less; lab workloads are
	// test servers and benchmarks with nothing to flush.
	containerGrace = 5 * time.Second
	// slimdGrace: slimd revokes its lease and stops etcd on SIGTERM.
	slimdGrace = 10 * time.Second
	// downCNITimeout bounds each best-effort CNI DEL during Down.
	downCNITimeout = 10 * time.Second
)

// Down removes everything the lab made: it releases the containers'
// addresses (CNI DEL, best effort, where the host's slimd still runs),
// stops every process in the lab's cgroup subtree, removes the cgroups,
// every slimlab-* namespace, and the lab's files in the state directory.
// It finds these by their names, not only from state files, so it also
// cleans up after a crash or a half-made Up; running it twice is harmless.
// It carries on past failures and returns them all.
func Down(ctx context.Context, cfg Config) error {
	pr := NewProgress(cfg.Progress)
	dir := cfg.stateDir()
	var errs []error
	cgRoot, err := cgroupRoot()
	if err != nil {
		errs = append(errs, err)
	}

	if cgRoot != "" {
		n := releaseContainers(ctx, cfg, cgRoot, pr)
		if n > 0 {
			pr.Step("released %d container addresses", n)
		}
		labCg := filepath.Join(cgRoot, cgroupDir)
		if err := stopLab(ctx, labCg); err != nil {
			errs = append(errs, err)
		}
		if err := removeCgroupTree(labCg); err != nil {
			errs = append(errs, err)
		}
		pr.Step("processes stopped, cgroup %s removed", labCg)
	}

	names, err := listLabNetns()
	if err != nil {
		errs = append(errs, err)
	}
	for _, n := range names {
		if err := deleteNetns(n); err != nil {
			errs = append(errs, err)
		}
	}
	pr.Step("%d namespaces removed", len(names))

	// Unlinking the pins detaches the slimds' BPF programs (nothing else
	// holds them once the slimds are gone).
	if err := os.RemoveAll(BPFPinRoot); err != nil {
		errs = append(errs, fmt.Errorf("remove bpf pins: %w", err))
	}

	if err := removeStateDir(dir); err != nil {
		errs = append(errs, err)
	}
	pr.Step("state %s removed", dir)
	return errors.Join(errs...)
}

// releaseContainers runs CNI DEL for every container whose host's slimd is
// alive, so that the store does not keep their addresses. Containers come
// from state files and from the cgroup tree (h<i>/c-<name>), whichever
// survived. Failures are only reported: the lab is going away.
func releaseContainers(ctx context.Context, cfg Config, cgRoot string, pr *Progress) int {
	dir := cfg.stateDir()
	p, err := loadPlan(dir)
	if err != nil {
		return 0
	}
	binDir, err := cfg.binDir(p)
	if err != nil {
		return 0
	}
	found := map[string]Container{}
	cs, _ := loadContainers(dir)
	for _, c := range cs {
		found[c.Name] = c
	}
	hosts, _ := os.ReadDir(filepath.Join(cgRoot, cgroupDir))
	for _, h := range hosts {
		if !h.IsDir() || hostIndex(h.Name()) == 0 {
			continue
		}
		ents, _ := os.ReadDir(filepath.Join(cgRoot, cgroupDir, h.Name()))
		for _, e := range ents {
			name, ok := strings.CutPrefix(e.Name(), "c-")
			if ok && e.IsDir() && ValidateName(name) == nil {
				if _, known := found[name]; !known {
					found[name] = Container{Name: name, Host: h.Name()}
				}
			}
		}
	}
	n := 0
	for _, c := range found {
		if _, alive := slimdPID(cgRoot, dir, c.Host); !alive {
			continue
		}
		dctx, cancel := context.WithTimeout(ctx, downCNITimeout)
		err := cniCallOf(dir, binDir, c).del(dctx)
		cancel()
		if err != nil {
			pr.Step("warning: %v", err)
			continue
		}
		n++
	}
	return n
}

// stopLab stops every process in the lab's cgroup subtree, in phases:
// containers and processes exec'd in hosts first (their slimds can still
// see them go), then the slimds
// that joined h1's etcd, then h1's, then the rest (the external etcd
// members) so that every slimd can still reach the store while it shuts
// down.
func stopLab(ctx context.Context, labCg string) error {
	tree, err := cgroupTree(labCg)
	if err != nil {
		return err
	}
	h1 := filepath.Join(labCg, HostName(1))
	var containers, joiners, first, rest []string
	for _, cg := range tree {
		base := filepath.Base(cg)
		switch {
		case strings.HasPrefix(base, "c-") || base == "host":
			containers = append(containers, cg)
		case base == "slimd" && filepath.Dir(cg) != h1:
			joiners = append(joiners, cg)
		case base == "slimd":
			first = append(first, cg)
		default:
			rest = append(rest, cg)
		}
	}
	var errs []error
	for _, phase := range []struct {
		cgs   []string
		grace time.Duration
	}{{containers, containerGrace}, {joiners, slimdGrace}, {first, slimdGrace}, {rest, slimdGrace}} {
		if err := stopCgroups(ctx, phase.cgs, phase.grace); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("stop lab processes: %w", errors.Join(errs...))
	}
	return nil
}

// isKeeper reports whether pid is a `slimd keeper` process: slimd's fd
// keeper ignores SIGTERM by design, so stopping a slimd cgroup must not
// wait for it.
func isKeeper(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	args := strings.Split(string(b), "\x00")
	return len(args) >= 2 && args[1] == "keeper"
}
