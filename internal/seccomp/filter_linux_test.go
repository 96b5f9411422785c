package seccomp

import (
	"encoding/binary"
	"fmt"
	"testing"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// runFilter runs a seccomp cBPF program over one seccomp_data in
// golang.org/x/net/bpf's interpreter, after checking the kernel's rules
// that interpreter does not (kernel/seccomp.c seccomp_check_filter): only
// 32-bit absolute loads at aligned offsets inside seccomp_data, and only
// forward jumps (x/net/bpf checks the bounds and the final return).
func runFilter(t *testing.T, prog []unix.SockFilter, nr int32, arch uint32, args [6]uint64) uint32 {
	t.Helper()
	if len(prog) == 0 || len(prog) > 4096 {
		t.Fatalf("program length %d", len(prog))
	}
	insts := make([]bpf.Instruction, len(prog))
	for pc, in := range prog {
		insts[pc] = bpf.RawInstruction{Op: in.Code, Jt: in.Jt, Jf: in.Jf, K: in.K}.Disassemble()
		switch i := insts[pc].(type) {
		case bpf.LoadAbsolute:
			if i.Size != 4 || i.Off%4 != 0 || i.Off+4 > 64 {
				t.Fatalf("pc %d: load of %d bytes at %d", pc, i.Size, i.Off)
			}
		case bpf.JumpIf, bpf.RetConstant:
		default:
			t.Fatalf("pc %d: unexpected instruction %v", pc, i)
		}
	}
	vm, err := bpf.NewVM(insts)
	if err != nil {
		t.Fatal(err)
	}
	// The kernel loads words of seccomp_data in host order (little
	// endian on both supported architectures); the interpreter loads them
	// big endian, so each 32-bit word is stored big endian where the
	// kernel would find it.
	var data [64]byte
	word := func(off int, v uint32) { binary.BigEndian.PutUint32(data[off:], v) }
	word(0, uint32(nr))
	word(4, arch)
	word(8, 0x401000)
	for i, a := range args {
		word(16+8*i, uint32(a))
		word(16+8*i+4, uint32(a>>32))
	}
	r, err := vm.Run(data[:])
	if err != nil {
		t.Fatal(err)
	}
	return uint32(r)
}

func verdict(r uint32) string {
	switch {
	case r == retAllow:
		return "allow"
	case r == retNotify:
		return "notify"
	case r == retKill:
		return "kill"
	case r&unix.SECCOMP_RET_ACTION_FULL == unix.SECCOMP_RET_ERRNO:
		return "errno " + unix.ErrnoName(unix.Errno(r&unix.SECCOMP_RET_DATA))
	}
	return fmt.Sprintf("%#x", r)
}

func TestFilter(t *testing.T) {
	const fo = unix.MSG_FASTOPEN
	type tc struct {
		name string
		nr   int32
		args [6]uint64
		want string
	}
	common := func(nr map[Syscall]uint32) []tc {
		n := func(s Syscall) int32 { return int32(nr[s]) }
		return []tc{
			{"connect", n(SysConnect), [6]uint64{3, 0x7000, 16}, "notify"},
			{"bind", n(SysBind), [6]uint64{3}, "notify"},
			{"listen", n(SysListen), [6]uint64{3, 128}, "notify"},
			{"sendto plain", n(SysSendto), [6]uint64{3, 0x7000, 10, 0}, "allow"},
			{"sendto nosignal", n(SysSendto), [6]uint64{3, 0x7000, 10, unix.MSG_NOSIGNAL | unix.MSG_DONTWAIT}, "allow"},
			{"sendto fastopen", n(SysSendto), [6]uint64{3, 0x7000, 10, fo}, "notify"},
			{"sendto fastopen+more", n(SysSendto), [6]uint64{3, 0x7000, 10, fo | unix.MSG_NOSIGNAL}, "notify"},
			// The flags are an int: high register bits are not flags.
			{"sendto high bits only", n(SysSendto), [6]uint64{3, 0x7000, 10, fo << 32}, "allow"},
			{"sendto fastopen, high garbage", n(SysSendto), [6]uint64{3, 0x7000, 10, 0xffffffff00000000 | fo}, "notify"},
			// The fastopen bit in another argument does not count.
			{"sendto fastopen in len", n(SysSendto), [6]uint64{3, 0x7000, fo, 0}, "allow"},
			{"sendmsg plain", n(SysSendmsg), [6]uint64{3, 0x7000, 0}, "allow"},
			{"sendmsg fastopen", n(SysSendmsg), [6]uint64{3, 0x7000, fo}, "notify"},
			{"sendmsg fastopen in args3", n(SysSendmsg), [6]uint64{3, 0x7000, 0, fo}, "allow"},
			{"sendmsg high bits only", n(SysSendmsg), [6]uint64{3, 0x7000, fo << 32}, "allow"},
			{"sendmmsg plain", n(SysSendmmsg), [6]uint64{3, 0x7000, 2, 0}, "allow"},
			{"sendmmsg fastopen", n(SysSendmmsg), [6]uint64{3, 0x7000, 2, fo}, "notify"},
			{"io_uring_setup", n(SysIoUringSetup), [6]uint64{8, 0x7000}, "errno EPERM"},
		}
	}
	for _, a := range arches {
		t.Run(fmt.Sprintf("arch=%#x", a.audit), func(t *testing.T) {
			prog, err := Filter(a.audit)
			if err != nil {
				t.Fatal(err)
			}
			cases := common(a.nr)
			trapped := map[uint32]bool{}
			for _, n := range a.nr {
				trapped[n] = true
			}
			// Every other number in the table's range, and beyond, is allowed.
			for nr := int32(0); nr < 600; nr++ {
				if !trapped[uint32(nr)] {
					cases = append(cases, tc{fmt.Sprintf("nr %d", nr), nr, [6]uint64{fo, fo, fo, fo, fo, fo}, "allow"})
				}
			}
			// Another architecture's audit value is fatal, whatever the call.
			for _, other := range []uint32{unix.AUDIT_ARCH_I386, unix.AUDIT_ARCH_ARM, unix.AUDIT_ARCH_X86_64, unix.AUDIT_ARCH_AARCH64, 0} {
				if other == a.audit {
					continue
				}
				for _, nr := range []int32{0, 1, 60, 231, int32(a.nr[SysConnect])} {
					got := verdict(runFilter(t, prog, nr, other, [6]uint64{}))
					if got != "kill" {
						t.Errorf("arch %#x nr %d: got %s, want kill", other, nr, got)
					}
				}
			}
			if a.x32 {
				for _, nr := range []int32{x32SyscallBit, x32SyscallBit | 42, x32SyscallBit | 425, x32SyscallBit | 512, -1} {
					cases = append(cases, tc{fmt.Sprintf("x32 nr %#x", uint32(nr)), nr, [6]uint64{}, "errno ENOSYS"})
				}
			} else {
				cases = append(cases, tc{"nr 0x40000000", x32SyscallBit, [6]uint64{}, "allow"})
			}
			for _, c := range cases {
				if got := verdict(runFilter(t, prog, c.nr, a.audit, c.args)); got != c.want {
					t.Errorf("%s: got %s, want %s", c.name, got, c.want)
				}
			}
		})
	}
}

func TestFilterUnknownArch(t *testing.T) {
	for _, arch := range []uint32{0, unix.AUDIT_ARCH_I386, unix.AUDIT_ARCH_ARM, unix.AUDIT_ARCH_RISCV64} {
		if _, err := Filter(arch); err == nil {
			t.Errorf("Filter(%#x) succeeded", arch)
		}
	}
}

func TestNativeArch(t *testing.T) {
	arch := NativeArch()
	if arch == 0 {
		t.Skip("architecture not supported by the filter")
	}
	if _, err := Filter(arch); err != nil {
		t.Fatal(err)
	}
	// The tables must agree with x/sys for the architecture we build for.
	want := map[Syscall]int{
		SysConnect: unix.SYS_CONNECT, SysBind: unix.SYS_BIND, SysListen: unix.SYS_LISTEN,
		SysSendto: unix.SYS_SENDTO, SysSendmsg: unix.SYS_SENDMSG, SysSendmmsg: unix.SYS_SENDMMSG,
		SysIoUringSetup: unix.SYS_IO_URING_SETUP,
	}
	a, _ := archOf(arch)
	for s, nr := range want {
		if int(a.nr[s]) != nr {
			t.Errorf("%s: table says %d, x/sys says %d", s, a.nr[s], nr)
		}
		if got := SyscallOf(arch, int32(nr)); got != s {
			t.Errorf("SyscallOf(%d) = %s, want %s", nr, got, s)
		}
	}
	if got := SyscallOf(arch, unix.SYS_READ); got != SysUnknown {
		t.Errorf("SyscallOf(read) = %s", got)
	}
}

func TestAssembleErrors(t *testing.T) {
	var a asm
	a.jump(bpf.JumpEqual, 1, "nowhere", "")
	a.ret(0)
	if _, err := a.assemble(); err == nil {
		t.Error("jump to a missing label assembled")
	}
	var b asm
	b.label("back")
	b.ret(0)
	b.jump(bpf.JumpEqual, 1, "back", "")
	if _, err := b.assemble(); err == nil {
		t.Error("backward jump assembled")
	}
}
