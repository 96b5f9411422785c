//go:build unix

package unixsock

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// ParseRights returns the fds passed in a message's control data
// (SCM_RIGHTS). Other control messages are skipped: SCM_CREDENTIALS only
// comes when asked for.
func ParseRights(oob []byte) ([]int, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("control message: %w", err)
	}
	var fds []int
	for i := range msgs {
		if msgs[i].Header.Level != unix.SOL_SOCKET || msgs[i].Header.Type != unix.SCM_RIGHTS {
			continue
		}
		got, err := unix.ParseUnixRights(&msgs[i])
		if err != nil {
			continue
		}
		fds = append(fds, got...)
	}
	return fds, nil
}
