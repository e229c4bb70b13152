package devnet

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// stopTimeout is how long a process gets to exit after SIGTERM before it is killed.
const stopTimeout = 10 * time.Second

// Process is one devnet binary, run as a child process with stdout and stderr appended to a log file.
// It can be stopped, killed and started again with the same arguments.
type Process struct {
	// Name identifies the process in logs and errors, e.g. "replicator/op-node".
	Name string
	// LogPath is the file the process writes to; every start appends to it.
	LogPath string

	bin    string
	args   []string
	env    []string // KEY=VALUE on top of the test's own environment
	onExit func(p *Process, err error)

	mu       sync.Mutex
	cmd      *exec.Cmd
	exited   chan struct{} // closed once cmd has been reaped
	stopping bool          // the current run is being stopped on purpose
}

// SetArg sets the value that follows flag on the command line, for the next start.
func (p *Process) SetArg(flag, value string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := 0; i+1 < len(p.args); i++ {
		if p.args[i] == flag {
			p.args[i+1] = value
			return nil
		}
	}
	return fmt.Errorf("%s: no %s on the command line", p.Name, flag)
}

// newProcess prepares a process; onExit is called when it exits without being asked to.
func newProcess(name, logPath, bin string, args []string, onExit func(p *Process, err error)) *Process {
	return &Process{Name: name, LogPath: logPath, bin: bin, args: args, onExit: onExit}
}

// Start runs the process. It fails if the process is already running.
func (p *Process) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		return fmt.Errorf("%s is already running", p.Name)
	}
	logFile, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open log of %s: %w", p.Name, err)
	}
	// The child gets its own copy of the file descriptor; ours is not needed after Start.
	defer logFile.Close()
	fmt.Fprintf(logFile, "=== %s: %s %s\n", time.Now().Format(time.RFC3339Nano), p.bin, strings.Join(p.args, " "))

	cmd := exec.Command(p.bin, p.args...)
	if len(p.env) > 0 {
		cmd.Env = append(os.Environ(), p.env...)
	}
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = childProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", p.Name, err)
	}
	exited := make(chan struct{})
	p.cmd, p.exited, p.stopping = cmd, exited, false
	go p.reap(cmd, exited)
	return nil
}

// reap waits for cmd to exit and reports the exit if nobody asked for it.
func (p *Process) reap(cmd *exec.Cmd, exited chan struct{}) {
	err := cmd.Wait()
	p.mu.Lock()
	expected := p.stopping
	p.cmd = nil
	p.mu.Unlock()
	close(exited)
	if !expected && p.onExit != nil {
		if err == nil {
			err = errors.New("exit status 0")
		}
		p.onExit(p, err)
	}
}

// Stop asks the process to exit with SIGTERM and kills it if it has not exited after a grace period.
// Stopping a process that is not running is a no-op.
func (p *Process) Stop() error {
	return p.terminate(syscall.SIGTERM, stopTimeout)
}

// Kill ends the process at once with SIGKILL, as a crash would, and waits until it has been reaped.
func (p *Process) Kill() error {
	return p.terminate(syscall.SIGKILL, 0)
}

func (p *Process) terminate(sig syscall.Signal, grace time.Duration) error {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	if cmd == nil {
		p.mu.Unlock()
		return nil
	}
	p.stopping = true
	p.mu.Unlock()

	if err := cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal %s to %s: %w", sig, p.Name, err)
	}
	if sig != syscall.SIGKILL {
		select {
		case <-exited:
			return nil
		case <-time.After(grace):
			if err := cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
				return fmt.Errorf("kill %s after %s: %w", p.Name, grace, err)
			}
		}
	}
	<-exited
	return nil
}

// Pid returns the operating system's id of the running process, or 0 if it is not running.
func (p *Process) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Running reports whether the process has been started and not yet reaped.
func (p *Process) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd != nil
}

// Tail returns the last n lines of the process' log.
func (p *Process) Tail(n int) (string, error) {
	return tailFile(p.LogPath, n)
}

// tailBytes bounds how much of a log is read to find its last lines.
const tailBytes = 256 << 10

func tailFile(path string, n int) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return "", err
	}
	if offset := info.Size() - tailBytes; offset > 0 {
		if _, err := f.Seek(offset, io.SeekStart); err != nil {
			return "", err
		}
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return "", err
	}
	lines := bytes.Split(bytes.TrimRight(data, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n"))), nil
}

// runToCompletion runs a short-lived command (such as `geth init`) with its output appended to logPath.
func runToCompletion(logPath, bin string, args ...string) error {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open log %s: %w", logPath, err)
	}
	defer logFile.Close()
	fmt.Fprintf(logFile, "=== %s: %s %s\n", time.Now().Format(time.RFC3339Nano), bin, strings.Join(args, " "))
	cmd := exec.Command(bin, args...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = childProcAttr()
	if err := cmd.Run(); err != nil {
		tail, _ := tailFile(logPath, 20)
		return fmt.Errorf("%s %s: %w\n%s", bin, strings.Join(args, " "), err, tail)
	}
	return nil
}

// CPUTime returns the CPU time (user and system) the running process has used so far (/proc/<pid>/stat; Linux
// only, in clock ticks of 10 ms).
func (p *Process) CPUTime() (time.Duration, error) {
	pid := p.Pid()
	if pid == 0 {
		return 0, fmt.Errorf("%s is not running", p.Name)
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("%s: %w", p.Name, err)
	}
	// The command name (field 2) is in parentheses and may hold spaces: count fields after the last ')'.
	fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	if len(fields) < 13 {
		return 0, fmt.Errorf("%s: short /proc/%d/stat", p.Name, pid)
	}
	var utime, stime uint64
	if _, err := fmt.Sscan(fields[11], &utime); err != nil {
		return 0, fmt.Errorf("%s: utime %q: %w", p.Name, fields[11], err)
	}
	if _, err := fmt.Sscan(fields[12], &stime); err != nil {
		return 0, fmt.Errorf("%s: stime %q: %w", p.Name, fields[12], err)
	}
	const tick = 10 * time.Millisecond // USER_HZ is 100 on every Linux ABI Go supports
	return time.Duration(utime+stime) * tick, nil
}
