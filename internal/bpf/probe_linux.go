//go:build linux && (amd64 || arm64)

package bpf

import (
	"errors"
	"fmt"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Probe tests the running kernel for what Load needs and for the optional
// BPF LSM. A missing feature is a false field (degrade); a probe that cannot
// decide is an error.
func Probe() (Features, error) {
	var f Features
	var errs []error
	check := func(dst *bool, name string, err error) {
		switch {
		case err == nil:
			*dst = true
		case errors.Is(err, ebpf.ErrNotSupported):
		default:
			errs = append(errs, fmt.Errorf("probe %s: %w", name, err))
		}
	}
	check(&f.SockAddr, "sock_addr getpeername hooks", probeSockAddr())
	check(&f.SkStorage, "sk_storage map", features.HaveMapType(ebpf.SkStorage))
	check(&f.Sockopt, "cgroup sockopt", features.HaveProgramType(ebpf.CGroupSockopt))
	check(&f.Link, "cgroup bpf_link", probeLink())
	cg := features.HaveProgramHelper(ebpf.CGroupSockAddr, asm.FnGetCurrentCgroupId)
	if cg == nil {
		cg = features.HaveProgramHelper(ebpf.CGroupSockopt, asm.FnGetCurrentCgroupId)
	}
	check(&f.CurrentCgroup, "bpf_get_current_cgroup_id", cg)
	// Without the right to load programs every probe above fails the same
	// way; only with it is an EPERM from the LSM probe the kernel's verdict.
	if f.SockAddr {
		check(&f.LSM, "bpf lsm", probeLSM())
	}
	return f, errors.Join(errs...)
}

// probeSockAddr loads a trivial getpeername4 program: the getsockname and
// getpeername hooks (5.8) are the newest sock_addr attach types Load uses.
func probeSockAddr() error {
	if err := features.HaveProgramType(ebpf.CGroupSockAddr); err != nil {
		return err
	}
	prog, err := ebpf.NewProgramWithOptions(&ebpf.ProgramSpec{
		Type:       ebpf.CGroupSockAddr,
		AttachType: ebpf.AttachCgroupInet4GetPeername,
		License:    "GPL",
		Instructions: asm.Instructions{
			asm.Mov.Imm(asm.R0, 1),
			asm.Return(),
		},
	}, ebpf.ProgramOptions{LogDisabled: true})
	if errors.Is(err, unix.EINVAL) {
		return ebpf.ErrNotSupported
	}
	if err != nil {
		return err
	}
	return prog.Close()
}

// probeLink asks BPF_LINK_CREATE for a cgroup link with invalid fds: a
// kernel with cgroup bpf_links (5.7) answers EBADF, an older one EINVAL.
// Without links nothing can stay attached while slimd is down.
func probeLink() error {
	const bpfLinkCreate = 28
	attr := struct {
		progFD, targetFD, attachType, flags uint32
		_                                   [8]uint64
	}{progFD: ^uint32(0), targetFD: ^uint32(0), attachType: uint32(ebpf.AttachCGroupInet4Connect)}
	_, _, errno := unix.Syscall(unix.SYS_BPF, bpfLinkCreate, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	switch errno {
	case unix.EBADF:
		return nil
	case unix.EINVAL:
		return ebpf.ErrNotSupported
	case 0:
		return errors.New("link create with invalid fds succeeded")
	default:
		return errno
	}
}

// probeLSM loads and briefly attaches an LSM program that allows everything.
// Loading alone is not enough: a kernel may load LSM programs and still
// refuse the BPF trampoline at attach time. On the 6.18 VM this was written
// on, with "bpf" in CONFIG_LSM, the load itself fails with EPERM for root.
func probeLSM() error {
	if err := features.HaveProgramType(ebpf.LSM); err != nil {
		return lsmErr(err)
	}
	prog, err := ebpf.NewProgramWithOptions(&ebpf.ProgramSpec{
		Type:       ebpf.LSM,
		AttachType: ebpf.AttachLSMMac,
		AttachTo:   "socket_listen",
		License:    "GPL",
		Instructions: asm.Instructions{
			asm.Mov.Imm(asm.R0, 0),
			asm.Return(),
		},
	}, ebpf.ProgramOptions{LogDisabled: true})
	if err != nil {
		return lsmErr(err)
	}
	defer prog.Close()
	l, err := link.AttachLSM(link.LSMOptions{Program: prog})
	if err != nil {
		return lsmErr(err)
	}
	return l.Close()
}

// lsmErr classifies a refused LSM load or attach as not supported.
func lsmErr(err error) error {
	for _, e := range []error{ebpf.ErrNotSupported, unix.EPERM, unix.ENOTSUP, unix.EOPNOTSUPP, unix.EINVAL} {
		if errors.Is(err, e) {
			return fmt.Errorf("%w: %w", ebpf.ErrNotSupported, err)
		}
	}
	return err
}
