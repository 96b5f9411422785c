package bpf

import "errors"

// ErrNotSupported is returned where the kernel (or the platform) lacks a
// feature Load needs; Probe says which.
var ErrNotSupported = errors.New("bpf: not supported")

// Features is what Probe found on the running kernel.
type Features struct {
	// SockAddr: cgroup sock_addr programs with the getsockname and
	// getpeername hooks. Required (address virtualization, connect/bind
	// guard).
	SockAddr bool `json:"sockAddr"`
	// SkStorage: BPF_MAP_TYPE_SK_STORAGE, per-socket virtual addresses.
	// Required.
	SkStorage bool `json:"skStorage"`
	// Sockopt: cgroup setsockopt programs (the setsockopt guard). Required.
	Sockopt bool `json:"sockopt"`
	// Link: cgroup bpf_links, which can be pinned so that programs stay
	// attached while slimd is down. Required.
	Link bool `json:"link"`
	// CurrentCgroup: bpf_get_current_cgroup_id in sock_addr and sockopt
	// programs, how the guard tells slimd from a container. Required.
	CurrentCgroup bool `json:"currentCgroup"`
	// LSM: BPF LSM programs load and attach (they need BPF trampolines).
	// Optional: a second line of defence where available.
	LSM bool `json:"lsm"`
}

// Usable reports whether Load can work: every required feature is there.
func (f Features) Usable() bool {
	return f.SockAddr && f.SkStorage && f.Sockopt && f.Link && f.CurrentCgroup
}

// Requirements lists each kernel feature the package uses and the first
// Linux version that has it, for `slimctl check` and for test skips.
var Requirements = []Requirement{
	{"sk_storage map", "5.2"},
	{"cgroup sockopt programs", "5.3"},
	{"cgroup bpf_link (pinnable attachment)", "5.7"},
	{"sock_addr getsockname/getpeername hooks", "5.8"},
	{"bpf_get_current_cgroup_id in sock_addr programs (sockopt: probed, not dated)", "5.7"},
	{"bpf_sk_storage_get in sock_addr programs", "5.8"},
	{"memory-mapped array maps (slim_ports)", "5.5"},
	{"cgroup sock_release programs (ports given back)", "5.9"},
	{"BPF atomic fetch-and-add (the connect program's port cursor)", "5.12"},
	{"bpf_set_retval in cgroup programs (EADDRNOTAVAIL)", "5.18"},
	{"BPF LSM (optional)", "5.7"},
}

// Requirement is one kernel feature and the Linux version that added it.
type Requirement struct {
	Feature string
	Linux   string
}
