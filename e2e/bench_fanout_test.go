//go:build bench

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ethereum/go-ethereum/rpc"

	"github.com/op-replicator/op-replicator/e2e/benchplot"
	"github.com/op-replicator/op-replicator/e2e/devnet"
	"github.com/op-replicator/op-replicator/e2e/dsl"
)

// Relay fan-out: how fast one relay (the sequencer's) delivers each block to 1, 100 and 1,000 websocket
// subscribers, and what it costs the relay's op-node, at each block weight (issue 28): each load on a devnet of its
// own, as TestBenchWeight. Settings: OP_REPLICATOR_BENCH_LOADS (default light,10x,mix,max: devnet.LoadPresets or
// name:t=…,c=…,s=…,l=…), OP_REPLICATOR_BENCH_FANOUT (subscriber counts, default 1,100,1000),
// OP_REPLICATOR_BENCH_FANOUT_BLOCKS (blocks measured per count, default 30), OP_REPLICATOR_BENCH_PPROF (a directory:
// CPU profiles of the relay's op-node over each window), OP_REPLICATOR_BENCH_REPORT, OP_REPLICATOR_BENCH_OUT
// (fanout.json, default build/bench), OP_REPLICATOR_BENCH_PLOTS (fanout.png, default docs/bench).
//
// The subscribers run in the test process, on the same 2 cores as the relay. Their own cost is measured apart: the
// test process' CPU time (getrusage) over each window, and the same subscriber count against a trivial websocket
// server in the test process that writes the same message to every connection at once, from one goroutine per
// connection as the relay does; its spread is what the clients, the kernel and a server doing nothing but writing
// cost, so the relay's own part is the difference.

type fanoutRow struct {
	count                  int
	afterFirst, afterHeads []time.Duration
	missing                int
	relayCPU, clientCPU    time.Duration // per block
	rss, peakRSS           uint64
	msgSize                int
	base                   []time.Duration // the trivial server's spread after the first subscriber
	baseMissing            int
}

// TestBenchRelayFanout measures delivery by the sequencer's relay to 1, 100 and 1,000 websocket subscribers, at
// each load.
func TestBenchRelayFanout(t *testing.T) {
	var counts []int
	for _, f := range strings.Split(envString("OP_REPLICATOR_BENCH_FANOUT", "1,100,1000"), ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		require.NoError(t, err, "OP_REPLICATOR_BENCH_FANOUT")
		counts = append(counts, n)
	}
	var loads []devnet.LoadSpec
	for _, s := range strings.Split(envString("OP_REPLICATOR_BENCH_LOADS", "light,10x,mix,max"), ",") {
		spec, err := devnet.ParseLoad(s)
		require.NoError(t, err, "OP_REPLICATOR_BENCH_LOADS")
		loads = append(loads, spec)
	}
	blocks := envUint(t, "OP_REPLICATOR_BENCH_FANOUT_BLOCKS", 30)
	res := benchplot.FanoutResults{When: time.Now().UTC().Format(time.RFC3339), Commit: gitCommit(), Host: hostname(), Blocks: blocks}
	var out strings.Builder
	fmt.Fprintf(&out, "### Relay fan-out at each load: %d blocks per subscriber count (%s, %s, %d CPUs, commit %s, load average %s)\n\n",
		blocks, res.When, res.Host, runtimeCPUs(), res.Commit, loadAverage())
	fmt.Fprintf(&out, "Each load on a devnet of its own; subscribers in the test process (gorilla/websocket, a 64 KB read buffer, "+
		"a message read into a buffer reused per subscriber, the block number found without decoding), beside the load's "+
		"generator. \"After the first\": each subscriber's arrival minus the first subscriber's, for each block (the "+
		"first excluded). \"After newHeads\": arrival minus the sequencer's op-geth newHeads notification to the test (the "+
		"relay gets the block when the sequencer signs it, before its own insert: it can be negative). Relay CPU: the "+
		"sequencer op-node's CPU per block beyond its CPU per block with no subscriber (given per load). Client CPU: the test "+
		"process' own CPU per block (the generator included) beyond the same with no subscriber. Baseline: the same "+
		"subscribers and message against a trivial in-process websocket server that only writes (one goroutine per "+
		"connection and one frame per message, like the relay), %d broadcasts a second apart.\n\n", min(blocks, 15))
	fmt.Fprintln(&out, "| load | Mgas/block | subscribers | after the first p50 / p99 | vs baseline p99 | after newHeads p50 / p99 | missing | relay CPU per block (beyond idle) | op-node RSS (peak), vs idle | client CPU per block | baseline after the first p50 / p99 | message |")
	fmt.Fprintln(&out, "|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, spec := range loads {
		t.Run(spec.Name, func(t *testing.T) {
			rows := fanoutRun(t, spec, counts, blocks, &out)
			res.Rows = append(res.Rows, rows...)
		})
	}
	require.NotEmpty(t, res.Rows, "no load measured")
	report(t, out.String())

	// The results as JSON (OP_REPLICATOR_BENCH_OUT, fanout.json) and the spread against subscribers as a plot
	// (OP_REPLICATOR_BENCH_PLOTS, fanout.png).
	saveBenchJSON(t, "fanout.json", res)
	if path, err := benchplot.Fanout(res, envString("OP_REPLICATOR_BENCH_PLOTS", filepath.Join("..", "docs", "bench"))); err != nil {
		t.Logf("no plot: %v", err) // e.g. a single subscriber count of 1
	} else {
		t.Logf("plot: %s", path)
	}
}

