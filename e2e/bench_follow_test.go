//go:build bench

package e2e

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ethereum/go-ethereum/rpc"

	"github.com/op-replicator/op-replicator/e2e/devnet"
	"github.com/op-replicator/op-replicator/e2e/dsl"
)

// follower is one path to the head measured by the bench.
type follower struct {
	id, name string
	node     *dsl.Node
	lag      *devnet.LagMeter
	cpu      time.Duration // op-node CPU time at the start of the window
	rss      uint64        // op-node peak RSS in the window
	// rssSamples is op-node's resident memory through the window, in sampling order.
	rssSamples []uint64
	// heap is op-node's live heap (after a garbage collection) at the start of the window and at each tenth of it.
	heap []uint64
	// requests is the replicator's requests to its source so far, by method (none for gossip).
	requests map[string]float64
	// beyondInsert is each block's lag minus the node's own insert of it; lags and inserts are each block's lag and
	// the node's own insert of it.
	beyondInsert, lags, inserts map[uint64]time.Duration
}

// replicating is whether the follower is a replicator (the rest are stock gossip followers).
func (f *follower) replicating() bool { return strings.HasPrefix(f.id, "rep-") }

// sourceRequests reads a replicator's request counts to its source by method (source_request_seconds).
func sourceRequests(n *dsl.Node) map[string]float64 {
	out := map[string]float64{}
	for _, series := range n.Metrics()[dsl.MetricPrefix+"source_request_seconds"].GetMetric() {
		for _, l := range series.GetLabel() {
			if l.GetName() == "method" {
				out[l.GetValue()] += float64(series.GetHistogram().GetSampleCount())
			}
		}
	}
	return out
}

// rssTenths is the median of each tenth of the samples (taken once the replicators reached the head): whether memory
// stays flat over the run, and where it levels off.
func rssTenths(samples []uint64) []uint64 {
	n := len(samples) / 10
	if n == 0 {
		return nil
	}
	out := make([]uint64, 0, 10)
	for i := 0; i < 10; i++ {
		xs := slices.Clone(samples[i*n : (i+1)*n])
		slices.Sort(xs)
		out = append(out, xs[len(xs)/2]>>20)
	}
	return out
}

