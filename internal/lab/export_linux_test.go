package lab

// Exports for the kernel tests in package lab_test, which need labtest
// (and so cannot live in package lab).
var (
	EnsureWire     = ensureWire
	EnsureHost     = ensureHost
	EnsureCgroup   = ensureCgroup
	CgroupRoot     = cgroupRoot
	StartDetached  = startDetached
	RunForeground  = runForeground
	ListLabNetns   = listLabNetns
	HostExecCgroup = HostCgroup
	CgroupDir      = cgroupDir
)
