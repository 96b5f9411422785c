package seccomp

import (
	"fmt"
	"maps"
	"runtime"
	"slices"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// Syscall names the system calls the filter traps, independent of the
// architecture's numbering.
type Syscall int

// The trapped system calls. SysUnknown is any other number (the filter never
// traps one).
const (
	SysUnknown Syscall = iota
	SysConnect
	SysBind
	SysListen
	SysSendto   // trapped only with MSG_FASTOPEN in args[3]
	SysSendmsg  // trapped only with MSG_FASTOPEN in args[2]
	SysSendmmsg // trapped only with MSG_FASTOPEN in args[3]
	SysIoUringSetup
)

var syscallNames = [...]string{"unknown", "connect", "bind", "listen", "sendto", "sendmsg", "sendmmsg", "io_uring_setup"}

func (s Syscall) String() string {
	if s < 0 || int(s) >= len(syscallNames) {
		return fmt.Sprintf("Syscall(%d)", int(s))
	}
	return syscallNames[s]
}

// trap is a call the filter sends to slimd: always, or with flagsArg >= 0
// only when that argument carries MSG_FASTOPEN (a connect by other
// means). Filter and Profile both build from traps and refused, so the
// filter slimd installs and the profile a runtime installs agree.
type trap struct {
	sys      Syscall
	flagsArg int
}

var traps = []trap{
	{SysConnect, -1}, {SysBind, -1}, {SysListen, -1},
	{SysSendto, 3}, {SysSendmsg, 2}, {SysSendmmsg, 3},
}

// refused are answered EPERM: io_uring would connect, bind and send
// around the traps.
var refused = []Syscall{SysIoUringSetup}

// archInfo is one architecture's numbering. The numbers are spelled out
// rather than taken from unix.SYS_*, which exist only for the architecture
// being compiled: Filter must build the program for either.
type archInfo struct {
	audit uint32
	x32   bool // x86_64: reject the x32 ABI (nr >= x32SyscallBit)
	nr    map[Syscall]uint32
}

// x32SyscallBit is __X32_SYSCALL_BIT (arch/x86/include/uapi/asm/unistd.h).
const x32SyscallBit = 0x40000000

var arches = []archInfo{
	{
		// arch/x86/entry/syscalls/syscall_64.tbl
		audit: unix.AUDIT_ARCH_X86_64,
		x32:   true,
		nr: map[Syscall]uint32{
			SysConnect: 42, SysSendto: 44, SysSendmsg: 46, SysBind: 49, SysListen: 50,
			SysSendmmsg: 307, SysIoUringSetup: 425,
		},
	},
	{
		// include/uapi/asm-generic/unistd.h
		audit: unix.AUDIT_ARCH_AARCH64,
		nr: map[Syscall]uint32{
			SysBind: 200, SysListen: 201, SysConnect: 203, SysSendto: 206, SysSendmsg: 211,
			SysSendmmsg: 269, SysIoUringSetup: 425,
		},
	},
}

func archOf(audit uint32) (*archInfo, bool) {
	for i := range arches {
		if arches[i].audit == audit {
			return &arches[i], true
		}
	}
	return nil, false
}

// NativeArch returns the AUDIT_ARCH_* value of the architecture this binary
// runs on, or 0 if Filter does not support it.
func NativeArch() uint32 {
	switch runtime.GOARCH {
	case "amd64":
		return unix.AUDIT_ARCH_X86_64
	case "arm64":
		return unix.AUDIT_ARCH_AARCH64
	}
	return 0
}

// SyscallOf maps a notification's (arch, nr) to the trapped call it names.
func SyscallOf(arch uint32, nr int32) Syscall {
	a, ok := archOf(arch)
	if !ok {
		return SysUnknown
	}
	for s, n := range a.nr {
		if int64(n) == int64(nr) {
			return s
		}
	}
	return SysUnknown
}

// Offsets into struct seccomp_data (include/uapi/linux/seccomp.h): int nr;
// __u32 arch; __u64 instruction_pointer; __u64 args[6].
const (
	offNr   = 0
	offArch = 4
	offArgs = 16
)

// argLow is the offset of the low 32 bits of args[i]: both supported
// architectures are little-endian.
func argLow(i int) uint32 { return offArgs + 8*uint32(i) }

// The filter's verdicts.
const (
	retAllow  = unix.SECCOMP_RET_ALLOW
	retNotify = unix.SECCOMP_RET_USER_NOTIF
	retKill   = unix.SECCOMP_RET_KILL_PROCESS
	retEPERM  = unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)
	retENOSYS = unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)
)