// TestBenchFollow measures, for a stock gossip follower and replicators with a websocket source, an http source
// and a relay source, the head lag behind the sequencer (newHeads on each op-geth against the sequencer's), and the
// op-node's CPU time and peak RSS per 100 blocks.
func TestBenchFollow(t *testing.T) {
	blocks := envUint(t, "OP_REPLICATOR_BENCH_BLOCKS", 300)
	rate := envUint(t, "OP_REPLICATOR_BENCH_TX_RATE", 60)
	relayPort := dsl.FreePort(t)
	sys := dsl.Start(t, devnet.Config{SequencerArgs: dsl.RelayArgs(relayPort)})
	seq := sys.Sequencer.EL
	// Every follower's op-node serves pprof: its live heap is read at each tenth of the window. With
	// OP_REPLICATOR_BENCH_PPROF (a directory), each is also profiled through the window.
	profile := os.Getenv("OP_REPLICATOR_BENCH_PPROF") != ""
	pprofPorts := map[string]int{}
	// OP_REPLICATOR_BENCH_ARCHIVE=1 runs the replicators' op-geths as archive nodes, as the gossip anchor's runs:
	// every follower on the same engine settings (by default a replicator's op-geth runs with op-geth's defaults).
	archive := envUint(t, "OP_REPLICATOR_BENCH_ARCHIVE", 0) != 0
	withProfile := func(name string, opts ...devnet.FollowerOption) []devnet.FollowerOption {
		opts = append(opts, devnet.WithMetrics()) // every follower alike; the replicators' request counts are read
		if archive && name != "gossip" && name != "gossip-b" {
			opts = append(opts, devnet.WithArchiveEngine())
		}
		pprofPorts[name] = dsl.FreePort(t)
		return append(opts, devnet.WithNodeArgs("--pprof.enabled", "--pprof.addr", "127.0.0.1", "--pprof.port", strconv.Itoa(pprofPorts[name])))
	}
	followers := []*follower{
		{id: "gossip", name: "stock op-node, libp2p gossip", node: sys.AddFollower("gossip", devnet.RoleGossipFollower, withProfile("gossip")...)},
		{id: "rep-ws", name: "replicator, sequencer op-geth over ws", node: sys.AddReplicator("rep-ws", withProfile("rep-ws", devnet.WithSource(seq.WS))...).Node},
		{id: "rep-http", name: "replicator, sequencer op-geth over http", node: sys.AddReplicator("rep-http", withProfile("rep-http", devnet.WithSource(seq.HTTP))...).Node},
		{id: "rep-relay", name: "replicator, the sequencer's relay", node: sys.AddReplicator("rep-relay", withProfile("rep-relay", devnet.WithSource(dsl.RelaySource(relayPort)))...).Node},
		// What --replicator.require-signature costs the ws path: the ws source announces and serves each block, which
		// waits for its signed copy from the relay.
		{id: "rep-ws-signed", name: "replicator, ws + relay, --replicator.require-signature", node: sys.AddReplicator("rep-ws-signed",
			withProfile("rep-ws-signed", devnet.WithSource(seq.WS+","+dsl.RelaySource(relayPort)), devnet.WithNodeArgs("--replicator.require-signature"))...).Node},
	}
	if envUint(t, "OP_REPLICATOR_BENCH_CONTROL", 0) != 0 {
		followers = append(followers, &follower{id: "gossip-b", name: "control: a second stock op-node, libp2p gossip",
			node: sys.AddFollower("gossip-b", devnet.RoleGossipFollower, withProfile("gossip-b")...)})
	}
	sys.StartTxLoadFrom(seq, sys.Net.Keys.L2Accounts, float64(rate))
	for _, f := range followers {
		if f.replicating() {
			sys.Replicator(f.node).WaitReplicating(seq, 5)
		}
	}

	probe := startFetchProbe(t, seq.WS)
	start, elapsed := followWindow(t, sys, followers, blocks, pprofPorts, profile)

	var out strings.Builder
	fmt.Fprintf(&out, "### Following the head: %d blocks, %d transfers/s (%s, %s, %d CPUs, GOMAXPROCS %d)\n\n",
		blocks, rate, time.Now().UTC().Format(time.RFC3339), hostname(), runtime.NumCPU(), runtime.GOMAXPROCS(0))
	// Lags are compared with gossip's as differences: gossip's p50 is about zero (it can even be negative: gossip
	// publishes a block before the sequencer's own op-geth announces it), where a ratio means nothing.
	// "Beyond the local insert": each block's lag minus its own newPayload + forkchoice update on that node (op-node's
	// insert_time), so that the path's cost is told apart from the engine's.
	fmt.Fprintln(&out, "| path | head lag p50 / p90 / p99 | p50, p99 beyond gossip | p50 / p99 beyond the local insert | op-node CPU per 100 blocks | vs gossip | op-node peak RSS | RSS by tenth of the run (MiB) | live heap at the start and each tenth (MiB) |")
	fmt.Fprintln(&out, "|---|---|---|---|---|---|---|---|---|")
	var anchorP50, anchorP99, anchorCPU float64
	for i, f := range followers {
		st := f.stats(t, blocks)
		if i == 0 {
			anchorP50, anchorP99, anchorCPU = ms(st.p50), ms(st.p99), st.cpuPer100
		}
		fmt.Fprintf(&out, "| %s | %.1f / %.1f / %.1f ms | %+.1f, %+.1f ms | %.1f / %.1f ms (%d blocks) | %.2f s | %.2f× | %d MiB | %v | %v |\n", f.name,
			ms(st.p50), ms(st.p90), ms(st.p99), ms(st.p50)-anchorP50, ms(st.p99)-anchorP99, ms(st.b50), ms(st.b99), st.nb, st.cpuPer100,
			st.cpuPer100/anchorCPU, f.rss>>20, rssTenths(f.rssSamples), f.heap)
	}
	fmt.Fprintf(&out, "\n%d blocks in %s; lags from %d blocks each.\n", blocks, elapsed.Round(time.Second), blocks)
	// A difference of two percentiles measured on a few hundred blocks has a sampling error of its own: shown, so
	// that a difference is not read into the noise.
	fmt.Fprintf(&out, "\nBeyond the local insert, each path minus gossip, block by block, with 95%% intervals (a bootstrap of %d "+
		"resamples of the blocks, a block's two values kept together):\n\n", 2000)
	comparisons := func(of func(*follower) map[uint64]time.Duration) {
		fmt.Fprintln(&out, "| path | p50 difference | p99 difference | blocks |")
		fmt.Fprintln(&out, "|---|---|---|---|")
		for _, f := range followers[1:] {
			if d, ok := comparePercentiles(of(f), of(followers[0])); ok {
				fmt.Fprintf(&out, "| %s | %+.1f ms (%+.1f to %+.1f) | %+.1f ms (%+.1f to %+.1f) | %d |\n", f.name,
					ms(d.p50), ms(d.p50Lo), ms(d.p50Hi), ms(d.p99), ms(d.p99Lo), ms(d.p99Hi), d.n)
			}
		}
	}
	comparisons(func(f *follower) map[uint64]time.Duration { return f.beyondInsert })
	// The raw lag (what the relay target is stated in) and the local insert, the same way: the raw difference
	// is the path's delivery plus its own op-geth's execution of the block, next to the other followers' on the same
	// cores.
	fmt.Fprintf(&out, "\nThe head lag itself, each path minus gossip, the same way:\n\n")
	comparisons(func(f *follower) map[uint64]time.Duration { return f.lags })
	fmt.Fprintf(&out, "\nThe local insert (`newPayload` + forkchoice update, from op-node's log), each path minus gossip, the same way:\n\n")
	comparisons(func(f *follower) map[uint64]time.Duration { return f.inserts })
	for _, f := range followers {
		if f.id != "rep-ws" && f.id != "rep-http" {
			continue
		}
		now := sourceRequests(f.node)
		fmt.Fprintf(&out, "\n%s: requests to the source per block: %.2f for blocks, %.2f for its head, %.2f polls for the next block.\n", f.name,
			(now["payload"]-f.requests["payload"])/float64(blocks), (now["head"]-f.requests["head"])/float64(blocks),
			(now["poll"]-f.requests["poll"])/float64(blocks))
	}
	f50, f90, f99, nf := probe.percentiles(start+1, start+blocks)
	fmt.Fprintf(&out, "\nFloor of the sequencer-RPC path, measured alongside: the test's own client of the sequencer's op-geth, "+
		"from each newHeads notification to the block's debug_getRawBlock answer: p50 / p90 / p99 %.1f / %.1f / %.1f ms (%d blocks).\n",
		ms(f50), ms(f90), ms(f99), nf)
	dumpEpochs(t, seq, start, start+blocks)
	report(t, out.String())
}

