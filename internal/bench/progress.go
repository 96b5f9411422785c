package bench

import (
	"bytes"
	"strconv"
	"strings"

	"github.com/slimnet/slim/internal/lab"
)

// labProgress turns package lab's progress lines ("   0.9s  lab ready")
// into the benchmark's, timed from the benchmark's start.
type labProgress struct {
	pr  *lab.Progress
	buf []byte
}

func (l *labProgress) Write(b []byte) (int, error) {
	l.buf = append(l.buf, b...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			return len(b), nil
		}
		l.pr.Step("lab: %s", stripElapsed(string(l.buf[:i])))
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
