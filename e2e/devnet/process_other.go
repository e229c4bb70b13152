//go:build !linux

package devnet

import (
	"fmt"
	"syscall"
)

// childProcAttr puts a child in its own process group, so that a Ctrl-C in the terminal reaches only the
// harness, which then stops the devnet in order.
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

// SetNice is Linux only here (see process_linux.go).
func (p *Process) SetNice(int) error {
	return fmt.Errorf("%s: setting the nice value of every thread is only done on Linux", p.Name)
}
