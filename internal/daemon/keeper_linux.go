package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/slimnet/slim/internal/broker"
	"github.com/slimnet/slim/internal/cgroupfs"
	"github.com/slimnet/slim/internal/keeper"
	"golang.org/x/sys/unix"
)

// journalSlots bounds notifications in flight at once; beyond it they are
// handled unjournaled (and a crash in that moment leaves them blocked).
const journalSlots = 4096

// journalWait bounds waiting for a predecessor that still holds the
// journal (a slimd still shutting down).
const journalWait = 30 * time.Second

// keeperLink is slimd's connection to its keeper process, re-established
// (and every fd handed over again) if the keeper dies.
type keeperLink struct {
	sock string
	cmd  []string
	// cgroup is the directory the keeper is moved to, "" to leave it in
	// slimd's.
	cgroup string
	log    *slog.Logger
	rekeep func() error

	mu sync.Mutex
	c  *keeper.Client
}

func (k *keeperLink) client() (*keeper.Client, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.c != nil {
		return k.c, nil
	}
	c, err := keeper.Start(k.sock, k.cmd)
	if err != nil {
		return nil, err
	}
	// A keeper found running is moved too: its starter may have had no
	// keeper cgroup. Moving is idempotent.
	if k.cgroup != "" {
		if err := placeKeeper(c.PID(), k.cgroup); err != nil {
			c.Close()
			return nil, err
		}
	}
	k.c = c
	return c, nil
}

// current returns the keeper connection if there is one, without starting
// a keeper (for read-only callers such as the check).
func (k *keeperLink) current() (*keeper.Client, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.c, k.c != nil
}

func (k *keeperLink) reset(c *keeper.Client) {
	k.mu.Lock()
	if k.c == c {
		k.c.Close()
		k.c = nil
	}
	k.mu.Unlock()
}

// do runs op on the keeper connection; a lost keeper drops the
// connection, so the next call (or watch) starts a new one.
func (k *keeperLink) do(op func(*keeper.Client) error) error {
	c, err := k.client()
	if err != nil {
		return err
	}
	err = op(c)
	if errors.Is(err, keeper.ErrNoKeeper) {
		k.reset(c)
	}
	return err
}

// Put implements broker.Keeper.
func (k *keeperLink) Put(key string, meta []byte, fd int) error {
	return k.do(func(c *keeper.Client) error { return c.Put(key, meta, fd) })
}

// Drop implements broker.Keeper.
func (k *keeperLink) Drop(key string) error {
	return k.do(func(c *keeper.Client) error { return c.Drop(key) })
}

// watch pings the keeper; if it died, it starts a new one and hands it
// every fd again.
func (k *keeperLink) watch(ctx context.Context) error {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		c, err := k.client()
		if err == nil {
			if err = c.Ping(); err == nil {
				continue
			}
			k.reset(c)
		}
		k.log.Warn("keeper lost, starting a new one", "err", err)
		if _, err := k.client(); err != nil {
			k.log.Warn("keeper restart failed", "err", err)
			continue
		}
		if err := k.rekeep(); err != nil {
			k.log.Warn("handing fds to the new keeper failed", "err", err)
		} else {
			k.log.Info("keeper restarted; fds handed over")
		}
	}
}

// openKeeper opens the journal (waiting for a predecessor that still holds
// it) and starts or joins the keeper process.
func (d *Daemon) openKeeper(ctx context.Context) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	jpath := filepath.Join(d.cfg.DataDir, "journal")
	deadline := time.Now().Add(journalWait)
	for {
		d.journal, d.leftovers, err = keeper.OpenJournal(jpath, journalSlots)
		if !errors.Is(err, keeper.ErrJournalBusy) || time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	sock := filepath.Join(d.cfg.DataDir, "keeper.sock")
	d.keeper = &keeperLink{sock: sock, cmd: []string{exe, "keeper", "--socket", sock}, log: d.log.With("component", "keeper")}
	if d.cfg.KeeperCgroup != "" {
		mount, err := cgroupfs.Mount()
		if err != nil {
			return fmt.Errorf("keeper cgroup: %w", err)
		}
		d.keeper.cgroup = filepath.Join(mount, d.cfg.KeeperCgroup)
	}
	if _, err := d.keeper.client(); err != nil {
		return fmt.Errorf("keeper: %w", err)
	}
	return nil
}

// placeKeeper moves the keeper (pid, 0 if unknown) into cgroup dir,
// made if missing. The keeper holds no sockets and enables no
// controllers there: the cgroup only keeps it out of slimd's.
func placeKeeper(pid int, dir string) error {
	if pid <= 0 {
		return fmt.Errorf("keeper cgroup: the keeper's pid is unknown")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("keeper cgroup: %w", err)
	}
	if err := cgroupfs.Move(pid, dir); err != nil {
		return fmt.Errorf("keeper cgroup: %w", err)
	}
	return nil
}

// resume takes back what a predecessor left: every notification fd the
// keeper holds, and the notifications it had received but not answered.
func (d *Daemon) resume(ctx context.Context) error {
	c, err := d.keeper.client()
	if err != nil {
		return err
	}
	held, err := c.Fetch()
	if err != nil {
		return fmt.Errorf("fetch from keeper: %w", err)
	}
	bySession := map[uint64][]keeper.Entry{}
	for _, e := range d.leftovers {
		bySession[e.Session] = append(bySession[e.Session], e)
	}
	for _, h := range held {
		var m broker.SessionMeta
		if err := json.Unmarshal(h.Meta, &m); err != nil || m.Session == 0 {
			d.log.Warn("keeper holds an fd without session data; dropping it", "key", h.Key)
			c.Drop(h.Key)
			unix.Close(h.Fd)
			continue
		}
		d.broker.Resume(ctx, m, h.Fd, bySession[m.Session])
	}
	if len(held) > 0 || len(d.leftovers) > 0 {
		d.log.Info("resumed from keeper", "sessions", len(held), "unanswered", len(d.leftovers))
	}
	d.journal.ClearAll()
	d.leftovers = nil
	return nil
}
