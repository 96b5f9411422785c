package broker

import (
	"sync"

	"golang.org/x/sys/unix"
)

// poolSize is how many client host sockets per family wait ready-made:
// enough for a burst of connects between refills, few enough that the fds
// do not matter.
const poolSize = 32

// socketPool keeps client host sockets prepared ahead of need (socket()
// and SO_REUSEADDR done), so a connect handler saves those system calls on
// its critical path. Sockets are made in slimd's own cgroup and network
// namespace, like every host socket. The handlers refill it after they
// answered, on their own thread: a refilling goroutine would cost a
// cross-thread wake-up per connection.
type socketPool struct {
	mu     sync.Mutex
	ready  [2][]int // by poolFamilies' index
	closed bool
}

var poolFamilies = [2]int{unix.AF_INET, unix.AF_INET6}

func newSocketPool() *socketPool { return &socketPool{} }

func poolIndex(family int) int {
	if family == unix.AF_INET6 {
		return 1
	}
	return 0
}

func newClientSocket(family int) (int, error) {
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		return -1, err
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// get returns a prepared socket, or makes one if the pool is empty.
func (p *socketPool) get(family int) (int, error) {
	i := poolIndex(family)
	p.mu.Lock()
	if q := p.ready[i]; len(q) > 0 {
		fd := q[len(q)-1]
		p.ready[i] = q[:len(q)-1]
		p.mu.Unlock()
		return fd, nil
	}
	p.mu.Unlock()
	return newClientSocket(family)
}

// refill tops the pool up. Out of fds or memory, it stops: handlers then
// make their own sockets.
func (p *socketPool) refill() {
	for i, fam := range poolFamilies {
		for {
			p.mu.Lock()
			full := p.closed || len(p.ready[i]) >= poolSize
			p.mu.Unlock()
			if full {
				break
			}
			fd, err := newClientSocket(fam)
			if err != nil {
				return
			}
			p.mu.Lock()
			if p.closed || len(p.ready[i]) >= poolSize {
				// Closed, or filled by another handler meanwhile.
				p.mu.Unlock()
				unix.Close(fd)
				break
			}
			p.ready[i] = append(p.ready[i], fd)
			p.mu.Unlock()
		}
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
