package devnet

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"
)

// childProcAttr puts a child in its own process group, so that a Ctrl-C in the terminal reaches only the
// harness (which then stops the devnet in order), and has the kernel kill it if the harness dies.
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// SetNice sets the scheduling priority (nice value, -20..19) of every thread of the running process. Linux keeps a
// nice value per thread, so setting the process's alone would leave its other threads, and the threads they start
// later, where they were. Raising a nice value needs no privilege; lowering it does.
func (p *Process) SetNice(nice int) error {
	pid := p.Pid()
	if pid == 0 {
		return fmt.Errorf("%s is not running", p.Name)
	}
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return fmt.Errorf("%s: %w", p.Name, err)
	}
	for _, task := range tasks {
		tid, err := strconv.Atoi(task.Name())
		if err != nil {
			continue
		}
		// A thread that exited since the listing is not an error.
		if err := syscall.Setpriority(syscall.PRIO_PROCESS, tid, nice); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("%s: set nice %d of thread %d: %w", p.Name, nice, tid, err)
		}
	}
	return nil
}
