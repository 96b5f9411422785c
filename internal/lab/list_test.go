package lab

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/slimnet/slim/internal/testenv"
)

func testListing() Listing {
	web := testContainer("web")
	cli := Container{Name: "client", Host: "h1", ContainerID: ContainerID("client"), PID: 777,
		IPv4: netip.MustParseAddr("10.244.0.2"), Command: []string{"sleep", "infinity"}, Created: web.Created}
	return Listing{
		StateDir: "/run/slimlab",
		Hosts: []HostStatus{
			{Name: "h1", UnderlayIP: netip.MustParseAddr("192.168.77.1"), PID: 100, Alive: true,
				Subnet4: netip.MustParsePrefix("10.244.0.0/24"), Subnet6: netip.MustParsePrefix("fd5a:11:0:0::/64"), Peers: 1},
			{Name: "h2", UnderlayIP: netip.MustParseAddr("192.168.77.2"), PID: 0, Alive: false},
		},
		Containers: []ContainerStatus{{Container: cli, Alive: true}, {Container: web, Alive: false}},
	}
}

func TestListingTable(t *testing.T) {
	var b bytes.Buffer
	if err := testListing().WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	testenv.Golden(t, "ls.table", b.Bytes())
}

// The JSON listing is a contract: this golden file may gain fields, never
// lose or rename them.
func TestListingJSON(t *testing.T) {
	var b bytes.Buffer
	if err := testListing().WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	testenv.Golden(t, "ls.json", b.Bytes())
	b.Reset()
	if err := (Listing{StateDir: "/x"}).WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	testenv.Golden(t, "ls-empty.json", b.Bytes())
}

func TestListingTableWithMembers(t *testing.T) {
	l := testListing()
	l.Members = []MemberStatus{
		{Name: "e1", UnderlayIP: netip.MustParseAddr("192.168.77.254"), PID: 300, Alive: true},
		{Name: "e2", UnderlayIP: netip.MustParseAddr("192.168.77.253")},
	}
	var b bytes.Buffer
	if err := l.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	testenv.Golden(t, "ls-members.table", b.Bytes())
}
