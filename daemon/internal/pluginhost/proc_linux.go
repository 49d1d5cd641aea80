package pluginhost

import (
	"os/exec"
	"syscall"
)

// dieWithParent has the kernel kill the plugin when the daemon dies, even by
// kill -9, so that a crashed daemon leaves no orphaned plugin processes.
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
