package broker

import (
	"context"

	"golang.org/x/sys/unix"
)

// poolSize is how many client host sockets per family wait ready-made:
// enough for a burst of connects between refills, few enough that the fds
// do not matter.
const poolSize = 32

// socketPool keeps client host sockets prepared ahead of need (socket()
// and SO_REUSEADDR done), so a connect handler saves those system calls on
// its critical path. Sockets are made in slimd's own cgroup and network
// namespace, like every host socket.
type socketPool struct {
	ready map[int]chan int // by family
	want  chan struct{}
}

func newSocketPool() *socketPool {
	return &socketPool{
		ready: map[int]chan int{unix.AF_INET: make(chan int, poolSize), unix.AF_INET6: make(chan int, poolSize)},
		want:  make(chan struct{}, 1),
	}
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
	select {
	case fd := <-p.ready[family]:
		select {
		case p.want <- struct{}{}:
		default:
		}
		return fd, nil
	default:
	}
	select {
	case p.want <- struct{}{}:
	default:
	}
	return newClientSocket(family)
}

// run refills the pool until ctx ends, then closes what is left.
func (p *socketPool) run(ctx context.Context) {
	defer func() {
		for _, ch := range p.ready {
			for len(ch) > 0 {
				unix.Close(<-ch)
			}
		}
	}()
	for {
		for fam, ch := range p.ready {
			for len(ch) < cap(ch) {
				fd, err := newClientSocket(fam)
				if err != nil {
					break // out of fds or memory: handlers make their own
				}
				ch <- fd
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-p.want:
		}
	}
}
