package store

import (
	"encoding/json"
	"net/netip"
	"time"

	"github.com/slimnet/slim/internal/api"
)

// The persisted records. The store's schema is its own: these types are
// what etcd holds, with their field names fixed here, and they are
// converted to and from the API's types at the store's edge. A change to
// the API's JSON therefore never changes what is stored, and hosts running
// different versions keep reading each other's records. A field is added
// to a record deliberately, as optional (omitempty/omitzero), so older
// readers ignore it; a field is never renamed.

type hostRecord struct {
	Name       string       `json:"name"`
	UnderlayIP netip.Addr   `json:"underlayIP"`
	VTEPMAC    string       `json:"vtepMAC"`
	Subnet4    netip.Prefix `json:"subnet4"`
	Subnet6    netip.Prefix `json:"subnet6,omitzero"`
	MTU        int          `json:"mtu"`
	Started    time.Time    `json:"started"`
}

func hostRecordOf(h api.Host) hostRecord {
	return hostRecord{Name: h.Name, UnderlayIP: h.UnderlayIP, VTEPMAC: h.VTEPMAC, Subnet4: h.Subnet4, Subnet6: h.Subnet6,
		MTU: h.MTU, Started: h.Started}
}

func (r hostRecord) api() api.Host {
	return api.Host{Name: r.Name, UnderlayIP: r.UnderlayIP, VTEPMAC: r.VTEPMAC, Subnet4: r.Subnet4, Subnet6: r.Subnet6,
		MTU: r.MTU, Started: r.Started}
}

type endpointRecord struct {
	ContainerID string            `json:"containerID"`
	IfName      string            `json:"ifName"`
	Host        string            `json:"host"`
	IPv4        netip.Addr        `json:"ipv4"`
	IPv6        netip.Addr        `json:"ipv6,omitzero"`
	Labels      map[string]string `json:"labels,omitempty"`
	Netns       string            `json:"netns"`
	Created     time.Time         `json:"created"`
	PortBlocks  []portBlockRecord `json:"portBlocks,omitempty"`
	Ports       []namedPortRecord `json:"ports,omitempty"`
}

type namedPortRecord struct {
	Name     string `json:"name"`
	Port     uint16 `json:"port"`
	Protocol string `json:"protocol"`
}

type portBlockRecord struct {
	Start uint16 `json:"start"`
	Size  uint16 `json:"size"`
	IPv6  bool   `json:"ipv6,omitempty"`
}

func endpointRecordOf(ep api.Endpoint) endpointRecord {
	r := endpointRecord{ContainerID: ep.ContainerID, IfName: ep.IfName, Host: ep.Host, IPv4: ep.IPv4, IPv6: ep.IPv6,
		Labels: ep.Labels, Netns: ep.Netns, Created: ep.Created}
	for _, b := range ep.PortBlocks {
		r.PortBlocks = append(r.PortBlocks, portBlockRecord{Start: b.Start, Size: b.Size, IPv6: b.IPv6})
	}
	for _, p := range ep.Ports {
		r.Ports = append(r.Ports, namedPortRecord(p))
	}
	return r
}

func (r endpointRecord) api() api.Endpoint {
	ep := api.Endpoint{ContainerID: r.ContainerID, IfName: r.IfName, Host: r.Host, IPv4: r.IPv4, IPv6: r.IPv6,
		Labels: r.Labels, Netns: r.Netns, Created: r.Created}
	for _, b := range r.PortBlocks {
		ep.PortBlocks = append(ep.PortBlocks, api.PortBlock{Start: b.Start, Size: b.Size, IPv6: b.IPv6})
	}
	for _, p := range r.Ports {
		ep.Ports = append(ep.Ports, api.NamedPort(p))
	}
	return ep
}

type listenerRecord struct {
	VIP         netip.Addr `json:"vip"`
	Port        uint16     `json:"port"`
	Host        string     `json:"host"`
	HostIP      netip.Addr `json:"hostIP"`
	HostPort    uint16     `json:"hostPort"`
	ContainerID string     `json:"containerID"`
	IfName      string     `json:"ifName"`
}

func listenerRecordOf(l api.Listener) listenerRecord {
	return listenerRecord{VIP: l.VIP, Port: l.Port, Host: l.Host, HostIP: l.HostIP, HostPort: l.HostPort,
		ContainerID: l.ContainerID, IfName: l.IfName}
}

func (r listenerRecord) api() api.Listener {
	return api.Listener{VIP: r.VIP, Port: r.Port, Host: r.Host, HostIP: r.HostIP, HostPort: r.HostPort,
		ContainerID: r.ContainerID, IfName: r.IfName}
}

// The records' encodings.

func encodeHost(h api.Host) ([]byte, error)          { return json.Marshal(hostRecordOf(h)) }
func encodeEndpoint(ep api.Endpoint) ([]byte, error) { return json.Marshal(endpointRecordOf(ep)) }
func encodeListener(l api.Listener) ([]byte, error)  { return json.Marshal(listenerRecordOf(l)) }

func decodeHost(b []byte) (api.Host, error) {
	var r hostRecord
	err := json.Unmarshal(b, &r)
	return r.api(), err
}

func decodeEndpoint(b []byte) (api.Endpoint, error) {
	var r endpointRecord
	err := json.Unmarshal(b, &r)
	return compact(r.api()), err
}

func decodeListener(b []byte) (api.Listener, error) {
	var r listenerRecord
	err := json.Unmarshal(b, &r)
	return r.api(), err
}

func decodeFastPath(b []byte) (FastPath, error) {
	var f FastPath
	err := json.Unmarshal(b, &f)
	return f, err
}
