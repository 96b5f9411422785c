package bench

import (
	"bytes"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"
)

// progress prints one line per step with the time since the benchmark
// began; a nil writer silences it. Nothing animates: the lines are the
// same on a terminal and in a log.
type progress struct {
	mu    sync.Mutex
	w     io.Writer
	start time.Time
}

func newProgress(w io.Writer) *progress { return &progress{w: w, start: time.Now()} }

func (p *progress) step(format string, args ...any) {
	if p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, "%6.1fs  %s\n", time.Since(p.start).Seconds(), fmt.Sprintf(format, args...))
}

// labProgress turns package lab's progress lines ("   0.9s  lab ready")
// into the benchmark's, timed from the benchmark's start.
type labProgress struct {
	pr  *progress
	buf []byte
}

func (l *labProgress) Write(b []byte) (int, error) {
	l.buf = append(l.buf, b...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			return len(b), nil
		}
		l.pr.step("lab: %s", stripElapsed(string(l.buf[:i])))
		l.buf = l.buf[i+1:]
	}
}

// stripElapsed removes a leading "  12.3s  " from a progress line.
func stripElapsed(line string) string {
	s := strings.TrimLeft(line, " ")
	first, rest, ok := strings.Cut(s, " ")
	if ok && strings.HasSuffix(first, "s") {
		if _, err := strconv.ParseFloat(strings.TrimSuffix(first, "s"), 64); err == nil {
			return strings.TrimLeft(rest, " ")
		}
	}
	return line
}
