package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/atomicfile"
)

// Container is a lab container as recorded in its state file. The JSON form
// is a contract (slimctl lab ls -o json prints it): add fields, never rename
// them.
type Container struct {
	Name        string            `json:"name"`
	Host        string            `json:"host"`
	ContainerID string            `json:"containerID"`
	Netns       string            `json:"netns"`
	Cgroup      string            `json:"cgroup"`
	PID         int               `json:"pid"`
	IPv4        netip.Addr        `json:"ipv4"`
	IPv6        netip.Addr        `json:"ipv6,omitzero"`
	Labels      map[string]string `json:"labels,omitempty"`
	// Namespace and Ports: see RunSpec.
	Namespace string          `json:"namespace,omitempty"`
	Ports     []api.NamedPort `json:"ports,omitempty"`
	// NoSlim keeps the container off the fast path (overlay only).
	NoSlim  bool      `json:"noSlim"`
	Command []string  `json:"command"`
	Created time.Time `json:"created"`
	// CNIResult is the plugin's ADD result, as it printed it.
	CNIResult json.RawMessage `json:"cniResult,omitempty"`
}

// RunSpec says what Run starts.
type RunSpec struct {
	// Host is the lab host (h1, h2, ...).
	Host string
	// Name is the container's name (see ValidateName).
	Name   string
	Labels map[string]string
	// Namespace is the container's namespace for network policies,
	// passed as a Kubernetes runtime does (K8S_POD_NAMESPACE in
	// CNI_ARGS); empty: "default".
	Namespace string
	// Ports are the container's named ports (args.cni.ports).
	Ports []api.NamedPort
	// NoSlim is recorded in the state; the fast path will honour it.
	NoSlim bool
	// Command is what runs in the container, in the background.
	Command []string
}

func saveContainer(dir string, c Container) error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(containersDir(dir), 0o755); err != nil {
		return err
	}
	return atomicfile.Write(containerFile(dir, c.Name), append(b, '\n'), 0o644)
}

func loadContainer(dir, name string) (Container, error) {
	var c Container
	b, err := os.ReadFile(containerFile(dir, name))
	if errors.Is(err, os.ErrNotExist) {
		return c, fmt.Errorf("container %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return c, err
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("read %s: %w", containerFile(dir, name), err)
	}
	if c.Name != name {
		return c, fmt.Errorf("read %s: it names container %q", containerFile(dir, name), c.Name)
	}
	return c, nil
}

// loadContainers reads every container state file in dir, sorted by name.
// A file that does not parse is reported, not skipped.
func loadContainers(dir string) ([]Container, error) {
	ents, err := os.ReadDir(containersDir(dir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var cs []Container
	var errs []error
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || strings.HasPrefix(name, ".") || ValidateName(name) != nil {
			continue
		}
		c, err := loadContainer(dir, name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		cs = append(cs, c)
	}
	sort.Slice(cs, func(i, j int) bool { return cs[i].Name < cs[j].Name })
	return cs, errors.Join(errs...)
}

// removeStateDir removes what the lab put in dir, and dir itself if that
// leaves it empty. It removes only the lab's own entries, so a state dir
// pointed at the wrong place does not cost anyone their files.
func removeStateDir(dir string) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range ents {
		n := e.Name()
		ours := n == labFileName || n == filepath.Base(containersDir(dir)) ||
			n == filepath.Base(cniCacheDir(dir)) || (e.IsDir() && (hostIndex(n) > 0 || memberIndex(n) > 0)) ||
			n == filepath.Base(pkiDir(dir)) ||
			strings.HasPrefix(n, "."+labFileName+".")
		if !ours {
			continue
		}
		if err := os.RemoveAll(filepath.Join(dir, n)); err != nil {
			errs = append(errs, err)
		}
	}
	// A dir that still holds files the lab did not make is left alone.
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, syscall.ENOTEMPTY) {
		errs = append(errs, fmt.Errorf("state dir %s: %w", dir, err))
	}
	return errors.Join(errs...)
}
