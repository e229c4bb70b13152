//go:build bench

package e2e

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/rpc"

	"github.com/op-replicator/op-replicator/e2e/devnet"
	"github.com/op-replicator/op-replicator/e2e/dsl"
)

// Catch-up benchmarks: a fresh node started far behind the sequencer, against the engine ceiling (devnet.Engine:
// the same blocks, prefetched, replayed through the engine API into a fresh op-geth), all in one devnet run.
// Settings: OP_REPLICATOR_BENCH_CATCHUP_BLOCKS (how far behind the fresh node starts, default 500),
// OP_REPLICATOR_BENCH_UNSAFE_BLOCKS (the unsafe-only backlog, default 1000), OP_REPLICATOR_BENCH_TX_RATE (default
// 60), OP_REPLICATOR_BENCH_PPROF (a directory: a CPU profile of the replicator's op-node over its catch-up is
// written there), OP_REPLICATOR_BENCH_REPORT.

// catchUpResult is one fresh node's catch-up to a target block.
type catchUpResult struct {
	name string
	// total runs from the start of the node's processes to the target on its unsafe head; steady from the first
	// sample at or above steadyFrom (a tenth of the way) to the target.
	total, steady time.Duration
	steadyFrom    uint64
	// blocks is the unsafe head at the first sample at or above the target: the head moves a batch at a time (up
	// to 32 blocks, seconds at heavy load), so counting the target instead would leave out the blocks of the batch
	// that crossed it, whose time is counted.
	blocks uint64
	// safeAtTarget is the node's safe head when its unsafe head reached the target.
	safeAtTarget uint64
	// replicated is the replicator's blocks_replicated_total at the target; errors its errors_total by kind.
	replicated float64
	errors     string
	cpu        time.Duration // the op-node's CPU time up to the target
	// cpuSteady is where the machine's CPU went over the steady part.
	cpuSteady string
	// insertSteps is where the replicator's insert stage spent its time over the whole catch-up (insert_seconds).
	insertSteps string
	// calls is op-node's time in its engine API calls over the steady part, and engine where its op-geth's own time
	// went (devnet.Config.EngineMetrics; nil without).
	calls  engineCalls
	engine *devnet.EngineTimes
}

// engineCalls is a client's time in its engine API calls: the sum over the calls, from sending each to its answer.
// Other counts the client's other calls to the same endpoint (op-node reads its L2 blocks there too).
type engineCalls struct {
	NewPayload, Forkchoice, Other                time.Duration
	NewPayloadCalls, ForkchoiceCalls, OtherCalls uint64
}

func (c engineCalls) minus(o engineCalls) engineCalls {
	return engineCalls{NewPayload: c.NewPayload - o.NewPayload, Forkchoice: c.Forkchoice - o.Forkchoice, Other: c.Other - o.Other,
		NewPayloadCalls: c.NewPayloadCalls - o.NewPayloadCalls, ForkchoiceCalls: c.ForkchoiceCalls - o.ForkchoiceCalls,
		OtherCalls: c.OtherCalls - o.OtherCalls}
}

// opNodeEngineCalls reads op-node's own timing of its engine API calls (its RPC client's request_duration_seconds
// for the engine-api client).
func opNodeEngineCalls(t *testing.T, n *dsl.Node) engineCalls {
	t.Helper()
	m, err := n.ScrapeMetrics(t.Context())
	require.NoError(t, err)
	var c engineCalls
	for _, series := range m["op_node_default_rpc_client_request_duration_seconds"].GetMetric() {
		labels := map[string]string{}
		for _, l := range series.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["rpc"] != "engine-api" {
			continue
		}
		h := series.GetHistogram()
		d := time.Duration(h.GetSampleSum() * float64(time.Second))
		switch {
		case strings.HasPrefix(labels["method"], "engine_newPayload"):
			c.NewPayload, c.NewPayloadCalls = c.NewPayload+d, c.NewPayloadCalls+h.GetSampleCount()
		case strings.HasPrefix(labels["method"], "engine_forkchoiceUpdated"):
			c.Forkchoice, c.ForkchoiceCalls = c.Forkchoice+d, c.ForkchoiceCalls+h.GetSampleCount()
		default:
			c.Other, c.OtherCalls = c.Other+d, c.OtherCalls+h.GetSampleCount()
		}
	}
	return c
}

