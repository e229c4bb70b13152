//go:build bench

package e2e

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ethereum/go-ethereum/rpc"

	"github.com/op-replicator/op-replicator/e2e/dsl"
)

// Benchmarks of the replicator on real binaries (`make bench`, not part of `make test`): one devnet, every path
// measured in the same run under the same load, each figure printed with its ratio against the anchor measured
// alongside it. Settings: OP_REPLICATOR_BENCH_BLOCKS (blocks measured, default 300), OP_REPLICATOR_BENCH_TX_RATE
// (transfers a second, default 60), OP_REPLICATOR_BENCH_REPORT (a file the table is also written to),
// OP_REPLICATOR_BENCH_CONTROL (1: the follow bench adds a second stock gossip follower, a control measured against the
// first exactly as every path is: how far two identical nodes differ on this machine), OP_REPLICATOR_BENCH_ARCHIVE (1:
// the follow bench runs the replicators' op-geths as archive nodes, like the gossip anchor's).
//
// The files: bench_follow_test.go (TestBenchFollow: following the head), bench_catchup_test.go (TestBenchCatchUp,
// TestBenchCatchUpUnsafeOnly: a fresh node catching up) with bench_ceiling_test.go (the engine ceiling they are
// measured against), bench_fanout_test.go (TestBenchRelayFanout) with bench_fanout_subscribers_test.go (its
// subscribers and baseline server). What they measure with: bench_lag_test.go (head lags, local insert times from
// op-node's log, per-block dumps), bench_bootstrap_test.go (a difference of percentiles with its interval),
// bench_probe_test.go (the sequencer-RPC fetch floor), bench_cpu_test.go (where the CPU goes), bench_pprof_test.go
// (profiles and live heap). This file: settings, the load, waits on the sequencer, and the report.

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func envUint(t *testing.T, name string, def uint64) uint64 {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.ParseUint(v, 10, 64)
	require.NoError(t, err, name)
	return n
}

func hostname() string {
	h, _ := os.Hostname()
	return h
}

// report prints a result table, and appends it to OP_REPLICATOR_BENCH_REPORT if set.
func report(t *testing.T, table string) {
	fmt.Println(table)
	if path := os.Getenv("OP_REPLICATOR_BENCH_REPORT"); path != "" {
		f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		require.NoError(t, err)
		defer f.Close()
		_, err = fmt.Fprintln(f, table)
		require.NoError(t, err)
	}
}

func envString(name, def string) string {
	if v := strings.TrimSpace(os.Getenv(name)); v != "" {
		return v
	}
	return def
}

// startBenchLoad sends rate transfers a second to the sequencer, from every funded account, until the end of the
// test.
func startBenchLoad(sys *dsl.System, rate uint64) {
	sys.StartTxLoadFrom(sys.Sequencer.EL, sys.Net.Keys.L2Accounts, float64(rate))
}

// waitSequencer waits until the sequencer's unsafe head (safe: its safe head) is at least n, and returns it.
func waitSequencer(sys *dsl.System, n uint64, safe bool) uint64 {
	label := rpc.LatestBlockNumber
	if safe {
		label = rpc.SafeBlockNumber
	}
	return sys.Sequencer.EL.WaitNumberAt(label, n, time.Duration(n)*3*time.Second+2*time.Minute)
}

func benchHeading(title string, blocks, rate uint64) string {
	return fmt.Sprintf("### %s: %d blocks, %d transfers/s (%s, %s, %d CPUs, GOMAXPROCS %d, load average %s)\n\n", title, blocks, rate,
		time.Now().UTC().Format(time.RFC3339), hostname(), runtime.NumCPU(), runtime.GOMAXPROCS(0), loadAverage())
}

func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// rates lists rates, and returns their mean.
func rates(rs []float64) (string, float64) {
	var list []string
	var sum float64
	for _, r := range rs {
		list = append(list, fmt.Sprintf("%.1f", r))
		sum += r
	}
	return strings.Join(list, ", "), sum / float64(len(rs))
}
