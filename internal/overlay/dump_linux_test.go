package overlay

import (
	"context"
	"errors"
	"testing"

	"github.com/vishvananda/netlink"
)

func TestDumpRetriesInterrupted(t *testing.T) {
	tests := []struct {
		name        string
		interrupted int // how many times the dump is interrupted first
		other       error
		wantErr     error
		wantCalls   int
	}{
		{name: "clean", wantCalls: 1},
		{name: "interrupted twice", interrupted: 2, wantCalls: 3},
		{name: "always interrupted", interrupted: 100, wantErr: netlink.ErrDumpInterrupted, wantCalls: dumpTries},
		{name: "other error is not retried", other: errors.New("EPERM"), wantCalls: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls := 0
			res, err := dump(t.Context(), "things", func() ([]int, error) {
				calls++
				switch {
				case tt.other != nil:
					return nil, tt.other
				case calls <= tt.interrupted:
					return []int{-1}, netlink.ErrDumpInterrupted // partial, inconsistent
				}
				return []int{1, 2}, nil
			})
			if calls != tt.wantCalls {
				t.Errorf("%d calls, want %d", calls, tt.wantCalls)
			}
			switch {
			case tt.other != nil:
				if !errors.Is(err, tt.other) {
					t.Errorf("err = %v, want %v", err, tt.other)
				}
			case tt.wantErr != nil:
				if !errors.Is(err, tt.wantErr) || res != nil {
					t.Errorf("got %v, %v; want nil, %v", res, err, tt.wantErr)
				}
			default:
				if err != nil || len(res) != 2 {
					t.Errorf("got %v, %v", res, err)
				}
			}
		})
	}

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := dump(ctx, "things", func() ([]int, error) { return nil, netlink.ErrDumpInterrupted })
	if !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: err = %v", err)
	}
}
