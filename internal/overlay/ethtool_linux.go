package overlay

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ethtoolValue is struct ethtool_value.
type ethtoolValue struct {
	cmd  uint32
	data uint32
}

// ifreqData is struct ifreq with ifr_data set. x/sys/unix has one but does
// not export it. The union after the name is two pointers and 8 bytes long
// (struct ifmap), on 32- and 64-bit alike.
type ifreqData struct {
	name [unix.IFNAMSIZ]byte
	data unsafe.Pointer
	_    [unix.SizeofPtr + 8]byte
}

// ethtoolValueIoctl runs the legacy ethtool command cmd with value data on
// the link name in the calling thread's network namespace and returns the
// value the kernel left in the struct.
func ethtoolValueIoctl(name string, cmd, data uint32) (uint32, error) {
	if len(name) >= unix.IFNAMSIZ {
		return 0, fmt.Errorf("link name %q too long", name)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("ethtool socket: %w", err)
	}
	defer unix.Close(fd)
	v := ethtoolValue{cmd: cmd, data: data}
	ifr := ifreqData{data: unsafe.Pointer(&v)}
	copy(ifr.name[:], name)
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr)))
	if errno != 0 {
		return 0, errno
	}
	return v.data, nil
}

// setTxChecksum turns transmit checksum offload of link name on or off
// (ethtool -K name tx on|off).
func setTxChecksum(name string, on bool) error {
	var data uint32
	if on {
		data = 1
	}
	if _, err := ethtoolValueIoctl(name, unix.ETHTOOL_STXCSUM, data); err != nil {
		return fmt.Errorf("ethtool STXCSUM %s: %w", name, err)
	}
	return nil
}

// txChecksum reports whether transmit checksum offload is on for link name.
func txChecksum(name string) (bool, error) {
	v, err := ethtoolValueIoctl(name, unix.ETHTOOL_GTXCSUM, 0)
	if err != nil {
		return false, fmt.Errorf("ethtool GTXCSUM %s: %w", name, err)
	}
	return v != 0, nil
}
