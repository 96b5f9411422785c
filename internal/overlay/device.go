package overlay

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
)

const (
	// DefaultDeviceName is the vxlan device's name; like every object the
	// overlay owns, it carries the project's name.
	DefaultDeviceName = "slim-vxlan"
	// DefaultVNI is the VXLAN network identifier.
	DefaultVNI = 1
	// DefaultPort is the IANA VXLAN port.
	DefaultPort = 4789
	// maxVNI: the VNI is a 24-bit field.
	maxVNI = 1<<24 - 1
	// maxNameLen is IFNAMSIZ minus the terminating NUL.
	maxNameLen = 15
)

// DeviceConfig configures the local vxlan device.
type DeviceConfig struct {
	Name          string           // default DefaultDeviceName
	VNI           int              // default DefaultVNI
	Port          int              // default DefaultPort
	UnderlayIface string           // underlay link name; if empty, the link that holds UnderlayIP
	UnderlayIP    netip.Addr       // local VTEP address (IPv4)
	MTU           int              // 0 = underlay MTU - 50
	MAC           net.HardwareAddr // nil = keep the existing device's MAC, or derive one from UnderlayIP for a new device
	Subnet4       netip.Prefix     // local pod subnet: Subnet4.Addr() goes on the device as /32
	Subnet6       netip.Prefix     // optional: Subnet6.Addr() as /128 (nodad)
}

// Device is the local vxlan device after EnsureDevice.
type Device struct {
	Name  string
	Index int
	MAC   net.HardwareAddr
	MTU   int

	VNI           int
	Port          int
	UnderlayIndex int          // ifindex of the underlay link
	UnderlayIP    netip.Addr   // local VTEP address
	Subnet4       netip.Prefix // local pod subnet (masked)
	Subnet6       netip.Prefix // local IPv6 pod subnet (masked), if any

	// cfg is what the device was made from, so that it can be made again
	// (the dataplane re-creates a device deleted under it).
	cfg DeviceConfig
}

// Peer returns the Peer that other hosts program for this device.
func (d *Device) Peer(host string) Peer {
	return Peer{Host: host, UnderlayIP: d.UnderlayIP, VTEPMAC: d.MAC, Subnet4: d.Subnet4, Subnet6: d.Subnet6}
}

// withDefaults fills in the defaults and checks the config.
func (c DeviceConfig) withDefaults() (DeviceConfig, error) {
	if c.Name == "" {
		c.Name = DefaultDeviceName
	}
	if c.VNI == 0 {
		c.VNI = DefaultVNI
	}
	if c.Port == 0 {
		c.Port = DefaultPort
	}
	c.UnderlayIP = c.UnderlayIP.Unmap()
	var errs []error
	if len(c.Name) > maxNameLen {
		errs = append(errs, fmt.Errorf("device name %q is longer than %d bytes", c.Name, maxNameLen))
	}
	if c.VNI < 0 || c.VNI > maxVNI {
		errs = append(errs, fmt.Errorf("VNI %d out of range 1-%d", c.VNI, maxVNI))
	}
	if c.Port < 0 || c.Port > 65535 {
		errs = append(errs, fmt.Errorf("port %d out of range", c.Port))
	}
	if !c.UnderlayIP.Is4() {
		errs = append(errs, fmt.Errorf("underlay address %v is not IPv4", c.UnderlayIP))
	}
	if c.MTU < 0 {
		errs = append(errs, fmt.Errorf("negative MTU %d", c.MTU))
	}
	if c.MAC != nil && (len(c.MAC) != 6 || c.MAC[0]&1 != 0) {
		errs = append(errs, fmt.Errorf("MAC %q is not a unicast Ethernet address", c.MAC.String()))
	}
	if !c.Subnet4.IsValid() || !c.Subnet4.Addr().Is4() {
		errs = append(errs, fmt.Errorf("subnet %v is not an IPv4 prefix", c.Subnet4))
	} else {
		c.Subnet4 = c.Subnet4.Masked()
	}
	if c.Subnet6.IsValid() {
		if !c.Subnet6.Addr().Is6() || c.Subnet6.Addr().Is4In6() {
			errs = append(errs, fmt.Errorf("subnet %v is not an IPv6 prefix", c.Subnet6))
		}
		c.Subnet6 = c.Subnet6.Masked()
	}
	if len(errs) > 0 {
		return c, fmt.Errorf("overlay device config: %w", errors.Join(errs...))
	}
	return c, nil
}

// deriveMAC returns a stable MAC for the VTEP at underlay: locally
// administered unicast (02), 'S' (0x53), then the four bytes of the IPv4
// address, which are unique on the underlay. A device recreated after a crash
// gets the same MAC, so the entries other hosts hold stay right.
func deriveMAC(underlay netip.Addr) net.HardwareAddr {
	b := underlay.Unmap().As4()
	return net.HardwareAddr{0x02, 0x53, b[0], b[1], b[2], b[3]}
}