// engineTimes reads the op-geth's engine timers, if it has them (devnet.Config.EngineMetrics), which restarts them.
func engineTimes(t *testing.T, el *devnet.EL) *devnet.EngineTimes {
	t.Helper()
	if el.MetricsURL == "" {
		return nil
	}
	et, err := el.EngineTimes(t.Context())
	require.NoError(t, err)
	return &et
}

func (r catchUpResult) totalRate() float64 { return float64(r.blocks) / r.total.Seconds() }
func (r catchUpResult) steadyRate() float64 {
	return float64(r.blocks-r.steadyFrom) / r.steady.Seconds()
}

// catchUpSample is how often a catching-up node's heads are read.
const catchUpSample = 50 * time.Millisecond

// catchUpStall is how long a catching-up node's unsafe head may stay where it is before the catch-up fails: far
// longer than any pause of a catch-up that goes on (a node's start, derivation walking L1 between batches).
const catchUpStall = 2 * time.Minute

// measureCatchUp adds a follower and measures how long it takes until its unsafe head is at target, whose hash must
// be want; then it stops the follower (its CPU is not left to weigh on the next measurement).
func measureCatchUp(t *testing.T, parent *dsl.System, name, label string, role devnet.Role, target uint64, want common.Hash,
	profile bool, opts ...devnet.FollowerOption) catchUpResult {
	t.Helper()
	sys := parent.For(t) // t may be a subtest
	res := catchUpResult{name: label, blocks: target, steadyFrom: target / 10}
	var pprofPort int
	if role == devnet.RoleReplicator {
		opts = append(opts, devnet.WithMetrics())
	}
	if profile {
		pprofPort = dsl.FreePort(t)
		opts = append(opts, devnet.WithNodeArgs("--pprof.enabled", "--pprof.addr", "127.0.0.1", "--pprof.port", strconv.Itoa(pprofPort)))
	}
	started := time.Now()
	n := sys.AddFollower(name, role, opts...)
	t.Cleanup(func() { _ = n.Stop() })
	var stopProfiles func()
	if profile {
		stopProfiles = captureProfiles(t, pprofPort, name)
	}
	stopGethProfile := gethProfile(t, n.EL.EL, name)
	ticker := time.NewTicker(catchUpSample)
	defer ticker.Stop()
	var steadyAt time.Time
	var steadyCPU cpuSnapshot
	var steadyCalls engineCalls
	deadline := time.After(time.Duration(target)*time.Second + 2*time.Minute)
	var best uint64            // the highest unsafe head seen
	lastProgress := time.Now() // when it last rose
	for {
		require.NoError(t, sys.Net.Err(), "devnet fault during %s's catch-up", name)
		st, err := n.CL.SyncStatus(t.Context())
		if err == nil {
			if st.UnsafeL2.Number > best {
				best, lastProgress = st.UnsafeL2.Number, time.Now()
			} else if time.Since(lastProgress) > catchUpStall {
				// A stalled catch-up fails now rather than at the deadline, an hour away at the deepest backlog.
				t.Fatalf("%s stalled: its unsafe head %s has not moved for %s (safe %s, target %d)", name, st.UnsafeL2.ID(),
					catchUpStall, st.SafeL2.ID(), target)
			}
			if steadyAt.IsZero() && st.UnsafeL2.Number >= res.steadyFrom {
				steadyAt, res.steadyFrom = time.Now(), st.UnsafeL2.Number
				steadyCPU = snapshotCPU(t, sys.Net)
				if role == devnet.RoleReplicator {
					steadyCalls = opNodeEngineCalls(t, n)
				}
				engineTimes(t, n.EL.EL) // restarts op-geth's timers for the steady part
			}
			if st.UnsafeL2.Number >= target {
				res.total, res.steady, res.safeAtTarget = time.Since(started), time.Since(steadyAt), st.SafeL2.Number
				res.blocks = st.UnsafeL2.Number
				res.cpuSteady = cpuSince(steadyCPU, snapshotCPU(t, sys.Net))
				if role == devnet.RoleReplicator {
					res.calls = opNodeEngineCalls(t, n).minus(steadyCalls)
				}
				res.engine = engineTimes(t, n.EL.EL)
				stopGethProfile()
				break
			}
		}
		select {
		case <-ticker.C:
		case <-deadline:
			t.Fatalf("%s did not reach block %d in time (last status %+v, err %v)", name, target, st, err)
		}
	}
	var err error
	res.cpu, err = n.OpNode.CPUTime()
	require.NoError(t, err)
	if role == devnet.RoleReplicator {
		res.replicated = n.Metric(dsl.MetricBlocksReplicated)
		res.errors = metricLines(t.Context(), n, dsl.MetricErrors)
		res.insertSteps = insertSteps(t.Context(), n)
	}
	got := n.EL.HashAt(rpc.BlockNumber(target))
	require.Equal(t, want, got, "%s has another block at %d", name, target)
	if stopProfiles != nil {
		stopProfiles()
	}
	require.NoError(t, n.Stop())
	t.Logf("%s: block %d (target %d) in %s (steady from %d: %s), safe %d at target, replicated %.0f, op-node CPU %s, errors: %s; CPU in the steady part: %s; insert stage: %s",
		label, res.blocks, target, res.total.Round(time.Millisecond), res.steadyFrom, res.steady.Round(time.Millisecond), res.safeAtTarget,
		res.replicated, res.cpu, res.errors, res.cpuSteady, res.insertSteps)
	return res
}

