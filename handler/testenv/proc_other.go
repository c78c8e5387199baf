//go:build !unix

package testenv

import (
	"os"
	"syscall"
)

func sysProcAttr() *syscall.SysProcAttr { return nil }

// kill ends the process this package started.
func kill(p *os.Process) { _ = p.Kill() }
