package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/slimnet/slim/internal/api"
)

// Run starts spec.Command as container spec.Name on host spec.Host: a new
// namespace attached by slim-cni (through libcni, as a runtime does it), a
// cgroup, and the command in the background with its output in the state
// directory. A failure undoes whatever was made.
func Run(ctx context.Context, cfg Config, spec RunSpec) (c Container, err error) {
	if err := ValidateName(spec.Name); err != nil {
		return c, err
	}
	if hostIndex(spec.Name) > 0 {
		return c, fmt.Errorf("container name %q: it is a host's name", spec.Name)
	}
	if err := api.ValidateLabels(spec.Labels); err != nil {
		return c, err
	}
	if spec.Namespace != "" {
		if err := api.ValidateNamespace(spec.Namespace); err != nil {
			return c, err
		}
	}
	if err := api.ValidatePorts(spec.Ports); err != nil {
		return c, err
	}
	if len(spec.Command) == 0 {
		return c, errors.New("no command")
	}
	dir := cfg.stateDir()
	p, err := loadPlan(dir)
	if err != nil {
		return c, err
	}
	if _, err := p.hostOf(spec.Host); err != nil {
		return c, err
	}
	binDir, err := cfg.binDir(p)
	if err != nil {
		return c, err
	}
	cgRoot, err := cgroupRoot()
	if err != nil {
		return c, err
	}
	if _, alive := slimdPID(cgRoot, dir, spec.Host); !alive {
		return c, fmt.Errorf("host %s: slimd is not running (slimctl lab up restarts it)", spec.Host)
	}
	if _, err := os.Stat(containerFile(dir, spec.Name)); err == nil {
		return c, fmt.Errorf("container %q: %w", spec.Name, ErrExists)
	}

	c = Container{
		Name:        spec.Name,
		Host:        spec.Host,
		ContainerID: ContainerID(spec.Name),
		Netns:       NetnsPath(ContainerNetns(spec.Name)),
		Cgroup:      ContainerCgroup(cgRoot, spec.Host, spec.Name),
		Labels:      spec.Labels,
		Namespace:   spec.Namespace,
		Ports:       spec.Ports,
		NoSlim:      spec.NoSlim,
		Command:     spec.Command,
		Created:     time.Now().UTC().Truncate(time.Millisecond),
	}
	cni := cniCallOf(dir, binDir, c)

	// Creating the namespace exclusively claims the name, also against a
	// concurrent Run.
	if _, err := createNetns(ContainerNetns(spec.Name), true); err != nil {
		return c, fmt.Errorf("container %q: %w", spec.Name, err)
	}
	var added, started bool
	done := false
	defer func() {
		if done {
			return
		}
		// Undo in reverse, keeping every error.
		if started {
			err = errors.Join(err, stopCgroups(context.WithoutCancel(ctx), []string{c.Cgroup}, containerGrace))
		}
		err = errors.Join(err, removeCgroupTree(c.Cgroup))
		if added {
			err = errors.Join(err, cni.del(context.WithoutCancel(ctx)))
		}
		err = errors.Join(err, deleteNetns(ContainerNetns(spec.Name)))
		// The error carries what the log would say; a later container of
		// the same name starts a fresh one anyway.
		os.Remove(containerLog(dir, spec.Name))
	}()

	if err := loopbackUp(ContainerNetns(spec.Name)); err != nil {
		return c, err
	}
	if err := ensureCgroup(c.Cgroup); err != nil {
		return c, err
	}
	if pids, _ := cgroupPIDs(c.Cgroup); len(pids) > 0 {
		return c, fmt.Errorf("cgroup %s already holds processes %v", c.Cgroup, pids)
	}
	added = true // a failed ADD may leave something behind: DEL it too
	a, err := cni.add(ctx)
	if err != nil {
		return c, err
	}
	c.IPv4, c.IPv6, c.CNIResult = a.ipv4, a.ipv6, a.result

	if err := os.MkdirAll(containersDir(dir), 0o755); err != nil {
		return c, err
	}
	log := containerLog(dir, spec.Name)
	if err := os.WriteFile(log, nil, 0o644); err != nil { // a new container starts a new log
		return c, err
	}
	started = true
	ls := LaunchSpec{
		Netns:   c.Netns,
		Cgroup:  c.Cgroup,
		Log:     log,
		Command: spec.Command,
	}
	if !spec.NoSlim {
		// On the fast path: the launcher puts the command under the
		// seccomp filter and hands the notification fd to the host's
		// slimd, as an OCI runtime does with listenerPath.
		ls.Agent = agentPath(dir, spec.Host)
	}
	c.PID, err = startDetached(ctx, cfg.launcher(binDir), ls)
	if err != nil {
		return c, fmt.Errorf("container %q: %w", spec.Name, err)
	}
	if err := saveContainer(dir, c); err != nil {
		return c, err
	}
	done = true
	return c, nil
}

