//go:build !(linux && (amd64 || arm64))

package bpf

import (
	"net/netip"
	"time"
)

// Programs is never loaded on this platform.
type Programs struct{}

// Load returns ErrNotSupported.
func Load(Config) (*Programs, error) { return nil, ErrNotSupported }

// Unpin returns ErrNotSupported.
func Unpin(string) error { return ErrNotSupported }

// Probe finds nothing.
func Probe() (Features, error) { return Features{}, nil }

// SetSocket returns ErrNotSupported.
func (*Programs) SetSocket(int, netip.AddrPort, netip.AddrPort) error { return ErrNotSupported }

// DeleteSocket returns ErrNotSupported.
func (*Programs) DeleteSocket(int) error { return ErrNotSupported }

// PutPortBlock returns ErrNotSupported.
func (*Programs) PutPortBlock(netip.Addr, uint16, netip.Addr) error { return ErrNotSupported }

// DeletePortBlock returns ErrNotSupported.
func (*Programs) DeletePortBlock(netip.Addr, uint16) error { return ErrNotSupported }

// PutListener returns ErrNotSupported.
func (*Programs) PutListener(netip.Addr, uint16, netip.AddrPort) error { return ErrNotSupported }

// DeleteListener returns ErrNotSupported.
func (*Programs) DeleteListener(netip.Addr, uint16) error { return ErrNotSupported }

// PortBlocks returns ErrNotSupported.
func (*Programs) PortBlocks() ([]PortBlock, error) { return nil, ErrNotSupported }

// Listeners returns ErrNotSupported.
func (*Programs) Listeners() ([]Listener, error) { return nil, ErrNotSupported }

// Close does nothing.
func (*Programs) Close() error { return nil }

// ArmConn returns ErrNotSupported.
func (*Programs) ArmConn(int, Conn) error { return ErrNotSupported }

// ConnState returns ErrNotSupported.
func (*Programs) ConnState(int) (ConnState, error) { return ConnNone, ErrNotSupported }

// PortsInUse finds nothing.
func (*Programs) PortsInUse(uint16) uint32 { return 0 }

// ConnKey: see the Linux implementation.
type ConnKey struct{ Local, Remote netip.AddrPort }

// ConnRecord is a client host socket's permit record (Linux only).
type ConnRecord struct {
	Since time.Time
	Peer  netip.AddrPort
}

// Conns returns ErrNotSupported.
func (*Programs) Conns() (map[ConnKey]ConnRecord, error) { return nil, ErrNotSupported }

// EnsureListener returns ErrNotSupported.
func (*Programs) EnsureListener(netip.Addr, uint16, netip.AddrPort) error { return ErrNotSupported }