// followWindow measures followers over the next blocks blocks of the sequencer: it starts each one's lag meter and
// reads its op-node's CPU time (and a replicator's requests to its source), then waits for the blocks, sampling each
// op-node's RSS and, for each follower with a pprof port, its live heap at the start and each tenth of the window
// (with profile, each is also profiled through it). It returns the sequencer's head at the start, and how long the
// window took.
func followWindow(t *testing.T, sys *dsl.System, followers []*follower, blocks uint64, pprofPorts map[string]int,
	profile bool) (start uint64, elapsed time.Duration) {
	t.Helper()
	seq := sys.Sequencer.EL
	start = seq.NumberAt(rpc.LatestBlockNumber)
	var err error
	for _, f := range followers {
		f.lag = devnet.StartLagMeter(seq.WS, f.node.EL.WS)
		t.Cleanup(f.lag.Stop)
		f.cpu, err = f.node.OpNode.CPUTime()
		require.NoError(t, err)
		if f.replicating() {
			f.requests = sourceRequests(f.node)
		}
	}
	var stopProfiles []func()
	for name, port := range pprofPorts {
		if profile {
			captureHeap(t, port, "heap-"+name+"-start")
			stopProfiles = append(stopProfiles, captureProfiles(t, port, "follow-"+name))
		}
	}
	startedAt := time.Now()
	tenth := uint64(0) // the next tenth of the window whose live heaps are to be read (0: its start)
	sys.WaitFor(time.Duration(blocks)*3*time.Second+time.Minute, fmt.Sprintf("%d blocks", blocks),
		func(ctx context.Context) (bool, error) {
			for _, f := range followers {
				res, err := f.node.OpNode.Resources()
				if err != nil {
					return false, err
				}
				f.rss = max(f.rss, res.PeakRSS)
				f.rssSamples = append(f.rssSamples, res.RSS)
			}
			h, err := seq.Header(ctx, rpc.LatestBlockNumber)
			if err != nil {
				return false, err
			}
			for ; tenth <= 10 && h.Number.Uint64() >= start+tenth*blocks/10; tenth++ {
				for _, f := range followers {
					port, ok := pprofPorts[f.id]
					if !ok {
						continue
					}
					heap, err := liveHeap(ctx, port)
					if err != nil {
						return false, err
					}
					f.heap = append(f.heap, heap>>20)
				}
			}
			return h.Number.Uint64() >= start+blocks, nil
		})
	elapsed = time.Since(startedAt)
	for _, stop := range stopProfiles {
		stop()
	}
	for name, port := range pprofPorts {
		if profile {
			captureHeap(t, port, "heap-"+name+"-end")
		}
	}
	return start, elapsed
}

// followStats is one follower's figures over a window of followWindow.
type followStats struct {
	p50, p90, p99 time.Duration // head lag
	cpuPer100     float64       // op-node CPU seconds per 100 blocks
	b50, b99      time.Duration // lag beyond the local insert
	nb            int           // blocks the lag beyond the insert is over
}

// stats reads a follower's figures at the end of a window of blocks blocks: its head lag's percentiles, its
// op-node's CPU per 100 blocks since the window's start, and its lag beyond its own insert of each block (from its
// op-node's log); it keeps each block's lag, insert and lag beyond the insert in f, and dumps them
// (OP_REPLICATOR_BENCH_DUMP).
func (f *follower) stats(t *testing.T, blocks uint64) followStats {
	t.Helper()
	var st followStats
	var ok50 bool
	st.p50, ok50 = f.lag.Percentile(50)
	st.p90, _ = f.lag.Percentile(90)
	st.p99, _ = f.lag.Percentile(99)
	require.True(t, ok50, "%s: no lag measured", f.name)
	cpu, err := f.node.OpNode.CPUTime()
	require.NoError(t, err)
	st.cpuPer100 = (cpu - f.cpu).Seconds() * 100 / float64(blocks)
	inserts := insertTimes(t, f.node.OpNode.LogPath)
	st.b50, st.b99, st.nb = beyondInsert(f.lag.Lags(), inserts)
	f.beyondInsert = beyondInsertByBlock(f.lag.Lags(), inserts)
	f.lags, f.inserts = lagsByBlock(f.lag.Lags()), inserts
	dumpLags(t, f.id, f.lag.Lags(), inserts)
	return st
}
