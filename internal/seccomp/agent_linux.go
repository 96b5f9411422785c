package seccomp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/slimnet/slim/internal/unixsock"
	"golang.org/x/sys/unix"
)

const (
	// MaxAgentMessage bounds one agent message. The state carries the
	// container's annotations, which Kubernetes caps at 256 KiB in total;
	// runc's example agent reads at most 4 KiB.
	MaxAgentMessage = 1 << 20
	// MaxAgentFDs bounds the fds of one message: runc and crun send one.
	MaxAgentFDs = 8
	// AgentTimeout bounds one agent connection, on both sides: runc sends
	// right after connecting, so 5 s is generous on a loaded host and still
	// frees a slot taken by a silent client soon.
	AgentTimeout = 5 * time.Second
	// maxAgentConns bounds the connections served at once; more wait in the
	// listen backlog.
	maxAgentConns = 32
	// agentAck is the byte the agent writes after handling a message.
	agentAck = 'K'
	// notifyLink is what /proc/self/fd/N reads for a notification fd
	// (anon_inode_getfile("seccomp notify") in kernel/seccomp.c).
	notifyLink = "anon_inode:seccomp notify"
)

// AgentHandler receives one container's state and fds, named as in
// st.Fds ("seccompFd" is always there and is a notification fd). It owns the
// fds from then on. It runs on the connection's goroutine: a slow handler
// delays only that client.
type AgentHandler func(st specs.ContainerProcessState, fds map[string]int)

// AgentConfig configures an Agent.
type AgentConfig struct {
	Path   string // the socket path (listenerPath in the OCI spec)
	Log    *slog.Logger
	Handle AgentHandler
	// Timeout bounds one connection; 0 means AgentTimeout.
	Timeout time.Duration
}

// Agent serves the seccomp agent socket.
type Agent struct {
	cfg AgentConfig
	ln  *unixsock.Listener
}

// NewAgent binds the socket at cfg.Path with mode 0600, replacing a stale
// socket there; a path served by a live process is ErrAgentInUse, and a path
// that is not a socket is left alone (error). The socket is bound in a
// private directory, set to 0600 and renamed into place, so that it is
// never reachable with looser permissions. Serve it with Run; Close it if
// Run is never called.
func NewAgent(cfg AgentConfig) (*Agent, error) {
	if cfg.Path == "" || cfg.Handle == nil {
		return nil, errors.New("agent: path and handler are required")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = AgentTimeout
	}
	ln, err := unixsock.Listen("unix", cfg.Path)
	if errors.Is(err, unixsock.ErrInUse) {
		return nil, fmt.Errorf("agent socket %s: %w", cfg.Path, ErrAgentInUse)
	}
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	return &Agent{cfg: cfg, ln: ln}, nil
}

// Close stops accepting and removes the socket if it is still ours.
func (a *Agent) Close() error { return a.ln.Close() }

// Run accepts connections until ctx ends, then closes the socket, waits for
// the connections being served and returns nil. Malformed messages are
// logged and their fds closed.
func (a *Agent) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { a.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer a.Close()
	slots := make(chan struct{}, maxAgentConns)
	for {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		c, err := a.ln.AcceptUnix()
		if err != nil {
			<-slots
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			// EMFILE and friends: back off briefly rather than spin.
			a.cfg.Log.Warn("seccomp agent accept", "err", err)
			select {
			case <-time.After(100 * time.Millisecond):
			case <-ctx.Done():
				return nil
			}
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			a.serve(c)
		}()
	}
}

// ServeAgent serves the agent socket at path until ctx ends, calling handle
// for each well-formed message (see NewAgent and Run).
func ServeAgent(ctx context.Context, path string, log *slog.Logger, handle func(st specs.ContainerProcessState, fds map[string]int)) error {
	a, err := NewAgent(AgentConfig{Path: path, Log: log, Handle: handle})
	if err != nil {
		return err
	}
	return a.Run(ctx)
}

func (a *Agent) serve(c *net.UnixConn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(a.cfg.Timeout))
	log := a.cfg.Log
	if cred, err := peerCred(c); err == nil {
		log = log.With("peer_pid", cred.Pid, "peer_uid", cred.Uid)
	}
	st, fds, err := readAgentMessage(c)
	if err != nil {
		log.Warn("seccomp agent: message rejected", "err", err)
		return
	}
	log.Debug("seccomp agent: message", "container", st.State.ID, "pid", st.State.Pid, "fds", len(fds))
	a.cfg.Handle(st, fds)
	c.Write([]byte{agentAck}) // runc does not read it; errors do not matter
}

func peerCred(c *net.UnixConn) (*unix.Ucred, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var cerr error
	err = rc.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	})
	if err != nil {
		return nil, err
	}
	return cred, cerr
}

