package bench

import "testing"

func TestTail(t *testing.T) {
	tl := &tail{max: 5}
	tl.Write([]byte("abc"))
	tl.Write([]byte("defg"))
	if got := tl.String(); got != "cdefg" {
		t.Errorf("tail = %q", got)
	}
}
