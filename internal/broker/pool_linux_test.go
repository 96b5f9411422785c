package broker

import (
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// Handlers get and refill concurrently (go test -race checks the locking).
func TestSocketPoolConcurrent(t *testing.T) {
	p := newSocketPool()
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			fam := poolFamilies[w%2]
			for range 50 {
				fd, err := p.get(fam)
				if err != nil {
					t.Error(err)
					return
				}
				if d, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN); err != nil || d != fam {
					t.Errorf("pooled socket of family %d is %d (%v)", fam, d, err)
				}
				unix.Close(fd)
				p.refill()
			}
		})
	}
	wg.Wait()
	for i, q := range p.ready {
		if len(q) != poolSize {
			t.Errorf("family %d: %d sockets ready, want %d", poolFamilies[i], len(q), poolSize)
		}
	}
	p.close()
	p.refill()
	if len(p.ready[0])+len(p.ready[1]) != 0 {
		t.Error("refill after close made sockets")
	}
}
