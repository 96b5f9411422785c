package lab

import (
	"fmt"
	"io"
	"sync"
	"time"
)

// Progress prints one line per step with the time since it was made; a nil
// writer silences it. Nothing animates: the lines are the same on a
// terminal and in a log. The lab's operations and the benchmark print
// their steps with it; it is safe for concurrent use.
type Progress struct {
	mu    sync.Mutex
	w     io.Writer
	start time.Time
}

// NewProgress starts the clock of a Progress that writes to w.
func NewProgress(w io.Writer) *Progress { return &Progress{w: w, start: time.Now()} }

// Step prints one line.
func (p *Progress) Step(format string, args ...any) {
	if p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, "%6.1fs  %s\n", time.Since(p.start).Seconds(), fmt.Sprintf(format, args...))
}

// Elapsed is the time since the Progress was made.
func (p *Progress) Elapsed() time.Duration { return time.Since(p.start) }
