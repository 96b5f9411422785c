// Package testchild runs a test binary again as a child process, for
// tests that need a second process (a seccomp-supervised one, a keeper
// that outlives its parent), and reads the report lines the child writes
// on stdout. The child's TestMain picks its role from the environment the
// test passes.
package testchild

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// Child is a running child and the parent's view of its stdout.
type Child struct {
	Cmd    *exec.Cmd
	Stdin  io.WriteCloser
	Stderr *Buffer

	t       testing.TB
	timeout time.Duration
	lines   chan string
	stash   []string
	reaper  sync.Once
	done    chan struct{} // closed once the child is reaped
	err     error         // Wait's answer, set before done is closed
}

// Start runs os.Args[0] with -test.run=^$ (so only TestMain's role dispatch
// runs), env added to the environment and extra as fds 3 on. timeout
// bounds each wait for a line or an exit. At cleanup stdin is closed, the
// child is killed (SIGKILL, this pid only) and reaped, and its stderr is
// logged if the test failed.
func Start(t testing.TB, timeout time.Duration, env []string, extra ...*os.File) *Child {
	t.Helper()
	c := &Child{t: t, timeout: timeout, lines: make(chan string, 1024), Stderr: &Buffer{}, done: make(chan struct{})}
	c.Cmd = exec.Command(os.Args[0], "-test.run=^$")
	c.Cmd.Env = append(os.Environ(), env...)
	// Under -race the child would sleep 1 s at exit (tsan's default).
	c.Cmd.Env = append(c.Cmd.Env, "GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	c.Cmd.ExtraFiles = extra
	c.Cmd.Stderr = c.Stderr
	var err error
	if c.Stdin, err = c.Cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := c.Cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines)
	}()
	t.Cleanup(func() {
		c.Stdin.Close()
		c.Kill()
		if t.Failed() {
			t.Logf("child %d stderr:\n%s", c.Cmd.Process.Pid, c.Stderr.String())
		}
	})
	return c
}

// reap starts reaping the child. Until then an exited child stays a
// zombie, which some tests look at.
func (c *Child) reap() {
	c.reaper.Do(func() {
		go func() {
			c.err = c.Cmd.Wait()
			close(c.done)
		}()
	})
}

// Kill sends SIGKILL to the child, unless it has exited, and waits until it
// is reaped.
func (c *Child) Kill() {
	c.reap()
	select {
	case <-c.done:
		return
	default:
	}
	c.Cmd.Process.Kill()
	select {
	case <-c.done:
	case <-time.After(c.timeout):
		c.t.Errorf("child %d did not die", c.Cmd.Process.Pid)
	}
}

// Wait waits for the child to exit and returns how (exec.Cmd.Wait's
// error); a child still running after the timeout fails the test.
func (c *Child) Wait() error {
	c.t.Helper()
	c.reap()
	select {
	case <-c.done:
		return c.err
	case <-time.After(c.timeout):
		c.t.Fatalf("child %d still running after %v", c.Cmd.Process.Pid, c.timeout)
		return nil
	}
}

// Expect returns the next line starting with prefix; other lines are kept
// for later calls. A line starting with "error", the child's end or the
// timeout fails the test.
func (c *Child) Expect(prefix string) string {
	c.t.Helper()
	for i, l := range c.stash {
		if strings.HasPrefix(l, prefix) {
			c.stash = append(c.stash[:i], c.stash[i+1:]...)
			return l
		}
	}
	timer := time.NewTimer(c.timeout)
	defer timer.Stop()
	for {
		select {
		case l, ok := <-c.lines:
			if !ok {
				c.t.Fatalf("child ended before %q (stash %q); stderr:\n%s", prefix, c.stash, c.Stderr.String())
			}
			if strings.HasPrefix(l, "error") {
				c.t.Fatalf("child: %s", l)
			}
			if strings.HasPrefix(l, prefix) {
				return l
			}
			c.stash = append(c.stash, l)
		case <-timer.C:
			c.t.Fatalf("no %q from the child after %v (stash %q)", prefix, c.timeout, c.stash)
		}
	}
}

// TryExpect is Expect without waiting: the line if the child has
// written it already. The child's end before it fails the test.
func (c *Child) TryExpect(prefix string) (string, bool) {
	c.t.Helper()
	ended := false
drain:
	for {
		select {
		case l, ok := <-c.lines:
			if !ok {
				ended = true
				break drain
			}
			c.stash = append(c.stash, l)
		default:
			break drain
		}
	}
	for i, l := range c.stash {
		if strings.HasPrefix(l, prefix) {
			c.stash = append(c.stash[:i], c.stash[i+1:]...)
			return l, true
		}
	}
	if ended {
		c.t.Fatalf("child ended before %q (stash %q); stderr:\n%s", prefix, c.stash, c.Stderr.String())
	}
	return "", false
}

// Pending returns the lines the child has written so far and not yet
// expected, without waiting.
func (c *Child) Pending() []string {
	for {
		select {
		case l, ok := <-c.lines:
			if !ok {
				return c.stash
			}
			c.stash = append(c.stash, l)
		default:
			return c.stash
		}
	}
}

// Field returns the value of key=value in a report line.
func Field(line, key string) string {
	for _, f := range strings.Fields(line) {
		if k, v, ok := strings.Cut(f, "="); ok && k == key {
			return v
		}
	}
	return ""
}

// Buffer is a bytes.Buffer safe for the child's writes and the test's
// reads at once.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