// insertSteps reads a replicator's insert_seconds: per step, the batches and their total time, and each step's share
// of the stage's time (idle: waiting for fetching and verifying) (for a log line or a JSON note: the scrape's error if it fails).
func insertSteps(ctx context.Context, n *dsl.Node) string {
	m, err := n.ScrapeMetrics(ctx)
	if err != nil {
		return err.Error()
	}
	sums := map[string]float64{}
	var out []string
	for _, series := range m[dsl.MetricPrefix+"insert_seconds"].GetMetric() {
		for _, l := range series.GetLabel() {
			if l.GetName() == "step" {
				h := series.GetHistogram()
				sums[l.GetValue()] = h.GetSampleSum()
				out = append(out, fmt.Sprintf("%s %.1f s in %d batches", l.GetValue(), h.GetSampleSum(), h.GetSampleCount()))
			}
		}
	}
	if len(out) == 0 {
		return "none"
	}
	if total := sums["engine"] + sums["loop_turn"] + sums["idle"]; total > 0 {
		out = append(out, fmt.Sprintf("engine %.0f%%, loop turn %.1f%%, idle %.0f%% of the stage's time",
			100*sums["engine"]/total, 100*sums["loop_turn"]/total, 100*sums["idle"]/total))
	}
	return strings.Join(out, ", ")
}

// metricLines returns the series of a metric of n's op-node, label and value, joined (the scrape's error if it
// fails: this is for a log line).
func metricLines(ctx context.Context, n *dsl.Node, name string) string {
	m, err := n.ScrapeMetrics(ctx)
	if err != nil {
		return err.Error()
	}
	var out []string
	for _, series := range m.Series(name) {
		if len(series.Labels) > 0 {
			out = append(out, series.String())
		}
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, ", ")
}

