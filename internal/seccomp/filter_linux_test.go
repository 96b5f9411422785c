package seccomp

import (
	"encoding/binary"
	"fmt"
	"testing"

	"golang.org/x/sys/unix"
)

// runFilter interprets a seccomp cBPF program over one seccomp_data, with
// the kernel's rules (kernel/seccomp.c seccomp_check_filter): only 32-bit
// absolute loads at aligned offsets inside seccomp_data, forward jumps, and
// the program must end in a return. Anything else fails the test.
func runFilter(t *testing.T, prog []unix.SockFilter, nr int32, arch uint32, args [6]uint64) uint32 {
	t.Helper()
	var data [64]byte
	binary.LittleEndian.PutUint32(data[0:], uint32(nr))
	binary.LittleEndian.PutUint32(data[4:], arch)
	binary.LittleEndian.PutUint64(data[8:], 0x401000)
	for i, a := range args {
		binary.LittleEndian.PutUint64(data[16+8*i:], a)
	}
	if len(prog) == 0 || len(prog) > 4096 {
		t.Fatalf("program length %d", len(prog))
	}
	var acc uint32
	for pc := 0; pc < len(prog); pc++ {
		in := prog[pc]
		switch in.Code {
		case unix.BPF_LD | unix.BPF_W | unix.BPF_ABS:
			if in.K%4 != 0 || in.K+4 > uint32(len(data)) {
				t.Fatalf("pc %d: load at %d", pc, in.K)
			}
			acc = binary.LittleEndian.Uint32(data[in.K:])
		case unix.BPF_RET | unix.BPF_K:
			return in.K
		case unix.BPF_JMP | unix.BPF_JA:
			pc += int(in.K)
		case unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K,
			unix.BPF_JMP | unix.BPF_JGT | unix.BPF_K, unix.BPF_JMP | unix.BPF_JSET | unix.BPF_K:
			var ok bool
			switch in.Code &^ (unix.BPF_JMP | unix.BPF_K) {
			case unix.BPF_JEQ:
				ok = acc == in.K
			case unix.BPF_JGE:
				ok = acc >= in.K
			case unix.BPF_JGT:
				ok = acc > in.K
			case unix.BPF_JSET:
				ok = acc&in.K != 0
			}
			if ok {
				pc += int(in.Jt)
			} else {
				pc += int(in.Jf)
			}
		default:
			t.Fatalf("pc %d: unsupported instruction %#x", pc, in.Code)
		}
		if pc+1 > len(prog) {
			t.Fatalf("pc %d: jump past the end", pc)
		}
	}
	t.Fatal("program fell off its end")
	return 0
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
	a.jump(unix.BPF_JEQ, 1, "nowhere", "")
	a.ret(0)
	if _, err := a.assemble(); err == nil {
		t.Error("jump to a missing label assembled")
	}
	var b asm
	b.label("back")
	b.ret(0)
	b.jump(unix.BPF_JEQ, 1, "back", "")
	if _, err := b.assemble(); err == nil {
		t.Error("backward jump assembled")
	}
}