// readAgentMessage reads one message: bytes until they form one JSON value
// (runc does not close its end), fds from every SCM_RIGHTS on the way. On
// error every received fd is closed.
func readAgentMessage(c *net.UnixConn) (specs.ContainerProcessState, map[string]int, error) {
	var (
		data  []byte
		fds   []int
		chunk = make([]byte, 64<<10)
		oob   = make([]byte, unix.CmsgSpace(4*MaxAgentFDs))
	)
	fail := func(err error) (specs.ContainerProcessState, map[string]int, error) {
		closeAll(fds)
		return specs.ContainerProcessState{}, nil, err
	}
	for {
		n, oobn, flags, _, err := c.ReadMsgUnix(chunk, oob)
		n, oobn = max(n, 0), max(oobn, 0) // -1 on errors
		if oobn > 0 {
			got, perr := unixsock.ParseRights(oob[:oobn])
			fds = append(fds, got...)
			if perr != nil {
				return fail(perr)
			}
		}
		if flags&unix.MSG_CTRUNC != 0 {
			// The kernel dropped the fds that did not fit.
			return fail(fmt.Errorf("more than %d fds", MaxAgentFDs))
		}
		if len(fds) > MaxAgentFDs {
			return fail(fmt.Errorf("%d fds, more than %d", len(fds), MaxAgentFDs))
		}
		data = append(data, chunk[:n]...)
		if len(data) > MaxAgentMessage {
			return fail(fmt.Errorf("message longer than %d bytes", MaxAgentMessage))
		}
		if n > 0 {
			complete, err := jsonComplete(data)
			if err != nil {
				return fail(err)
			}
			if complete {
				break
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = fmt.Errorf("incomplete message (%d bytes): %w", len(data), io.ErrUnexpectedEOF)
			}
			return fail(err)
		}
		if n == 0 && oobn == 0 {
			return fail(fmt.Errorf("incomplete message (%d bytes): %w", len(data), io.ErrUnexpectedEOF))
		}
	}
	st, names, err := parseAgentMessage(data, len(fds))
	if err != nil {
		return fail(err)
	}
	if err := checkNotifyFD(fds[names[specs.SeccompFdName]]); err != nil {
		return fail(err)
	}
	m := make(map[string]int, len(names))
	for name, i := range names {
		m[name] = fds[i]
	}
	return st, m, nil
}

// jsonComplete reports whether data holds one whole JSON value, and fails
// on a syntax error, so that garbage is rejected at once instead of waiting
// out the deadline for more.
func jsonComplete(data []byte) (bool, error) {
	var v json.RawMessage
	err := json.NewDecoder(bytes.NewReader(data)).Decode(&v)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return false, nil // only blanks so far, or a value cut short
	}
	return false, fmt.Errorf("decode state: %w", err)
}

// parseAgentMessage decodes the state and maps each fd name to its index
// among the nfds received fds. It is pure (fuzzed).
func parseAgentMessage(data []byte, nfds int) (specs.ContainerProcessState, map[string]int, error) {
	var st specs.ContainerProcessState
	if err := json.Unmarshal(data, &st); err != nil {
		return st, nil, fmt.Errorf("decode state: %w", err)
	}
	if len(st.Fds) != nfds {
		return st, nil, fmt.Errorf("state names %d fds, message carries %d", len(st.Fds), nfds)
	}
	names := make(map[string]int, len(st.Fds))
	for i, name := range st.Fds {
		if _, dup := names[name]; dup {
			return st, nil, fmt.Errorf("fd name %q twice", name)
		}
		names[name] = i
	}
	if _, ok := names[specs.SeccompFdName]; !ok {
		return st, nil, fmt.Errorf("no %q fd", specs.SeccompFdName)
	}
	return st, names, nil
}

func checkNotifyFD(fd int) error {
	link, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil {
		return fmt.Errorf("seccomp fd: %w", err)
	}
	if link != notifyLink {
		return fmt.Errorf("seccomp fd is %q, not a notification fd", link)
	}
	return nil
}

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// AgentConn is a client connection to the agent, made before the filter is
// installed so that the connect itself is not trapped.
type AgentConn struct {
	c *net.UnixConn
}

// DialAgent connects to the agent at path. A launcher calls it before
// Install: after Install its own connect would trap.
func DialAgent(path string) (*AgentConn, error) {
	c, err := net.DialTimeout("unix", path, AgentTimeout)
	if err != nil {
		return nil, fmt.Errorf("dial seccomp agent: %w", err)
	}
	return &AgentConn{c: c.(*net.UnixConn)}, nil
}

// Send sends st with fd as "seccompFd" (st.Fds is overwritten) in one
// sendmsg, the way runc does, then waits up to AgentTimeout for the agent's
// acknowledgement and closes the connection. The caller keeps its fd and
// should close it before exec (it is close-on-exec anyway): a target that
// holds its own notification fd could answer its own traps. Send does no
// connect, so it is safe on a filtered thread.
func (ac *AgentConn) Send(st specs.ContainerProcessState, fd int) error {
	defer ac.c.Close()
	st.Fds = []string{specs.SeccompFdName}
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	if len(b) > MaxAgentMessage {
		return fmt.Errorf("state is %d bytes, more than %d", len(b), MaxAgentMessage)
	}
	ac.c.SetDeadline(time.Now().Add(AgentTimeout))
	n, _, err := ac.c.WriteMsgUnix(b, unix.UnixRights(fd), nil)
	if err != nil {
		return fmt.Errorf("send to seccomp agent: %w", err)
	}
	if n != len(b) {
		return fmt.Errorf("send to seccomp agent: wrote %d of %d bytes", n, len(b))
	}
	var ack [1]byte
	if _, err := io.ReadFull(ac.c, ack[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, unix.ECONNRESET) {
			return ErrAgentRejected
		}
		return fmt.Errorf("wait for seccomp agent: %w", err)
	}
	if ack[0] != agentAck {
		return fmt.Errorf("seccomp agent answered %q: %w", ack[0], ErrAgentRejected)
	}
	return nil
}

// Close drops the connection without sending.
func (ac *AgentConn) Close() error { return ac.c.Close() }

// SendToAgent connects to the agent at path and sends st with fd as
// "seccompFd" (see AgentConn.Send). It connects: call it before the filter
// is installed on this thread, or from another thread, or use DialAgent
// before Install and AgentConn.Send after.
func SendToAgent(path string, st specs.ContainerProcessState, fd int) error {
	ac, err := DialAgent(path)
	if err != nil {
		return err
	}
	return ac.Send(st, fd)
}
