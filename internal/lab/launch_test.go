package lab

import (
	"slices"
	"testing"
)

func TestLauncherCommand(t *testing.T) {
	spec := LaunchSpec{Netns: "/run/netns/slimlab-h1", Cgroup: "/cg/slimlab/h1/slimd", Command: []string{"slimd", "--node-name", "h1"}}
	got := LauncherCommand(spec, false)
	want := []string{"lab", "nsexec", "--netns", "/run/netns/slimlab-h1", "--cgroup", "/cg/slimlab/h1/slimd", "--", "slimd", "--node-name", "h1"}
	if !slices.Equal(got, want) {
		t.Errorf("got %q\nwant %q", got, want)
	}
	spec.Log, spec.StatusFD = "/run/slimlab/h1/slimd.log", 3
	got = LauncherCommand(spec, true)
	want = []string{"lab", "nsexec", "--netns", "/run/netns/slimlab-h1", "--cgroup", "/cg/slimlab/h1/slimd",
		"--log", "/run/slimlab/h1/slimd.log", "--status-fd", "3", "--detach", "--", "slimd", "--node-name", "h1"}
	if !slices.Equal(got, want) {
		t.Errorf("got %q\nwant %q", got, want)
	}
}

func TestLaunchSpecValidate(t *testing.T) {
	ok := LaunchSpec{Netns: "/n", Cgroup: "/c", Command: []string{"true"}}
	if err := ok.validate(); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []LaunchSpec{
		{Cgroup: "/c", Command: []string{"true"}},
		{Netns: "/n", Command: []string{"true"}},
		{Netns: "/n", Cgroup: "/c"},
		{Netns: "/n", Cgroup: "/c", Command: []string{""}},
	} {
		if bad.validate() == nil {
			t.Errorf("accepted %+v", bad)
		}
	}
}
