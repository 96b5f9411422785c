package keeper

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const (
	// dialTimeout bounds Dial, connect and hello: a live keeper accepts
	// from its backlog and answers hello at once; 2 s leaves room for a
	// loaded host.
	dialTimeout = 2 * time.Second
	// opTimeout bounds one request and each message of its reply. The
	// keeper does no blocking work, so only a hung keeper hits it.
	opTimeout = 10 * time.Second
	// startTimeout bounds Start's wait for a new keeper to answer: a
	// re-exec of the slimd binary, Go runtime start-up and bind, on a busy
	// 2-vCPU host (under -race in tests).
	startTimeout = 15 * time.Second
	// startPoll is how often Start tries to dial the new keeper.
	startPoll = 10 * time.Millisecond
	// raceGrace is how long Start keeps dialing after its keeper exited,
	// in case it lost a race to another keeper that is still binding.
	raceGrace = 2 * time.Second
)

// Client is a connection to a keeper. Its methods are safe for concurrent
// use; requests take turns.
type Client struct {
	mu     sync.Mutex
	cn     *conn
	pid    int
	broken error // set once the connection is unusable (and closed)
	closed bool  // Close was called
}

// Dial connects to a running keeper at socketPath. If none answers it
// returns an error wrapping ErrNoKeeper.
func Dial(socketPath string) (*Client, error) {
	nc, err := net.DialTimeout("unixpacket", socketPath, dialTimeout)
	if err != nil {
		return nil, fmt.Errorf("dial keeper %s: %w: %w", socketPath, ErrNoKeeper, err)
	}
	c := &Client{cn: newConn(nc.(*net.UnixConn))}
	done := false
	defer func() {
		if !done {
			nc.Close()
		}
	}()
	if cred, err := peerCred(c.cn.c); err == nil {
		c.pid = int(cred.Pid)
	}
	deadline := time.Now().Add(dialTimeout)
	if err := c.cn.send(message{op: opHello}, -1, deadline); err != nil {
		return nil, fmt.Errorf("keeper %s hello: %w: %w", socketPath, ErrNoKeeper, err)
	}
	m, fds, err := c.cn.recv(deadline)
	if err != nil {
		return nil, fmt.Errorf("keeper %s hello: %w: %w", socketPath, ErrNoKeeper, err)
	}
	closeAll(fds)
	if m.op != opOK || len(fds) != 0 {
		return nil, fmt.Errorf("keeper %s hello answered %q: %w", socketPath, m.op, ErrNoKeeper)
	}
	done = true
	return c, nil
}

