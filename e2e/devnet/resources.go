package devnet

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Resources is what a running process holds, as the kernel accounts it (Linux /proc).
type Resources struct {
	Pid int
	// RSS is the resident set (VmRSS), PeakRSS its high-water mark over the process' life (VmHWM), in bytes.
	// PeakRSS catches a peak between two samples.
	RSS, PeakRSS uint64
	// FDs is the number of open file descriptors: sockets included, so held connections show here.
	FDs int
}

// Resources reads the running process' memory and open file descriptors from /proc. It fails if the process is
// not running (or on a system without /proc).
func (p *Process) Resources() (Resources, error) {
	pid := p.Pid()
	if pid == 0 {
		return Resources{}, fmt.Errorf("%s is not running", p.Name)
	}
	r, err := procResources(pid)
	if err != nil {
		return Resources{}, fmt.Errorf("resources of %s: %w", p.Name, err)
	}
	return r, nil
}

func procResources(pid int) (Resources, error) {
	r := Resources{Pid: pid}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Resources{}, err
	}
	if r.RSS, err = statusBytes(status, "VmRSS"); err != nil {
		return Resources{}, err
	}
	if r.PeakRSS, err = statusBytes(status, "VmHWM"); err != nil {
		return Resources{}, err
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return Resources{}, err
	}
	r.FDs = len(fds)
	return r, nil
}

// statusBytes returns a "Key:   1234 kB" field of /proc/<pid>/status in bytes.
func statusBytes(status []byte, key string) (uint64, error) {
	scanner := bufio.NewScanner(bytes.NewReader(status))
	for scanner.Scan() {
		name, value, ok := strings.Cut(scanner.Text(), ":")
		if !ok || name != key {
			continue
		}
		fields := strings.Fields(value)
		if len(fields) != 2 || fields[1] != "kB" {
			return 0, fmt.Errorf("unexpected %s line %q", key, scanner.Text())
		}
		kb, err := strconv.ParseUint(fields[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", key, err)
		}
		return kb << 10, nil
	}
	return 0, fmt.Errorf("no %s in /proc/<pid>/status", key)
}
