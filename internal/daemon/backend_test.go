package daemon

import (
	"errors"
	"fmt"
	"testing"

	"github.com/slimnet/slim/internal/api"
	"github.com/slimnet/slim/internal/store"
)

func TestAPIError(t *testing.T) {
	other := errors.New("etcdserver: request timed out")
	for _, tc := range []struct {
		in   error
		want error // what the API error must be; nil: passed through unchanged
	}{
		{fmt.Errorf("no free address in 10.0.0.0/28: %w", store.ErrExhausted), api.ErrExhausted},
		{store.ErrNotFound, api.ErrNotFound},
		{fmt.Errorf("%w: endPort below port", store.ErrInvalid), api.ErrInvalid},
		{other, nil},
	} {
		got := apiError(tc.in)
		if !errors.Is(got, tc.in) {
			t.Errorf("apiError(%v) = %v: lost the cause", tc.in, got)
		}
		if tc.want == nil {
			if got != tc.in {
				t.Errorf("apiError(%v) = %v: want it unchanged", tc.in, got)
			}
			continue
		}
		if !errors.Is(got, tc.want) {
			t.Errorf("apiError(%v) = %v: want %v", tc.in, got, tc.want)
		}
	}
}
