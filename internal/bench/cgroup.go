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

// slimdCgroups are the cgroups of the lab's slimds on the benchmark's
// hosts, as package lab lays them out (<cgroup2>/slimlab/h<i>/slimd).
func slimdCgroups() ([]string, error) {
	root, err := cgroupfs.Mount()
	if err != nil {
		return nil, err
	}
	return []string{
		filepath.Join(root, "slimlab", serverHost, "slimd"),
		filepath.Join(root, "slimlab", clientHost, "slimd"),
	}, nil
}

// cgroupsCPU sums the CPU time of the cgroups.
func cgroupsCPU(cgs []string) (time.Duration, error) {
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