// catchUpRow writes the row of one path's catch-ups, with ratios against the per-32 ceiling and, if anchor > 0,
// against anchor; it returns the mean steady rate.
func catchUpRow(out *strings.Builder, rs []catchUpResult, per32, anchor float64, anchorName string) float64 {
	var steady, total []float64
	var notes []string
	for _, r := range rs {
		steady, total = append(steady, r.steadyRate()), append(total, r.totalRate())
		note := fmt.Sprintf("%d → %d in %s, safe head %d at the target, op-node CPU %.1f s", r.steadyFrom, r.blocks,
			r.steady.Round(100*time.Millisecond), r.safeAtTarget, r.cpu.Seconds())
		if r.errors != "" {
			note += fmt.Sprintf(", replicated %.0f blocks", r.replicated)
		}
		notes = append(notes, note)
	}
	list, mean := rates(steady)
	totalList, _ := rates(total)
	ratios := fmt.Sprintf("%.2f×", mean/per32)
	if anchor > 0 {
		ratios += fmt.Sprintf(", %.2f× %s", mean/anchor, anchorName)
	}
	fmt.Fprintf(out, "| %s | %s | %s | from process start %s; %s |\n", rs[0].name, list, ratios, totalList, strings.Join(notes, "; "))
	return mean
}

// TestBenchCatchUp measures a fresh node started ~OP_REPLICATOR_BENCH_CATCHUP_BLOCKS blocks behind the sequencer,
// with L1 holding the batches of every one of them: stock op-node (L1 derivation only), the replicator (source =
// the sequencer's op-geth over websocket) and the engine ceiling, on the same blocks 1..N, each
// OP_REPLICATOR_BENCH_ROUNDS times (default 2).
func TestBenchCatchUp(t *testing.T) {
	blocks := envUint(t, "OP_REPLICATOR_BENCH_CATCHUP_BLOCKS", 500)
	rate := envUint(t, "OP_REPLICATOR_BENCH_TX_RATE", 60)
	rounds := int(envUint(t, "OP_REPLICATOR_BENCH_ROUNDS", 2))
	profile := os.Getenv("OP_REPLICATOR_BENCH_PPROF") != ""
	// The sequencer's relay holds the last 1024 heights it signed: the whole backlog while it is shorter.
	relayPort := dsl.FreePort(t)
	sys := dsl.Start(t, devnet.Config{SequencerArgs: dsl.RelayArgs(relayPort)})
	startBenchLoad(sys, rate)
	// The target must be on L1 for the stock node: wait until the sequencer's safe head has it.
	waitSequencer(sys, blocks, true)
	target := blocks
	want := sys.Sequencer.EL.HashAt(rpc.BlockNumber(target))

	perBlock, per32 := ceilings(t, sys, target, rounds)
	fetching := fetchingCeilings(t, sys, target, rounds)
	var stock, rep []catchUpResult
	for round := range rounds {
		stock = append(stock, measureCatchUp(t, sys, fmt.Sprintf("stock-%d", round+1), "stock op-node, L1 derivation only",
			devnet.RoleVerifier, target, want, false))
		rep = append(rep, measureCatchUp(t, sys, fmt.Sprintf("rep-ws-%d", round+1), "replicator, sequencer op-geth over ws",
			devnet.RoleReplicator, target, want, profile && round == 0, devnet.WithSource(sys.Sequencer.EL.WS)))
	}
	var relay []catchUpResult
	for round := range rounds {
		t.Run(fmt.Sprintf("relay-%d", round+1), func(t *testing.T) {
			head := sys.For(t).Sequencer.EL.NumberAt(rpc.LatestBlockNumber)
			if head > 1000 {
				t.Skipf("the relay's window no longer holds block 1 (head %d)", head)
			}
			relay = append(relay, measureCatchUp(t, sys, fmt.Sprintf("rep-relay-%d", round+1), "replicator, the sequencer's relay",
				devnet.RoleReplicator, target, want, false, devnet.WithSource(dsl.RelaySource(relayPort))))
		})
	}
	head := sys.Sequencer.EL.NumberAt(rpc.LatestBlockNumber)

	var out strings.Builder
	out.WriteString(benchHeading("Catch-up of a fresh node, L1 has the batches", target, rate))
	fmt.Fprintf(&out, "A fresh node (new op-geth from genesis, new op-node) started when the sequencer's safe head was at block %d; "+
		"the sequencer was at %d when the last measurement ended. %d rounds, one value per round, nodes one at a time. A node's "+
		"rate is over the steady part: from the first sample (every %s) at or above a tenth of the way to the target; the "+
		"ceilings replay all blocks 1 → %d.\n\n", target, head, rounds, catchUpSample, target)
	fmt.Fprintln(&out, "| path | blocks/s | vs per-32 ceiling (mean), vs stock | notes |")
	fmt.Fprintln(&out, "|---|---|---|---|")
	anchor := ceilingRows(&out, perBlock, per32)
	fetchList, fetchMean := replayRates(fetching)
	fmt.Fprintf(&out, "| engine ceiling: fetched from the sequencer's op-geth while replaying (`debug_getRawBlock`, 16 in flight), "+
		"one forkchoice update per 32 blocks | %s | %.2f× | the source's own work on the same cores, as for the ws replicator |\n",
		fetchList, fetchMean/anchor)
	stockMean := catchUpRow(&out, stock, anchor, 0, "")
	wsMean := catchUpRow(&out, rep, anchor, stockMean, "stock")
	if len(relay) > 0 {
		catchUpRow(&out, relay, anchor, stockMean, "stock")
	}
	fmt.Fprintf(&out, "\nThe ws replicator against the ceiling fetched from the same source: %.2f×.\n", wsMean/fetchMean)
	if len(relay) > 0 {
		cpuLines(&out, perBlock, per32, stock, rep, relay)
	} else {
		cpuLines(&out, perBlock, per32, stock, rep)
	}
	fmt.Fprintf(&out, "- ceiling, fetched from the sequencer's op-geth: %s\n", fetching[0].CPU)
	report(t, out.String())
}

