package broker

import (
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// Handlers get and refill concurrently (go test -race checks the locking);
// every kind of socket comes out as asked.
func TestSocketPoolConcurrent(t *testing.T) {
	p := newSocketPool()
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			k := poolKinds[w]
			for range 50 {
				fd, err := p.get(k.family, k.nonblock)
				if err != nil {
					t.Error(err)
					return
				}
				if d, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN); err != nil || d != k.family {
					t.Errorf("pooled socket of family %d is %d (%v)", k.family, d, err)
				}
				fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
				if err != nil || (fl&unix.O_NONBLOCK != 0) != k.nonblock {
					t.Errorf("pooled socket flags %#x (%v), want nonblocking %v", fl, err, k.nonblock)
				}
				unix.Close(fd)
				p.refill(k.family, k.nonblock)
			}
		})
	}
	wg.Wait()
	for i, q := range p.ready {
		if len(q) != poolSize {
			t.Errorf("kind %+v: %d sockets ready, want %d", poolKinds[i], len(q), poolSize)
		}
	}
	p.close()
	p.refill(unix.AF_INET, false)
	for _, q := range p.ready {
		if len(q) != 0 {
			t.Error("refill after close made sockets")
		}
	}
}
