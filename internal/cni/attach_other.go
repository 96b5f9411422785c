//go:build !linux

package cni

import (
	"errors"
	"log/slog"

	"github.com/containernetworking/cni/pkg/types"
)

// ErrNotSupported: slim-cni attaches containers only on Linux.
var ErrNotSupported = errors.New("slim-cni: not supported on this platform")

var errNotVeth = errors.New("not a veth")

func checkNetns(string) error { return ErrNotSupported }

func setup(attachSpec, func(step) error) (attached, error) { return attached{}, ErrNotSupported }

func removeHostVeth(string) error { return ErrNotSupported }

func teardown(string, string, string, *slog.Logger) error { return ErrNotSupported }

func removeStaleHostVeths(map[string]bool) ([]string, error) { return nil, ErrNotSupported }

func verify(attachSpec, []*types.Route) error { return ErrNotSupported }