// TestBenchCatchUpUnsafeOnly measures a fresh node catching up through a backlog of
// OP_REPLICATOR_BENCH_UNSAFE_BLOCKS blocks that exist only as unsafe blocks (the batcher stopped early, the
// sequencing window longer than the run): the replicator (ws source) against the engine ceiling, each
// OP_REPLICATOR_BENCH_ROUNDS times. A stock op-node cannot: the blocks are on no L1, and gossip serves no history.
func TestBenchCatchUpUnsafeOnly(t *testing.T) {
	blocks := envUint(t, "OP_REPLICATOR_BENCH_UNSAFE_BLOCKS", 1000)
	rate := envUint(t, "OP_REPLICATOR_BENCH_TX_RATE", 60)
	rounds := int(envUint(t, "OP_REPLICATOR_BENCH_ROUNDS", 2))
	profile := os.Getenv("OP_REPLICATOR_BENCH_PPROF") != ""
	// The window must outlast the backlog's growth (blocks s of L2 time) and the measurements, with room to spare;
	// otherwise derivation replaces the unsafe chain with deposit-only blocks once it passes.
	window := max(200, 2*(blocks+600)/uint64(devnet.L1BlockTime/time.Second))
	// The sequencer's relay holds every signed block above its safe head (up to its window of 1024 heights): with the
	// batcher stopped, the whole backlog, for a replicator whose source is the relay.
	relayPort := dsl.FreePort(t)
	sys := dsl.Start(t, devnet.Config{SequencerWindowSize: window, SequencerArgs: dsl.RelayArgs(relayPort)})
	startBenchLoad(sys, rate)
	waitSequencer(sys, 10, true)
	sys.SetBatching(false)
	// Whatever the batcher had in flight lands within a few L1 blocks.
	time.Sleep(4 * devnet.L1BlockTime)
	stopped := sys.Sequencer.EL.NumberAt(rpc.SafeBlockNumber)
	target := waitSequencer(sys, stopped+blocks, false)
	want := sys.Sequencer.EL.HashAt(rpc.BlockNumber(target))
	require.Equal(t, stopped, sys.Sequencer.EL.NumberAt(rpc.SafeBlockNumber), "the safe head moved with the batcher stopped")

	perBlock, per32 := ceilings(t, sys, target, rounds)
	var rep []catchUpResult
	for round := range rounds {
		rep = append(rep, measureCatchUp(t, sys, fmt.Sprintf("rep-ws-%d", round+1), "replicator, sequencer op-geth over ws",
			devnet.RoleReplicator, target, want, profile && round == 0, devnet.WithSource(sys.Sequencer.EL.WS)))
	}
	// A replicator following the relay (signed envelopes, transactions as opaque bytes) instead of the sequencer's
	// op-geth (blocks with full transaction objects in JSON): how much of the cost is the source's encoding. Only
	// while the relay's window holds the whole backlog.
	var relay []catchUpResult
	if target-stopped < 1000 {
		for round := range rounds {
			t.Run(fmt.Sprintf("relay-%d", round+1), func(t *testing.T) {
				relay = append(relay, measureCatchUp(t, sys, fmt.Sprintf("rep-relay-%d", round+1), "replicator, the sequencer's relay",
					devnet.RoleReplicator, target, want, false, devnet.WithSource(dsl.RelaySource(relayPort))))
			})
		}
	}
	require.Equal(t, stopped, sys.Sequencer.EL.NumberAt(rpc.SafeBlockNumber), "the safe head moved with the batcher stopped")

	var out strings.Builder
	out.WriteString(benchHeading("Catch-up through an unsafe-only backlog", target-stopped, rate))
	fmt.Fprintf(&out, "Batcher stopped with the safe head at block %d; sequencing window %d L1 blocks; a fresh node's target is "+
		"block %d, so %d blocks exist only as unsafe blocks. %d rounds, one value per round. A node's rate is over the steady part "+
		"(from the first sample at or above a tenth of the way); the ceilings replay all blocks 1 → %d.\n\n",
		stopped, window, target, target-stopped, rounds, target)
	fmt.Fprintln(&out, "| path | blocks/s | vs per-32 ceiling (mean) | notes |")
	fmt.Fprintln(&out, "|---|---|---|---|")
	anchor := ceilingRows(&out, perBlock, per32)
	fmt.Fprintln(&out, "| stock op-node (L1 derivation, gossip) | cannot | – | the blocks are on no L1, and gossip serves no history |")
	catchUpRow(&out, rep, anchor, 0, "")
	if len(relay) > 0 {
		catchUpRow(&out, relay, anchor, 0, "")
		cpuLines(&out, perBlock, per32, rep, relay)
	} else {
		cpuLines(&out, perBlock, per32, rep)
	}
	report(t, out.String())
}

// cpuLines lists where the machine's CPU went in the first round of each measurement (in cores: CPU seconds per
// second of wall time; processes using under 2% of a core left out).
func cpuLines(out *strings.Builder, perBlock, per32 []devnet.ReplayResult, nodes ...[]catchUpResult) {
	fmt.Fprintln(out, "\nCPU in the first round (cores busy, per process):")
	fmt.Fprintf(out, "- ceiling, forkchoice update per block: %s\n", perBlock[0].CPU)
	fmt.Fprintf(out, "- ceiling, one per 32 blocks: %s\n", per32[0].CPU)
	for _, rs := range nodes {
		fmt.Fprintf(out, "- %s, steady part: %s\n", rs[0].name, rs[0].cpuSteady)
	}
}
