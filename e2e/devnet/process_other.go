//go:build !linux

package devnet

import "syscall"

// childProcAttr puts a child in its own process group, so that a Ctrl-C in the terminal reaches only the
// harness, which then stops the devnet in order.
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
