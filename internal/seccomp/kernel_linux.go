package seccomp

import "unsafe"

// The user-notification structures of include/uapi/linux/seccomp.h, which
// golang.org/x/sys/unix (v0.50.0) does not define. It does define the ioctl
// numbers (SECCOMP_IOCTL_NOTIF_*) and the flags, which we use from there.

// seccompData is struct seccomp_data.
type seccompData struct {
	nr   int32
	arch uint32
	ip   uint64
	args [6]uint64
}

// seccompNotif is struct seccomp_notif.
type seccompNotif struct {
	id    uint64
	pid   uint32
	flags uint32
	data  seccompData
}

// seccompNotifResp is struct seccomp_notif_resp.
type seccompNotifResp struct {
	id    uint64
	val   int64
	error int32 // a negated errno
	flags uint32
}

// seccompNotifAddfd is struct seccomp_notif_addfd.
type seccompNotifAddfd struct {
	id         uint64
	flags      uint32
	srcfd      uint32
	newfd      uint32
	newfdFlags uint32
}

// The sizes are part of the ioctl numbers (0xc0502100: RECV, 0x50 bytes);
// a mismatch would make every ioctl fail with ENOTTY or EINVAL, so check
// them at compile time.
var (
	_ [unsafe.Sizeof(seccompData{}) - 64]struct{}
	_ [64 - unsafe.Sizeof(seccompData{})]struct{}
	_ [unsafe.Sizeof(seccompNotif{}) - 80]struct{}
	_ [80 - unsafe.Sizeof(seccompNotif{})]struct{}
	_ [unsafe.Sizeof(seccompNotifResp{}) - 24]struct{}
	_ [24 - unsafe.Sizeof(seccompNotifResp{})]struct{}
	_ [unsafe.Sizeof(seccompNotifAddfd{}) - 24]struct{}
	_ [24 - unsafe.Sizeof(seccompNotifAddfd{})]struct{}
)
