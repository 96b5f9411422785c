package cpbench

import (
	"os/exec"
	"syscall"
)

// dieWithParent kills cmd when the benchmark dies, however it dies.
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
