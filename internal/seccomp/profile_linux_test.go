package seccomp

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

var updateProfile = flag.Bool("update-profile", false, "write the profile's golden file for a new ProfileVersion")

// profileVerdict is what a runtime's libseccomp makes of p for one call:
// the action of the rule that matches it (a call under two matching rules
// is a test failure), else the default action.
func profileVerdict(t *testing.T, p *specs.LinuxSeccomp, name string, args [6]uint64) string {
	t.Helper()
	var got []string
	for _, s := range p.Syscalls {
		if !slices.Contains(s.Names, name) {
			continue
		}
		match := true
		for _, a := range s.Args {
			v := args[a.Index]
			switch a.Op {
			case specs.OpMaskedEqual:
				match = match && v&a.Value == a.ValueTwo
			case specs.OpEqualTo:
				match = match && v == a.Value
			case specs.OpLessThan:
				match = match && v < a.Value
			case specs.OpNotEqual:
				match = match && v != a.Value
			default:
				t.Fatalf("%s: operator %s not evaluated by this test", name, a.Op)
			}
		}
		if match {
			got = append(got, actionName(s.Action, s.ErrnoRet))
		}
	}
	switch len(got) {
	case 0:
		return actionName(p.DefaultAction, p.DefaultErrnoRet)
	case 1:
		return got[0]
	}
	t.Fatalf("%s %v: %d rules match: %v", name, args, len(got), got)
	return ""
}

func actionName(a specs.LinuxSeccompAction, errno *uint) string {
	switch a {
	case specs.ActAllow:
		return "allow"
	case specs.ActNotify:
		return "notify"
	case specs.ActErrno:
		if errno == nil {
			return "errno EPERM" // libseccomp's default for SCMP_ACT_ERRNO
		}
		return "errno " + unix.ErrnoName(unix.Errno(*errno))
	}
	return string(a)
}

// The profile traps what Filter traps, calls for calls and flags for
// flags, refuses io_uring and 32-bit ways to connect, keeps the default
// allowlist for everything else, and names slimd's agent socket.
func TestProfile(t *testing.T) {
	p, err := Profile("/run/slim/agent.sock")
	if err != nil {
		t.Fatal(err)
	}
	if p.ListenerPath != "/run/slim/agent.sock" || p.ListenerMetadata != "slim-v1" {
		t.Errorf("listener %q %q", p.ListenerPath, p.ListenerMetadata)
	}
	if len(p.Architectures) != 1 {
		t.Errorf("architectures %v: want the native one only (another ABI connects around the traps)", p.Architectures)
	}
	if p.DefaultAction != specs.ActErrno {
		t.Errorf("default action %s: want an allowlist", p.DefaultAction)
	}
	prog, err := Filter(NativeArch())
	if err != nil {
		t.Fatal(err)
	}
	a, _ := archOf(NativeArch())
	const fo = unix.MSG_FASTOPEN
	for s := SysConnect; int(s) < len(syscallNames); s++ {
		for _, args := range [][6]uint64{{3, 0x7000, 16, 0}, {3, 0x7000, fo, fo}, {3, 0x7000, fo, 0}, {3, 0x7000, 0, fo}, {3, 0x7000, 0, fo | unix.MSG_NOSIGNAL}} {
			want := verdict(runFilter(t, prog, int32(a.nr[s]), a.audit, args))
			if got := profileVerdict(t, p, s.String(), args); got != want {
				t.Errorf("%s %v: profile %s, filter %s", s, args, got, want)
			}
		}
	}
	for name, want := range map[string]string{
		"io_uring_enter": "errno EPERM", "io_uring_register": "errno EPERM", "socketcall": "errno EPERM",
		"read": "allow", "write": "allow", "accept4": "allow", "clone3": "errno ENOSYS", "mount": "errno EPERM", "kexec_load": "errno EPERM",
	} {
		if got := profileVerdict(t, p, name, [6]uint64{}); got != want {
			t.Errorf("%s: %s, want %s", name, got, want)
		}
	}
	for _, dom := range []uint64{unix.AF_INET, unix.AF_INET6, unix.AF_UNIX, unix.AF_NETLINK} {
		if got := profileVerdict(t, p, "socket", [6]uint64{dom, unix.SOCK_STREAM}); got != "allow" {
			t.Errorf("socket(%d): %s", dom, got)
		}
	}
	for _, bad := range []string{"", "run/slim/agent.sock"} {
		if _, err := Profile(bad); err == nil {
			t.Errorf("agent socket %q accepted", bad)
		}
	}
}

// A profile's content never changes under its file name: running pods
// keep the file they started with (ProfileVersion).
func TestProfileVersion(t *testing.T) {
	p, err := Profile("/run/slim/agent.sock")
	if err != nil {
		t.Fatal(err)
	}
	got, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "profile", ProfileName())
	if *updateProfile {
		if _, err := os.Stat(golden); err == nil {
			t.Fatalf("%s exists: a released profile is never rewritten; bump ProfileVersion", golden)
		}
		if err := os.WriteFile(golden, append(got, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v: a new ProfileVersion needs its golden file (go test -run TestProfileVersion -update-profile)", err)
	}
	if !bytes.Equal(bytes.TrimSpace(want), got) {
		t.Errorf("the profile differs from %s: bump ProfileVersion (pods started under the old file keep it) and write the new golden file", golden)
	}
}
