//go:build unix

package testenv

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
)

// terminate sends SIGTERM to the process group led by p, which this package
// created for it.
func terminate(p *os.Process) {
	if err := syscall.Kill(-p.Pid, syscall.SIGTERM); err != nil {
		_ = p.Signal(syscall.SIGTERM)
	}
}

// killGroup sends SIGKILL to what is left of the process group pgid after
// its leader has exited and been waited for.
func killGroup(pgid int) { _ = syscall.Kill(-pgid, syscall.SIGKILL) }

// groupMembers lists the processes, other than zombies, still in the process
// group pgid. Without /proc it can only tell whether any process (zombies
// included) is, and answers pgid itself if so.
func groupMembers(pgid int) []int {
	if runtime.GOOS != "linux" {
		if err := syscall.Kill(-pgid, 0); err == nil || err == syscall.EPERM {
			return []int{pgid}
		}
		return nil
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := bytes.Fields(b[i+1:])
		if len(f) < 3 || string(f[0]) == "Z" {
			continue
		}
		if pgrp, err := strconv.Atoi(string(f[2])); err == nil && pgrp == pgid {
			out = append(out, pid)
		}
	}
	return out
}

// pidAlive reports whether a process with this id exists.
func pidAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || err == syscall.EPERM
}
