package testenv

import (
	"os"
	"syscall"
)

// sysProcAttr puts Azurite in a process group of its own, so kill reaches
// anything it spawns, and asks the kernel to kill it if the test binary
// dies without running its cleanups (a panic, or go test's -timeout).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// kill sends SIGKILL to the process group led by p, which this package
// created for it.
func kill(p *os.Process) {
	if err := syscall.Kill(-p.Pid, syscall.SIGKILL); err != nil {
		_ = p.Kill()
	}
}
