package seccomp

import (
	"fmt"
	"runtime"
	"slices"

	mobyseccomp "github.com/moby/profiles/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// ProfileVersion numbers the profile's content. Kubernetes reads a
// Localhost profile when it creates a container, so an upgrade writes a
// new file (ProfileName) instead of changing the one running pods
// started with. TestProfileVersion fails when the content changes and
// this does not.
const ProfileVersion = 1

// ProfileName is the profile's file name under the kubelet's seccomp
// directory (a pod names it as localhostProfile: slim/<ProfileName>).
func ProfileName() string { return fmt.Sprintf("slim-v%d.json", ProfileVersion) }

// DefaultCapabilities are the capabilities containerd, CRI-O and Docker
// give a container by default: the allowlist below is the one a
// container with them gets from the runtime's default profile.
var DefaultCapabilities = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID",
	"CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

// Profile is the OCI seccomp profile that gives a container Slim's
// filter through its runtime (linux.seccomp in the runtime spec, and a
// Kubernetes Localhost profile): the runtime's default allowlist (moby's
// default profile, the one containerd's and CRI-O's derive from) for the
// default capabilities, with the calls Filter traps sent to slimd's agent
// socket agentPath (listenerPath) and io_uring refused. Only the native
// architecture is allowed, as Filter does: another ABI's numbers would
// reach connect around the traps.
func Profile(agentPath string) (*specs.LinuxSeccomp, error) {
	if agentPath == "" || agentPath[0] != '/' {
		return nil, fmt.Errorf("seccomp profile: agent socket %q: want an absolute path", agentPath)
	}
	native, ok := map[string]specs.Arch{"amd64": specs.ArchX86_64, "arm64": specs.ArchAARCH64}[runtime.GOARCH]
	if !ok {
		return nil, fmt.Errorf("seccomp profile for %s: %w", runtime.GOARCH, ErrNotSupported)
	}
	base, err := mobyseccomp.GetDefaultProfile(&specs.Spec{Process: &specs.Process{
		Capabilities: &specs.LinuxCapabilities{Bounding: DefaultCapabilities}}})
	if err != nil {
		return nil, fmt.Errorf("seccomp profile: the default profile: %w", err)
	}
	// Every call the rules below decide is taken out of the default
	// rules: a call under two unconditional rules is an error or a
	// silent choice, depending on the runtime. socketcall is the 32-bit
	// way to connect.
	decided := map[string]bool{"socketcall": true}
	for _, t := range traps {
		decided[t.sys.String()] = true
	}
	for _, r := range refusedNames() {
		decided[r] = true
	}
	p := &specs.LinuxSeccomp{
		DefaultAction:    base.DefaultAction,
		DefaultErrnoRet:  base.DefaultErrnoRet,
		Architectures:    []specs.Arch{native},
		ListenerPath:     agentPath,
		ListenerMetadata: fmt.Sprintf("slim-v%d", ProfileVersion),
	}
	for _, s := range base.Syscalls {
		s.Names = slices.DeleteFunc(slices.Clone(s.Names), func(n string) bool { return decided[n] })
		if len(s.Names) > 0 {
			p.Syscalls = append(p.Syscalls, s)
		}
	}
	always := []string{}
	for _, t := range traps {
		if t.flagsArg < 0 {
			always = append(always, t.sys.String())
			continue
		}
		// MASKED_EQ: (arg & Value) == ValueTwo.
		fastOpen := func(v uint64) []specs.LinuxSeccompArg {
			return []specs.LinuxSeccompArg{{Index: uint(t.flagsArg), Value: unix.MSG_FASTOPEN, ValueTwo: v, Op: specs.OpMaskedEqual}}
		}
		p.Syscalls = append(p.Syscalls,
			specs.LinuxSyscall{Names: []string{t.sys.String()}, Action: specs.ActNotify, Args: fastOpen(unix.MSG_FASTOPEN)},
			specs.LinuxSyscall{Names: []string{t.sys.String()}, Action: specs.ActAllow, Args: fastOpen(0)})
	}
	eperm := uint(unix.EPERM)
	p.Syscalls = append(p.Syscalls,
		specs.LinuxSyscall{Names: always, Action: specs.ActNotify},
		specs.LinuxSyscall{Names: refusedNames(), Action: specs.ActErrno, ErrnoRet: &eperm})
	return p, nil
}

// refusedNames are the refused calls with the rest of their family:
// without a ring, io_uring_enter and io_uring_register do nothing, but
// the profile need not rely on that.
func refusedNames() []string {
	var out []string
	for _, r := range refused {
		out = append(out, r.String())
		if r == SysIoUringSetup {
			out = append(out, "io_uring_enter", "io_uring_register")
		}
	}
	return out
}
