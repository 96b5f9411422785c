package cgroupfs

import (
	"errors"
	"strings"
	"testing"
)

// hybridMountinfo is the test machine's: cgroup v1 controllers, and v2
// mounted at /sys/fs/cgroup/unified.
const hybridMountinfo = `22 1 254:0 / / rw,relatime - ext4 /dev/vda rw
30 22 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
31 30 0:28 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
39 30 0:36 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
40 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`

func TestParseCgroup2Mount(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
		err            error
	}{
		{"hybrid", hybridMountinfo, "/sys/fs/cgroup/unified", nil},
		{"unified with optional fields",
			"25 1 0:5 / /proc rw - proc proc rw\n" +
				"35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 master:2 - cgroup2 cgroup2 rw,nsdelegate\n",
			"/sys/fs/cgroup", nil},
		{"escaped path", `40 30 0:37 / /mnt/my\040cgroup rw - cgroup2 none rw` + "\n", "/mnt/my cgroup", nil},
		{"first of two", "1 0 0:1 / /a rw - cgroup2 x rw\n2 0 0:1 / /b rw - cgroup2 x rw\n", "/a", nil},
		{"v1 only", "31 30 0:28 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n", "", ErrNoCgroup2},
		{"source named cgroup2", "31 30 0:28 / /x rw - tmpfs cgroup2 rw\n", "", ErrNoCgroup2},
		{"garbage", "nonsense\n\n - - -\n", "", ErrNoCgroup2},
		{"empty", "", "", ErrNoCgroup2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseMount(strings.NewReader(tc.in))
			if !errors.Is(err, tc.err) || got != tc.want {
				t.Errorf("got %q, %v; want %q, %v", got, err, tc.want, tc.err)
			}
		})
	}
}

func TestUnescapeMountPath(t *testing.T) {
	for in, want := range map[string]string{
		`/a`:            "/a",
		`/a\040b`:       "/a b",
		`/a\011b\012c`:  "/a\tb\nc",
		`/a\134b`:       `/a\b`,
		`/\040\040`:     "/  ",
		`/no\escape`:    "",
		`/short\04`:     "",
		`/end\`:         "",
		`/\777overflow`: "",
	} {
		got, err := unescapeMountPath(in)
		if want == "" {
			if err == nil {
				t.Errorf("unescape(%q) = %q, want an error", in, got)
			}
			continue
		}
		if err != nil || got != want {
			t.Errorf("unescape(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func FuzzParseCgroup2Mount(f *testing.F) {
	f.Add(hybridMountinfo)
	f.Add(`40 30 0:37 / /mnt/my\040cgroup rw - cgroup2 none rw`)
	f.Fuzz(func(t *testing.T, in string) {
		got, err := ParseMount(strings.NewReader(in))
		if err == nil && got == "" {
			t.Errorf("no error and no mount point for %q", in)
		}
	})
}

func TestParseSelf(t *testing.T) {
	in := "12:pids:/x\n0::/slimlab/h1/slimd\n"
	if got, err := ParseSelf(strings.NewReader(in)); err != nil || got != "/slimlab/h1/slimd" {
		t.Fatalf("ParseSelf = %q, %v", got, err)
	}
	if _, err := ParseSelf(strings.NewReader("4:memory:/x\n")); !errors.Is(err, ErrNoCgroup2) {
		t.Fatalf("v1 only: %v", err)
	}
}
