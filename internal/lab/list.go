package lab

import (
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"text/tabwriter"
)

// HostStatus is one lab host in a listing. The JSON form is a contract:
// add fields, never rename them.
type HostStatus struct {
	Name       string       `json:"name"`
	UnderlayIP netip.Addr   `json:"underlayIP"`
	PID        int          `json:"pid"`
	Alive      bool         `json:"alive"`
	Subnet4    netip.Prefix `json:"subnet4,omitzero"`
	Subnet6    netip.Prefix `json:"subnet6,omitzero"`
	Peers      int          `json:"peers"`
	// Error says why slimd's status could not be read.
	Error string `json:"error,omitempty"`
}

// MemberStatus is one etcd member of a lab with an external store.
type MemberStatus struct {
	Name       string     `json:"name"`
	UnderlayIP netip.Addr `json:"underlayIP"`
	PID        int        `json:"pid"`
	Alive      bool       `json:"alive"`
}

// ContainerStatus is one lab container in a listing.
type ContainerStatus struct {
	Container
	// Alive: the container's cgroup holds its command's process.
	Alive bool `json:"alive"`
}

// Listing is what List returns (slimctl lab ls).
type Listing struct {
	StateDir   string            `json:"stateDir"`
	Hosts      []HostStatus      `json:"hosts"`
	Members    []MemberStatus    `json:"etcdMembers,omitempty"`
	Containers []ContainerStatus `json:"containers"`
}

// WriteJSON writes l as indented JSON.
func (l Listing) WriteJSON(w io.Writer) error {
	if l.Hosts == nil {
		l.Hosts = []HostStatus{}
	}
	if l.Containers == nil {
		l.Containers = []ContainerStatus{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(l)
}

// WriteTable writes l as two aligned tables, hosts then containers.
func (l Listing) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tUNDERLAY\tSLIMD\tPID\tSUBNET\tPEERS")
	for _, h := range l.Hosts {
		state := "down"
		if h.Alive {
			state = "up"
		}
		subnet := dash(h.Subnet4.String(), h.Subnet4.IsValid())
		if h.Subnet6.IsValid() {
			subnet += "," + h.Subnet6.String()
		}
		peers := dash(strconv.Itoa(h.Peers), h.Alive && h.Error == "")
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", h.Name, h.UnderlayIP, state, dash(strconv.Itoa(h.PID), h.PID > 0), subnet, peers)
	}
	if len(l.Members) > 0 {
		fmt.Fprintln(tw)
		fmt.Fprintln(tw, "ETCD MEMBER\tUNDERLAY\tSTATE\tPID")
		for _, m := range l.Members {
			state := "down"
			if m.Alive {
				state = "up"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", m.Name, m.UnderlayIP, state, dash(strconv.Itoa(m.PID), m.PID > 0))
		}
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "CONTAINER\tHOST\tIPV4\tIPV6\tPID\tSTATE")
	for _, c := range l.Containers {
		state := "exited"
		if c.Alive {
			state = "running"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", c.Name, c.Host, dash(c.IPv4.String(), c.IPv4.IsValid()),
			dash(c.IPv6.String(), c.IPv6.IsValid()), c.PID, state)
	}
	return tw.Flush()
}

func dash(s string, ok bool) string {
	if !ok {
		return "-"
	}
	return s
}
