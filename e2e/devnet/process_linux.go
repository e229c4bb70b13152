package devnet

import "syscall"

// childProcAttr puts a child in its own process group, so that a Ctrl-C in the terminal reaches only the
// harness (which then stops the devnet in order), and has the kernel kill it if the harness dies.
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
