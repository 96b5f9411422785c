package broker

import (
	"sync"

	"golang.org/x/sys/unix"
)

// poolSize is how many client host sockets of each kind wait ready-made:
// enough for a burst of connects between refills, few enough that the fds
// do not matter.
const poolSize = 32

// socketPool keeps client host sockets made ahead of need, by family and
// by O_NONBLOCK (the flag belongs to the file that ADDFD installs, so a
// socket must be made the way the application made its own). Nothing else
// is prepared: the connect program on slimd's cgroup sets SO_REUSEADDR and
// binds. Sockets are made in slimd's own cgroup and network namespace,
// like every host socket. The handlers refill it after they answered, on
// their own thread: a refilling goroutine would cost a cross-thread
// wake-up per connection.
type socketPool struct {
	mu     sync.Mutex
	ready  [4][]int // by poolIndex
	closed bool
}

func newSocketPool() *socketPool { return &socketPool{} }

// poolKinds are the kinds of pooled socket, in poolIndex order.
var poolKinds = [4]struct {
	family   int
	nonblock bool
}{{unix.AF_INET, false}, {unix.AF_INET, true}, {unix.AF_INET6, false}, {unix.AF_INET6, true}}

func poolIndex(family int, nonblock bool) int {
	i := 0
	if family == unix.AF_INET6 {
		i = 2
	}
	if nonblock {
		i++
	}
	return i
}

func newClientSocket(family int, nonblock bool) (int, error) {
	flags := unix.SOCK_STREAM | unix.SOCK_CLOEXEC
	if nonblock {
		flags |= unix.SOCK_NONBLOCK
	}
	return unix.Socket(family, flags, unix.IPPROTO_TCP)
}

// get returns a prepared socket, or makes one if the pool is empty.
func (p *socketPool) get(family int, nonblock bool) (int, error) {
	i := poolIndex(family, nonblock)
	p.mu.Lock()
	if q := p.ready[i]; len(q) > 0 {
		fd := q[len(q)-1]
		p.ready[i] = q[:len(q)-1]
		p.mu.Unlock()
		return fd, nil
	}
	p.mu.Unlock()
	return newClientSocket(family, nonblock)
}

// refill tops up the kind of socket that was just taken (the others wait
// until they are used). Out of fds or memory, it stops: handlers then
// make their own sockets.
func (p *socketPool) refill(family int, nonblock bool) {
	i := poolIndex(family, nonblock)
	for {
		p.mu.Lock()
		full := p.closed || len(p.ready[i]) >= poolSize
		p.mu.Unlock()
		if full {
			return
		}
		fd, err := newClientSocket(family, nonblock)
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.closed || len(p.ready[i]) >= poolSize {
			// Closed, or filled by another handler meanwhile.
			p.mu.Unlock()
			unix.Close(fd)
			return
		}
		p.ready[i] = append(p.ready[i], fd)
		p.mu.Unlock()
	}
}

// close closes the pooled sockets; later refills make none.
func (p *socketPool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for i, q := range p.ready {
		for _, fd := range q {
			unix.Close(fd)
		}
		p.ready[i] = nil
	}
}