// Filter returns the classic-BPF program for arch (an AUDIT_ARCH_* value):
// see the package documentation for what it traps and why. It is pure.
func Filter(arch uint32) ([]unix.SockFilter, error) {
	a, ok := archOf(arch)
	if !ok {
		return nil, fmt.Errorf("filter for arch %#x: %w", arch, ErrNotSupported)
	}
	var p asm
	p.load(offArch)
	p.jump(bpf.JumpEqual, a.audit, "", "kill")
	p.load(offNr)
	if a.x32 {
		// JGE is unsigned: also catches nr = -1.
		p.jump(bpf.JumpGreaterOrEqual, x32SyscallBit, "enosys", "")
	}
	// Most frequent first does not matter here: every other call passes all
	// seven tests, a few ns once JITed.
	flagArgs := map[int]bool{}
	for _, t := range traps {
		target := "notify"
		if t.flagsArg >= 0 {
			target = fmt.Sprintf("flags%d", t.flagsArg)
			flagArgs[t.flagsArg] = true
		}
		p.jump(bpf.JumpEqual, a.nr[t.sys], target, "")
	}
	for _, r := range refused {
		p.jump(bpf.JumpEqual, a.nr[r], "eperm", "")
	}
	p.ret(retAllow)

	for _, arg := range slices.Sorted(maps.Keys(flagArgs)) {
		p.label(fmt.Sprintf("flags%d", arg))
		p.load(argLow(arg))
		p.jump(bpf.JumpBitsSet, unix.MSG_FASTOPEN, "notify", "allow")
	}

	p.label("allow")
	p.ret(retAllow)
	p.label("notify")
	p.ret(retNotify)
	p.label("eperm")
	p.ret(retEPERM)
	p.label("enosys")
	p.ret(retENOSYS)
	p.label("kill")
	p.ret(retKill)
	return p.assemble()
}

// asm builds a cBPF program (golang.org/x/net/bpf instructions) with
// symbolic, forward-only jump targets.
type asm struct {
	prog   []bpf.Instruction
	fix    []fixup
	labels map[string]int
}

type fixup struct {
	at     int
	jt, jf string
}

// load loads the 32-bit word at off of struct seccomp_data (the kernel
// reads it in host byte order).
func (a *asm) load(off uint32) { a.prog = append(a.prog, bpf.LoadAbsolute{Off: off, Size: 4}) }

func (a *asm) ret(k uint32) { a.prog = append(a.prog, bpf.RetConstant{Val: k}) }

// jump adds a conditional jump; an empty target means the next instruction.
func (a *asm) jump(cond bpf.JumpTest, k uint32, jt, jf string) {
	a.fix = append(a.fix, fixup{at: len(a.prog), jt: jt, jf: jf})
	a.prog = append(a.prog, bpf.JumpIf{Cond: cond, Val: k})
}

func (a *asm) label(name string) {
	if a.labels == nil {
		a.labels = map[string]int{}
	}
	a.labels[name] = len(a.prog)
}

// assemble resolves the labels and encodes the program for the kernel.
func (a *asm) assemble() ([]unix.SockFilter, error) {
	off := func(from int, name string) (uint8, error) {
		if name == "" {
			return 0, nil
		}
		to, ok := a.labels[name]
		if !ok {
			return 0, fmt.Errorf("assemble: no label %q", name)
		}
		d := to - from - 1
		if d < 0 || d > 255 {
			return 0, fmt.Errorf("assemble: jump from %d to %q (%d) out of range", from, name, to)
		}
		return uint8(d), nil
	}
	for _, f := range a.fix {
		jt, err := off(f.at, f.jt)
		if err != nil {
			return nil, err
		}
		jf, err := off(f.at, f.jf)
		if err != nil {
			return nil, err
		}
		j := a.prog[f.at].(bpf.JumpIf)
		j.SkipTrue, j.SkipFalse = jt, jf
		a.prog[f.at] = j
	}
	raw, err := bpf.Assemble(a.prog)
	if err != nil {
		return nil, fmt.Errorf("assemble: %w", err)
	}
	out := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		out[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	return out, nil
}