// Start returns a client of the keeper at socketPath, starting one first
// if none answers: it runs cmd (for example os.Args[0], "keeper",
// "--socket", socketPath) in a new session with stdio on /dev/null, and
// waits until the keeper answers or exits or startTimeout passes (then it
// kills the process it started). A keeper that exits because another one
// won a race to the path is fine: Start dials the winner. A goroutine reaps
// the started process when it exits.
func Start(socketPath string, cmd []string) (*Client, error) {
	if c, err := Dial(socketPath); err == nil {
		return c, nil
	}
	if len(cmd) == 0 {
		return nil, fmt.Errorf("start keeper: empty command: %w", ErrInvalid)
	}
	p := exec.Command(cmd[0], cmd[1:]...)
	// Its own session: signals to slimd's process group or terminal do
	// not reach it. No Pdeathsig: it must outlive us.
	p.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := p.Start(); err != nil {
		return nil, fmt.Errorf("start keeper: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- p.Wait() }() // ends when the keeper does

	deadline := time.NewTimer(startTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(startPoll)
	defer tick.Stop()
	var lastErr error
	for {
		c, err := Dial(socketPath)
		if err == nil {
			return c, nil
		}
		lastErr = err
		select {
		case werr := <-exited:
			// Perhaps another keeper won the race to the path; it took
			// the lock before ours tried and binds within milliseconds.
			if c, err := dialFor(socketPath, raceGrace); err == nil {
				return c, nil
			}
			return nil, fmt.Errorf("start keeper: exited (%v) before answering: %w", werr, lastErr)
		case <-deadline.C:
			p.Process.Kill()
			return nil, fmt.Errorf("start keeper: no answer after %v: %w", startTimeout, lastErr)
		case <-tick.C:
		}
	}
}

// dialFor dials until it works or d has passed.
func dialFor(socketPath string, d time.Duration) (*Client, error) {
	deadline := time.Now().Add(d)
	for {
		c, err := Dial(socketPath)
		if err == nil || time.Now().After(deadline) {
			return c, err
		}
		time.Sleep(startPoll)
	}
}

// PID returns the keeper's process id (SO_PEERCRED), or 0 if unknown.
func (c *Client) PID() int { return c.pid }

// Close closes the connection. The keeper keeps every fd.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	if c.broken != nil {
		return nil // fail closed it already
	}
	c.broken = net.ErrClosed
	return c.cn.c.Close()
}

// Put hands the keeper a dup of fd under key, replacing what it held under
// key. When Put returns nil the keeper holds it. The caller keeps fd.
func (c *Client) Put(key string, meta []byte, fd int) error {
	if err := checkKeyMeta(key, meta); err != nil {
		return err
	}
	if fd < 0 {
		return fmt.Errorf("fd %d: %w", fd, ErrInvalid)
	}
	return c.request(message{op: opPut, key: key, meta: meta}, fd)
}

// Ping checks that the keeper still answers on this connection; an error
// wrapping ErrNoKeeper means it is gone (Start another and Put again).
func (c *Client) Ping() error {
	return c.request(message{op: opHello}, -1)
}

// Drop tells the keeper to close the fd under key. An absent key is fine.
func (c *Client) Drop(key string) error {
	if err := checkKeyMeta(key, nil); err != nil {
		return err
	}
	return c.request(message{op: opDrop, key: key}, -1)
}

// request sends m and waits for ok.
func (c *Client) request(m message, fd int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.broken != nil {
		return c.fail(c.broken)
	}
	deadline := time.Now().Add(opTimeout)
	if err := c.cn.send(m, fd, deadline); err != nil {
		return c.fail(err)
	}
	r, fds, err := c.cn.recv(deadline)
	if err != nil {
		return c.fail(err)
	}
	if len(fds) != 0 {
		closeAll(fds)
		return c.fail(fmt.Errorf("%w: reply with %d fds", errProtocol, len(fds)))
	}
	switch r.op {
	case opOK:
		return nil
	case opError:
		return fmt.Errorf("keeper: %s: %w", r.meta, ErrRejected)
	default:
		return c.fail(fmt.Errorf("%w: reply %q to %q", errProtocol, r.op, m.op))
	}
}

// fail marks the connection unusable (a lost reply leaves request and
// reply out of step) and returns err, wrapping ErrNoKeeper. Called with
// c.mu held.
func (c *Client) fail(err error) error {
	if c.broken == nil {
		c.broken = err
		c.cn.c.Close()
	}
	if errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("keeper client closed: %w", err)
	}
	return fmt.Errorf("keeper connection: %w: %w", ErrNoKeeper, err)
}

// Fetch returns every fd the keeper holds, as dups the caller owns.
func (c *Client) Fetch() (_ []Held, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.broken != nil {
		return nil, c.fail(c.broken)
	}
	var held []Held
	done := false
	defer func() {
		if !done {
			for _, h := range held {
				unix.Close(h.Fd)
			}
		}
	}()
	if err := c.cn.send(message{op: opFetch}, -1, time.Now().Add(opTimeout)); err != nil {
		return nil, c.fail(err)
	}
	for {
		r, fds, err := c.cn.recv(time.Now().Add(opTimeout))
		if err != nil {
			return nil, c.fail(err)
		}
		switch {
		case r.op == opItem && len(fds) == 1 && r.key != "":
			held = append(held, Held{Key: r.key, Meta: append([]byte(nil), r.meta...), Fd: fds[0]})
		case r.op == opEnd && len(fds) == 0 && len(r.meta) == 4:
			if n := binary.LittleEndian.Uint32(r.meta); int(n) != len(held) {
				return nil, c.fail(fmt.Errorf("%w: fetch ended after %d of %d items", errProtocol, len(held), n))
			}
			done = true
			return held, nil
		case r.op == opError && len(fds) == 0:
			// The keeper gave up mid-way (it could not dup an fd); the
			// stream is still in step: nothing follows an error.
			return nil, fmt.Errorf("keeper: %s: %w", r.meta, ErrRejected)
		default:
			closeAll(fds)
			return nil, c.fail(fmt.Errorf("%w: fetch reply %q with %d fds", errProtocol, r.op, len(fds)))
		}
	}
}
