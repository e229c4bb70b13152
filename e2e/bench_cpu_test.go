//go:build bench

package e2e

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/op-replicator/op-replicator/e2e/devnet"
)

// Where the machine's CPU goes while something is measured: every devnet process' CPU time, the test process'
// own, and the whole machine's busy time (/proc/stat), at two moments.

type cpuSnapshot struct {
	at    time.Time
	procs map[string]time.Duration
	busy  time.Duration // the machine's non-idle time, over every core
}

func snapshotCPU(t *testing.T, d *devnet.Devnet, extra ...*devnet.Process) cpuSnapshot {
	s := cpuSnapshot{at: time.Now(), procs: make(map[string]time.Duration)}
	for _, p := range append(d.Processes(), extra...) {
		if cpu, err := p.CPUTime(); err == nil {
			s.procs[p.Name] = cpu
		}
	}
	s.procs["e2e test process"] = selfCPU(t)
	s.busy = machineBusy()
	return s
}

// machineBusy is the machine's CPU time spent not idle since boot (user, nice, system, irq, softirq, steal).
func machineBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	var busy uint64
	for i, v := range f[1:] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		n, _ := strconv.ParseUint(v, 10, 64)
		busy += n
	}
	return time.Duration(busy) * 10 * time.Millisecond
}

// cpuSince says, in cores (CPU seconds per second of wall time), how busy the machine and each process that used at
// least 2% of a core was between from and to, the busiest first.
func cpuSince(from, to cpuSnapshot) string {
	wall := to.at.Sub(from.at).Seconds()
	type use struct {
		name  string
		cores float64
	}
	var uses []use
	for name, cpu := range to.procs {
		before, ok := from.procs[name]
		if !ok {
			continue
		}
		if c := (cpu - before).Seconds() / wall; c >= 0.02 {
			uses = append(uses, use{name, c})
		}
	}
	slices.SortFunc(uses, func(a, b use) int { return int(1000 * (b.cores - a.cores)) })
	parts := []string{fmt.Sprintf("machine %.2f cores busy over %.1f s", (to.busy-from.busy).Seconds()/wall, wall)}
	for _, u := range uses {
		parts = append(parts, fmt.Sprintf("%s %.2f", u.name, u.cores))
	}
	return strings.Join(parts, ", ")
}

// selfCPU is the test process' CPU time (user and system) so far.
func selfCPU(t *testing.T) time.Duration {
	var ru syscall.Rusage
	require.NoError(t, syscall.Getrusage(syscall.RUSAGE_SELF, &ru))
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
