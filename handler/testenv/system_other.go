//go:build !unix

package testenv

import "os"

// terminate ends the process this package started (no process groups here).
func terminate(p *os.Process) { _ = p.Kill() }

func killGroup(int) {}

// groupMembers cannot tell on this platform, and says none.
func groupMembers(int) []int { return nil }

// pidAlive cannot tell on this platform, and says yes, so nothing is swept.
func pidAlive(int) bool { return true }
