//go:build !linux

package cpbench

import (
	"context"

	"github.com/slimnet/slim/internal/lab"
)

// RunOnLab needs Linux.
func RunOnLab(context.Context, lab.Config, Config, int) (LabResult, error) {
	return LabResult{}, lab.ErrNotSupported
}
