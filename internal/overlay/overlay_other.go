//go:build !linux

package overlay

import "context"

// EnsureDevice returns ErrNotSupported: the overlay needs Linux.
func EnsureDevice(cfg DeviceConfig) (*Device, error) { return nil, ErrNotSupported }

// NewDataplane returns a Dataplane whose methods return ErrNotSupported.
func NewDataplane(dev *Device) Dataplane { return unsupported{} }

type unsupported struct{}

func (unsupported) EnsurePeer(context.Context, Peer) error { return ErrNotSupported }
func (unsupported) RemovePeer(context.Context, Peer) error { return ErrNotSupported }
func (unsupported) Peers(context.Context) ([]Peer, error)  { return nil, ErrNotSupported }