// Remove stops container name's processes, releases its address (CNI DEL),
// and removes its namespace, cgroup and state file. If the DEL fails, the
// rest is removed anyway and the state file is kept so that removing again
// retries it.
func Remove(ctx context.Context, cfg Config, name string) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	dir := cfg.stateDir()
	p, err := loadPlan(dir)
	if err != nil {
		return err
	}
	binDir, err := cfg.binDir(p)
	if err != nil {
		return err
	}
	cgRoot, err := cgroupRoot()
	if err != nil {
		return err
	}
	c, err := loadContainer(dir, name)
	if errors.Is(err, ErrNotFound) {
		// No state file: a half-made container may have left its cgroup.
		c, err = findLeftover(cgRoot, name)
	}
	if err != nil {
		return err
	}
	if c.Cgroup == "" {
		c.Cgroup = ContainerCgroup(cgRoot, c.Host, name)
	}
	var errs []error
	if err := stopCgroups(ctx, []string{c.Cgroup}, containerGrace); err != nil {
		errs = append(errs, err)
	}
	if err := removeCgroupTree(c.Cgroup); err != nil {
		errs = append(errs, err)
	}
	delErr := cniCallOf(dir, binDir, c).del(ctx)
	if err := deleteNetns(ContainerNetns(name)); err != nil {
		errs = append(errs, err)
	}
	if delErr != nil {
		errs = append(errs, fmt.Errorf("%w (the address stays allocated; lab rm %s again retries)", delErr, name))
	} else {
		for _, f := range []string{containerFile(dir, name), containerLog(dir, name)} {
			if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// findLeftover finds a container with no state file by its cgroup.
func findLeftover(cgRoot, name string) (Container, error) {
	m, _ := filepath.Glob(filepath.Join(cgRoot, cgroupDir, "h*", "c-"+name))
	for _, cg := range m {
		if host := filepath.Base(filepath.Dir(cg)); hostIndex(host) > 0 {
			return Container{Name: name, Host: host, Cgroup: cg}, nil
		}
	}
	return Container{}, fmt.Errorf("container %q: %w", name, ErrNotFound)
}

// ExecLaunchSpec is the launcher spec that runs command inside target, in
// the foreground with inherited stdio. target is a container, or a host
// (h1, h2, ...) to run in the host's namespace; processes started there go
// to the host's cgroup slimlab/<host>/host, so Down finds them. slimctl lab
// exec hands the spec to Launch, so the command replaces slimctl.
func ExecLaunchSpec(cfg Config, target string, command []string) (LaunchSpec, error) {
	dir := cfg.stateDir()
	p, err := loadPlan(dir)
	if err != nil {
		return LaunchSpec{}, err
	}
	if hostIndex(target) > 0 {
		if _, err := p.hostOf(target); err != nil {
			return LaunchSpec{}, err
		}
		cgRoot, err := cgroupRoot()
		if err != nil {
			return LaunchSpec{}, err
		}
		cg := HostCgroup(cgRoot, target)
		if err := ensureCgroup(cg); err != nil {
			return LaunchSpec{}, err
		}
		return LaunchSpec{Netns: NetnsPath(HostNetns(target)), Cgroup: cg, Command: command}, nil
	}
	if err := ValidateName(target); err != nil {
		return LaunchSpec{}, err
	}
	c, err := loadContainer(dir, target)
	if err != nil {
		return LaunchSpec{}, err
	}
	ls := LaunchSpec{Netns: c.Netns, Cgroup: c.Cgroup, Command: command}
	if !c.NoSlim {
		ls.Agent = agentPath(dir, c.Host) // exec runs under the container's filter too
	}
	return ls, nil
}

// Exec runs spec.Command inside target, a container or a host (see
// ExecLaunchSpec), and returns its exit code. Failing to start it is an
// error, not a code.
func Exec(ctx context.Context, cfg Config, target string, spec ExecSpec) (int, error) {
	ls, err := ExecLaunchSpec(cfg, target, spec.Command)
	if err != nil {
		return -1, err
	}
	p, err := loadPlan(cfg.stateDir())
	if err != nil {
		return -1, err
	}
	binDir, err := cfg.binDir(p)
	if err != nil {
		return -1, err
	}
	return runForeground(ctx, cfg.launcher(binDir), ls, spec.Stdin, spec.Stdout, spec.Stderr)
}

// stderrTail bounds the stderr an ExitError carries.
const stderrTail = 4 << 10

// Output runs command inside target, a container or a host, and returns
// its stdout. A non-zero exit is an *ExitError carrying the end of its
// stderr.
func Output(ctx context.Context, cfg Config, target string, command ...string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	code, err := Exec(ctx, cfg, target, ExecSpec{Command: command, Stdout: &stdout, Stderr: &stderr})
	if err != nil {
		return nil, err
	}
	if code != 0 {
		e := stderr.Bytes()
		if len(e) > stderrTail {
			e = e[len(e)-stderrTail:]
		}
		return stdout.Bytes(), &ExitError{Code: code, Stderr: string(bytes.TrimSpace(e))}
	}
	return stdout.Bytes(), nil
}