// fanoutRun measures every subscriber count at one load on a devnet of its own: it writes a table row per count to
// out and returns them.
func fanoutRun(t *testing.T, spec devnet.LoadSpec, counts []int, blocks uint64, out *strings.Builder) []benchplot.FanoutRow {
	limit := strconv.Itoa(slices.Max(counts) + 16)
	relayPort := dsl.FreePort(t)
	args := dsl.RelayArgs(relayPort,
		"--replicator.relay.max-subscribers", limit, "--replicator.relay.max-subscribers-per-ip", limit,
		"--replicator.relay.max-conns-per-client", limit, "--replicator.relay.max-conns", limit,
		"--replicator.relay.rate-limit", "100000")
	// With OP_REPLICATOR_BENCH_PPROF, the sequencer's op-node is profiled over each count's window.
	profile := os.Getenv("OP_REPLICATOR_BENCH_PPROF") != ""
	pprofPort := 0
	if profile {
		pprofPort = dsl.FreePort(t)
		args = append(args, "--pprof.enabled", "--pprof.addr", "127.0.0.1", "--pprof.port", strconv.Itoa(pprofPort))
	}
	sys := dsl.Start(t, devnet.Config{SequencerArgs: args, L2Accounts: weightAccounts})
	seq := sys.Sequencer
	load, err := devnet.StartLoad(t.Context(), seq.EL.EL, sys.Net.Keys.L2Accounts, spec)
	require.NoError(t, err)
	t.Cleanup(load.Stop)
	heads := newHeadTimes(t, seq.EL.WS)
	waitSequencer(sys, 5, false)
	relayURL := "ws://127.0.0.1:" + strconv.Itoa(relayPort)

	gas := map[int]float64{} // gas per block over each count's window
	// window waits for blocks blocks from the next one on, and returns the first and last, and the relay op-node's
	// and the test process' CPU time per block over them.
	window := func(count int, rec *deliveries) (from, to uint64, relayCPU, clientCPU time.Duration) {
		defer func() { gas[count] = gasPerBlock(t, seq.EL, from, to) }()
		from = waitSequencer(sys, 0, false) + 2 // the next block may be in flight already
		waitSequencer(sys, from-1, false)
		cpu0, err := seq.OpNode.CPUTime()
		require.NoError(t, err)
		self0 := selfCPU(t)
		to = from + blocks - 1
		waitSequencer(sys, to, false)
		if rec != nil {
			sys.WaitFor(30*time.Second, fmt.Sprintf("block %d at %d subscribers", to, count),
				func(context.Context) (bool, error) { return rec.complete(from, to, count), nil })
		}
		cpu1, err := seq.OpNode.CPUTime()
		require.NoError(t, err)
		self1 := selfCPU(t)
		return from, to, (cpu1 - cpu0) / time.Duration(blocks), (self1 - self0) / time.Duration(blocks)
	}

	_, _, idleRelay, idleClient := window(0, nil)
	idleRes, err := seq.OpNode.Resources()
	require.NoError(t, err)
	t.Logf("no subscribers: op-node CPU %s/block, test process %s/block, RSS %d MiB", idleRelay, idleClient, idleRes.RSS>>20)

	base := startTrivialServer(t)
	baseURL := "ws" + strings.TrimPrefix(base.srv.URL, "http")
	var measured []fanoutRow
	for _, count := range counts {
		row := fanoutRow{count: count}
		rec := newDeliveries()
		start := waitSequencer(sys, 0, false)
		subs := subscribe(t, relayURL, count, start+1, rec)
		var stopProfiles func()
		if profile {
			stopProfiles = captureProfiles(t, pprofPort, fmt.Sprintf("relay-%s-%d", spec.Name, count))
		}
		from, to, relayCPU, clientCPU := window(count, rec)
		if stopProfiles != nil {
			stopProfiles()
		}
		res, err := seq.OpNode.Resources()
		require.NoError(t, err)
		subs.close()
		row.afterFirst, row.afterHeads, row.missing = rec.spread(from, to, count, heads())
		row.relayCPU, row.clientCPU, row.rss, row.peakRSS = relayCPU, clientCPU, res.RSS, res.PeakRSS
		subs.mu.Lock()
		last := subs.last
		subs.mu.Unlock()
		row.msgSize = len(last)
		require.NotEmpty(t, last, "no block from the relay")

		// The baseline: the same subscribers, the same message, a server that only writes.
		baseRec := newDeliveries()
		bsubs := subscribe(t, baseURL, count, 0, baseRec)
		baseBlocks := min(blocks, 15)
		for i := range baseBlocks {
			time.Sleep(time.Second)
			base.broadcast(withBlockNumber(last, 1<<32+i))
		}
		_ = sys.Net.WaitFor(t.Context(), 30*time.Second, "baseline deliveries", func(context.Context) (bool, error) {
			return baseRec.complete(1<<32, 1<<32+baseBlocks-1, count), nil
		})
		bsubs.close()
		base.reset()
		row.base, _, row.baseMissing = baseRec.spread(1<<32, 1<<32+baseBlocks-1, count, nil)
		t.Logf("%d subscribers: after first %s, after newHeads %s, missing %d, relay CPU %s/block, client CPU %s/block, RSS %d MiB (peak %d); baseline after first %s, missing %d",
			count, p50p99(row.afterFirst), p50p99(row.afterHeads), row.missing, relayCPU, clientCPU, res.RSS>>20, res.PeakRSS>>20,
			p50p99(row.base), row.baseMissing)
		measured = append(measured, row)
	}

	var rows []benchplot.FanoutRow
	for _, r := range measured {
		vs := "–"
		if len(r.afterFirst) > 0 && len(r.base) > 0 {
			vs = fmt.Sprintf("%+.1f ms (%.2f×)", ms(percentile(r.afterFirst, 99))-ms(percentile(r.base, 99)),
				ms(percentile(r.afterFirst, 99))/max(ms(percentile(r.base, 99)), 0.001))
		}
		fmt.Fprintf(out, "| %s | %.1f | %d | %s | %s | %s | %d | %.1f ms (idle %.1f) | %d MiB (%d), %+d MiB | %.1f ms | %s | %d B |\n",
			spec.Name, gas[r.count]/1e6, r.count, p50p99(r.afterFirst), vs, p50p99(r.afterHeads), r.missing, ms(r.relayCPU-idleRelay),
			ms(idleRelay), r.rss>>20, r.peakRSS>>20, int64(r.rss>>20)-int64(idleRes.RSS>>20), ms(r.clientCPU-idleClient),
			p50p99(r.base), r.msgSize)
		rows = append(rows, benchplot.FanoutRow{Load: spec.Name, GasPerBlock: gas[r.count], Subscribers: r.count,
			AfterFirstP50: ms(percentile(r.afterFirst, 50)), AfterFirstP99: ms(percentile(r.afterFirst, 99)),
			AfterHeadsP50: ms(percentile(r.afterHeads, 50)), AfterHeadsP99: ms(percentile(r.afterHeads, 99)),
			BaselineP50: ms(percentile(r.base, 50)), BaselineP99: ms(percentile(r.base, 99)), Missing: r.missing,
			RelayCPU: ms(r.relayCPU - idleRelay), ClientCPU: ms(r.clientCPU - idleClient), MessageBytes: r.msgSize})
	}
	return rows
}

// gasPerBlock is the mean gas used by the blocks from..to of el.
func gasPerBlock(t *testing.T, el *dsl.EL, from, to uint64) float64 {
	if to < from {
		return 0
	}
	var gas float64
	for n := from; n <= to; n++ {
		gas += float64(el.HeaderAt(rpc.BlockNumber(n)).GasUsed)
	}
	return gas / float64(to-from+1)
}
