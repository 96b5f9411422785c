package lab

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

func testContainer(name string) Container {
	return Container{
		Name:        name,
		Host:        "h2",
		ContainerID: ContainerID(name),
		Netns:       "/run/netns/" + ContainerNetns(name),
		Cgroup:      "/sys/fs/cgroup/unified/slimlab/h2/c-" + name,
		PID:         4242,
		IPv4:        netip.MustParseAddr("10.244.1.2"),
		IPv6:        netip.MustParseAddr("fd5a:11:0:1::2"),
		Labels:      map[string]string{"app": "web", "tier": "front"},
		NoSlim:      true,
		Command:     []string{"iperf3", "-s"},
		Created:     time.Date(2025, 11, 27, 12, 0, 0, 0, time.UTC),
		CNIResult:   json.RawMessage(`{"cniVersion":"1.1.0","ips":[{"address":"10.244.1.2/32"}]}`),
	}
}

func TestContainerRoundTrip(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []Container{testContainer("web"), {Name: "min", Host: "h1", IPv4: netip.MustParseAddr("10.244.0.9")}} {
		if err := saveContainer(dir, c); err != nil {
			t.Fatal(err)
		}
		got, err := loadContainer(dir, c.Name)
		if err != nil {
			t.Fatal(err)
		}
		if got.CNIResult != nil { // indentation may change, the content not
			var b bytes.Buffer
			if err := json.Compact(&b, got.CNIResult); err != nil {
				t.Fatal(err)
			}
			got.CNIResult = b.Bytes()
		}
		if !reflect.DeepEqual(got, c) {
			t.Errorf("round trip:\n got %+v\nwant %+v", got, c)
		}
	}
	if _, err := loadContainer(dir, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing container: %v, want ErrNotFound", err)
	}
	// Files that are not container states are not containers.
	for _, f := range []string{"README", ".web.json.123", "Bad_Name.json"} {
		if err := os.WriteFile(filepath.Join(containersDir(dir), f), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cs, err := loadContainers(dir)
	if err != nil || len(cs) != 2 || cs[0].Name != "min" || cs[1].Name != "web" {
		t.Errorf("loadContainers = %+v, %v; want min, web", cs, err)
	}
	// A broken state file is reported, the others still listed.
	if err := os.WriteFile(containerFile(dir, "broken"), []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	if cs, err := loadContainers(dir); err == nil || len(cs) != 2 {
		t.Errorf("with a broken file: %d containers, %v; want 2 and an error", len(cs), err)
	}
	// A state file must name its own container.
	if err := os.WriteFile(containerFile(dir, "other"), []byte(`{"name":"web"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := loadContainer(dir, "other"); err == nil {
		t.Error("a file naming another container was accepted")
	}
}

func TestRemoveStateDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	for _, p := range []string{"lab.json", "h1/data/member/wal", "h12/slimd.log", "containers/web.json", "cni/results/x", "e2/data/member/wal", "pki/ca.pem"} {
		p = filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := removeStateDir(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state dir still there: %v", err)
	}
	if err := removeStateDir(dir); err != nil {
		t.Errorf("second removal: %v", err)
	}

	// A state dir pointed at someone's files loses only the lab's.
	dir = t.TempDir()
	for _, p := range []string{"lab.json", "notes.txt", "home/x", "h1x/y", "e0/x"} {
		p = filepath.Join(dir, p)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := removeStateDir(dir); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]bool{"lab.json": false, "notes.txt": true, "home/x": true, "h1x/y": true, "e0/x": true} {
		_, err := os.Stat(filepath.Join(dir, p))
		if (err == nil) != want {
			t.Errorf("%s: exists %t, want %t", p, err == nil, want)
		}
	}
}
