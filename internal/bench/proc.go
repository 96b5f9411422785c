package bench

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/slimnet/slim/internal/lab"
)

// proc is a server the benchmark runs in a lab target, in the foreground
// of a goroutine (lab.Exec): cancelling it kills the process, and
// lab.Down finds it in the lab's cgroups whatever happens to us.
type proc struct {
	name   string
	cancel context.CancelFunc
	done   chan struct{}
	stderr *tail
	code   int
	err    error
	// interrupt, if set, asks the server to stop by itself (a server of
	// several processes, that would leave children when killed).
	interrupt func() error
}

// start runs command in target until it exits or is stopped. Cancelling
// ctx does not stop it: stop does (teardown stops every server), so that a
// server that must be asked to stop (interrupt) is asked also on Ctrl-C.
func (r *runner) start(ctx context.Context, target string, command ...string) *proc {
	pctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	p := &proc{name: target + ": " + strings.Join(command, " "), cancel: cancel, done: make(chan struct{}), stderr: &tail{max: 2048}}
	go func() {
		defer close(p.done)
		p.code, p.err = lab.Exec(pctx, r.lab, target, lab.ExecSpec{Command: command, Stderr: p.stderr})
	}()
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop stops the process and waits for it: interrupt first, if set,
// giving it serverExitWait; then it is killed.
func (p *proc) stop() {
	if p.interrupt != nil && !p.exited() {
		if p.interrupt() == nil {
			t := time.NewTimer(serverExitWait)
			select {
			case <-p.done:
			case <-t.C:
			}
			t.Stop()
		}
	}
	p.cancel()
	<-p.done
}

// finish waits up to d for the process to exit by itself, then stops it.
func (p *proc) finish(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
	}
	p.stop()
}

// failure describes how an exited process ended.
func (p *proc) failure() string {
	msg := strings.TrimSpace(p.stderr.String())
	switch {
	case p.err != nil:
		return fmt.Sprintf("%s: %v %s", p.name, p.err, msg)
	default:
		return fmt.Sprintf("%s: exited with status %d: %s", p.name, p.code, msg)
	}
}

// tail keeps the last max bytes written to it.
type tail struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}
