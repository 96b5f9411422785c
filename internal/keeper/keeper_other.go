//go:build !linux

package keeper

import (
	"context"
	"log/slog"
)

// MaxJournalSlots bounds the slots of a journal.
const MaxJournalSlots = 1 << 17

// Serve returns ErrNotSupported.
func Serve(ctx context.Context, socketPath string, log *slog.Logger) error { return ErrNotSupported }

// Client is a connection to a keeper; it cannot exist here.
type Client struct{}

// Dial returns ErrNotSupported.
func Dial(socketPath string) (*Client, error) { return nil, ErrNotSupported }

// Start returns ErrNotSupported.
func Start(socketPath string, cmd []string) (*Client, error) { return nil, ErrNotSupported }

// PID returns 0.
func (c *Client) PID() int { return 0 }

// Close does nothing.
func (c *Client) Close() error { return nil }

// Put returns ErrNotSupported.
func (c *Client) Put(key string, meta []byte, fd int) error { return ErrNotSupported }

// Ping returns ErrNotSupported.
func (c *Client) Ping() error { return ErrNotSupported }

// Drop returns ErrNotSupported.
func (c *Client) Drop(key string) error { return ErrNotSupported }

// Fetch returns ErrNotSupported.
func (c *Client) Fetch() ([]Held, error) { return nil, ErrNotSupported }

// Journal is a journal of notifications; it cannot exist here.
type Journal struct{}

// OpenJournal returns ErrNotSupported.
func OpenJournal(path string, slots int) (*Journal, []Entry, error) { return nil, nil, ErrNotSupported }

// Record returns ok=false.
func (j *Journal) Record(e Entry) (slot int, ok bool) { return -1, false }

// Done does nothing.
func (j *Journal) Done(slot int) {}

// ClearAll does nothing.
func (j *Journal) ClearAll() {}

// InUse returns 0.
func (j *Journal) InUse() int { return 0 }

// Slots returns 0.
func (j *Journal) Slots() int { return 0 }

// Close does nothing.
func (j *Journal) Close() error { return nil }
