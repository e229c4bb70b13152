//go:build bench

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/holiman/uint256"
	"github.com/stretchr/testify/require"

	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/rpc"

	"github.com/op-replicator/op-replicator/e2e/benchplot"
	"github.com/op-replicator/op-replicator/e2e/devnet"
	"github.com/op-replicator/op-replicator/e2e/dsl"
)

// Block weight (issue 28): the follow and catch-up figures at several loads, each load on a devnet of its own, every
// figure beside its anchor measured on that devnet under that load. For each load: a stock gossip node and
// replicators with a ws and a relay source follow the head for OP_REPLICATOR_BENCH_WEIGHT_BLOCKS blocks (default
// 240); then, with them stopped, fresh nodes catch up to block OP_REPLICATOR_BENCH_CATCHUP_BLOCKS (default 300):
// the per-32 engine ceiling, stock derivation from L1, the ws replicator and the relay replicator, each
// OP_REPLICATOR_BENCH_ROUNDS times (default 1). The load keeps running throughout.
//
// Settings: OP_REPLICATOR_BENCH_LOADS (default light,10x,mix,max: devnet.LoadPresets, or name:t=…,c=…,s=…,l=…, see
// devnet.ParseLoad), the two sizes above, OP_REPLICATOR_BENCH_OUT (weight.json, default build/bench),
// OP_REPLICATOR_BENCH_PLOTS (weight-catchup.png and weight-lag.png, default docs/bench), OP_REPLICATOR_BENCH_REPORT,
// OP_REPLICATOR_BENCH_PPROF (a directory: CPU profiles of every follower's op-node over the follow window, and of the
// replicators over their catch-ups),
// OP_REPLICATOR_BENCH_GETH_PPROF (a directory: a CPU profile of each catching-up op-geth and of the ceiling's).

// weightAccounts is how many accounts the weight bench's devnets fund: enough for ten senders of 100 transactions a
// second, each with a few accounts to send from in turn.
const weightAccounts = 64

// TestBenchWeight measures, for each load, catch-up against the engine ceiling and stock derivation, head lag on the
// relay and ws paths, op-node CPU against a gossip node, and the bytes of a block on each path (over the follow
// window's last sizedBlocks blocks).
func TestBenchWeight(t *testing.T) {
	var loads []devnet.LoadSpec
	for _, s := range strings.Split(envString("OP_REPLICATOR_BENCH_LOADS", "light,10x,mix,max"), ",") {
		spec, err := devnet.ParseLoad(s)
		require.NoError(t, err, "OP_REPLICATOR_BENCH_LOADS")
		loads = append(loads, spec)
	}
	blocks := envUint(t, "OP_REPLICATOR_BENCH_WEIGHT_BLOCKS", 240)
	catchUp := envUint(t, "OP_REPLICATOR_BENCH_CATCHUP_BLOCKS", 300)
	rounds := int(envUint(t, "OP_REPLICATOR_BENCH_ROUNDS", 1))
	res := benchplot.WeightResults{When: time.Now().UTC().Format(time.RFC3339), Commit: gitCommit(), Host: hostname(), CPUs: runtimeCPUs()}
	// OP_REPLICATOR_BENCH_NOT_AFTER (RFC 3339): no load's devnet is started after it (a shared machine's slot).
	var notAfter time.Time
	if v := envString("OP_REPLICATOR_BENCH_NOT_AFTER", ""); v != "" {
		var err error
		notAfter, err = time.Parse(time.RFC3339, v)
		require.NoError(t, err, "OP_REPLICATOR_BENCH_NOT_AFTER")
	}
	for _, spec := range loads {
		if !notAfter.IsZero() && time.Now().After(notAfter) {
			t.Logf("load %s not measured: past OP_REPLICATOR_BENCH_NOT_AFTER (%s)", spec.Name, notAfter.Format(time.RFC3339))
			continue
		}
		t.Run(spec.Name, func(t *testing.T) {
			row := weightRun(t, spec, blocks, catchUp, rounds)
			res.Rows = append(res.Rows, row)
			t.Logf("%s: %+v", spec.Name, row)
		})
	}
	require.NotEmpty(t, res.Rows, "no load measured")

	var out strings.Builder
	fmt.Fprintf(&out, "### Block weight: %d blocks followed, catch-up to block %d, %d round(s) (%s, %s, %d CPUs, commit %s, load average %s)\n\n",
		blocks, catchUp, rounds, res.When, res.Host, res.CPUs, res.Commit, loadAverage())
	fmt.Fprintln(&out, "Each load on its own devnet. Catch-up: steady blocks/s (from a tenth of the way) and its ratios. Relay − gossip: the "+
		"head lag's difference, paired by block, with a 95% bootstrap interval. ws beyond the insert: its head lag minus its own "+
		"`newPayload` + forkchoice update. CPU: op-node CPU over the follow window against the gossip node's. Bytes: the block "+
		"as RLP / gossip message (snappy, SSZ) / the relay's message / newHeads + `debug_getRawBlock` answer (JSON).")
	fmt.Fprintln(&out)
	fmt.Fprintln(&out, "| load | Mgas/block | txs/block | bytes/block: RLP / gossip / relay / ws | catch-up blocks/s: ceiling, stock, ws, relay | ws, relay vs ceiling (each round vs its own) | ws, relay vs stock | relay − gossip p50 / p99 | ws beyond insert p50 / p99 | op-node CPU vs gossip: ws, relay |")
	fmt.Fprintln(&out, "|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range res.Rows {
		relay, relayCeil, relayStock := "–", "–", "–"
		if r.Relay > 0 {
			relay, relayCeil, relayStock = fmt.Sprintf("%.1f", r.Relay), fmt.Sprintf("%.2f×", r.Relay/r.Ceiling32), fmt.Sprintf("%.2f×", r.Relay/r.Stock)
		}
		fmt.Fprintf(&out, "| %s | %.1f | %.0f | %.1f / %.1f / %.1f / %.1f KB | %.1f, %.1f, %.1f, %s | %.2f×, %s (%s, %s) | %.2f×, %s | %+.1f (%+.1f to %+.1f) / %+.1f (%+.1f to %+.1f) ms | %.1f / %.1f ms | %.2f×, %.2f× |\n",
			r.Load, r.GasPerBlock/1e6, r.TxsPerBlock, r.RLPBytes/1e3, r.GossipBytes/1e3, r.RelayBytes/1e3, r.WSBytes/1e3,
			r.Ceiling32, r.Stock, r.WS, relay, r.WS/r.Ceiling32, relayCeil, ratioOrDash(r.WSVsRoundCeiling), ratioOrDash(r.RelayVsRoundCeiling),
			r.WS/r.Stock, relayStock,
			r.RelayVsGossipP50, r.RelayVsGossipP50Lo, r.RelayVsGossipP50Hi, r.RelayVsGossipP99, r.RelayVsGossipP99Lo, r.RelayVsGossipP99Hi,
			r.WSBeyondInsertP50, r.WSBeyondInsertP99, r.WSCPURatio, r.RelayCPURatio)
	}
	fmt.Fprintln(&out, "\nAnchors and context:")
	fmt.Fprintln(&out)
	fmt.Fprintln(&out, "| load | generator | gossip head lag p50 / p99 | gossip's own insert p50 | beyond the insert p50 / p99: gossip, relay | gossip op-node CPU per 100 blocks | machine busy (follow window) | base fee at the end |")
	fmt.Fprintln(&out, "|---|---|---|---|---|---|---|---|")
	for _, r := range res.Rows {
		fmt.Fprintf(&out, "| %s | %s | %.1f / %.1f ms | %.1f ms | %.1f / %.1f, %.1f / %.1f ms | %.2f s | %.2f cores | %.2f gwei |\n", r.Load, r.Spec,
			r.GossipP50, r.GossipP99, r.GossipInsertP50, r.GossipBeyondInsertP50, r.GossipBeyondInsertP99, r.RelayBeyondInsertP50,
			r.RelayBeyondInsertP99, r.GossipCPUPer100, r.MachineCoresBusyFollow, r.BaseFeeGweiEnd)
	}
	report(t, out.String())
	saveBenchJSON(t, "weight.json", res)
	paths, err := benchplot.Weight(res, envString("OP_REPLICATOR_BENCH_PLOTS", filepath.Join("..", "docs", "bench")))
	require.NoError(t, err)
	t.Logf("plots: %s", strings.Join(paths, ", "))
}

// weightRun measures one load on a devnet of its own.
func weightRun(t *testing.T, spec devnet.LoadSpec, blocks, catchUp uint64, rounds int) benchplot.WeightRow {
	row := benchplot.WeightRow{Load: spec.Name, Spec: spec.String(), Blocks: blocks, CatchUpBlocks: catchUp}
	relayPort := dsl.FreePort(t)
	sys := dsl.Start(t, devnet.Config{SequencerArgs: dsl.RelayArgs(relayPort), L2Accounts: weightAccounts})
	seq := sys.Sequencer.EL
	load, err := devnet.StartLoad(t.Context(), seq.EL, sys.Net.Keys.L2Accounts, spec)
	require.NoError(t, err)
	t.Cleanup(load.Stop)

	// Following the head: a stock gossip node (the anchor), a replicator on the sequencer's op-geth over ws, and one
	// on the sequencer's relay.
	// With OP_REPLICATOR_BENCH_PPROF (a directory), CPU profiles of each follower's op-node over the follow window
	// (follow-<load>-<id>-<n>.pprof): where a replicator's CPU beyond the gossip node's goes.
	profile := os.Getenv("OP_REPLICATOR_BENCH_PPROF") != ""
	pprofPorts := map[string]int{}
	pprof := func(id string) devnet.FollowerOption {
		if !profile {
			return devnet.WithNodeArgs()
		}
		pprofPorts[id] = dsl.FreePort(t)
		return devnet.WithNodeArgs("--pprof.enabled", "--pprof.addr", "127.0.0.1", "--pprof.port", strconv.Itoa(pprofPorts[id]))
	}
	followers := []*follower{
		{id: "gossip", name: "stock op-node, libp2p gossip", node: sys.AddFollower("gossip", devnet.RoleGossipFollower, devnet.WithMetrics(), pprof("gossip"))},
		{id: "rep-ws", name: "replicator, sequencer op-geth over ws", node: sys.AddReplicator("rep-ws", devnet.WithMetrics(), devnet.WithSource(seq.WS), pprof("rep-ws")).Node},
		{id: "rep-relay", name: "replicator, the sequencer's relay", node: sys.AddReplicator("rep-relay", devnet.WithMetrics(),
			devnet.WithSource(dsl.RelaySource(relayPort)), pprof("rep-relay")).Node},
	}
	for _, f := range followers[1:] {
		sys.Replicator(f.node).WaitReplicating(seq, 5)
	}
	// The gossip node must be at the head too before the window opens.
	sys.WaitFor(2*time.Minute, "the gossip node at the head", func(ctx context.Context) (bool, error) {
		h, err := followers[0].node.EL.BlockNumber(ctx)
		return err == nil && h+2 >= seq.NumberAt(rpc.LatestBlockNumber), err
	})
	if profile {
		require.NoError(t, os.MkdirAll(os.Getenv("OP_REPLICATOR_BENCH_PPROF"), 0o755))
	}
	var stopProfiles []func()
	for _, f := range followers {
		if port, ok := pprofPorts[f.id]; ok {
			stopProfiles = append(stopProfiles, captureProfiles(t, port, fmt.Sprintf("follow-%s-%s", spec.Name, f.id)))
		}
	}
	machine0 := snapshotCPU(t, sys.Net)
	start, elapsed := followWindow(t, sys, followers, blocks, nil, false)
	for _, stop := range stopProfiles {
		stop()
	}
	row.MachineCoresBusyFollow = (machineBusy() - machine0.busy).Seconds() / time.Since(machine0.at).Seconds()
	stats := make([]followStats, len(followers))
	for i, f := range followers {
		stats[i] = f.stats(t, blocks)
	}
	gossip, relay := followers[0], followers[2]
	row.GossipP50, row.GossipP99 = ms(stats[0].p50), ms(stats[0].p99)
	row.GossipBeyondInsertP50, row.GossipBeyondInsertP99 = ms(stats[0].b50), ms(stats[0].b99)
	row.WSBeyondInsertP50, row.WSBeyondInsertP99 = ms(stats[1].b50), ms(stats[1].b99)
	row.RelayBeyondInsertP50, row.RelayBeyondInsertP99 = ms(stats[2].b50), ms(stats[2].b99)
	row.GossipCPUPer100 = stats[0].cpuPer100
	row.WSCPURatio, row.RelayCPURatio = ratio(stats[1].cpuPer100, stats[0].cpuPer100), ratio(stats[2].cpuPer100, stats[0].cpuPer100)
	var inserts []time.Duration
	for _, d := range gossip.inserts {
		inserts = append(inserts, d)
	}
	row.GossipInsertP50 = ms(percentile(inserts, 50))
	if d, ok := comparePercentiles(relay.lags, gossip.lags); ok {
		row.RelayVsGossipP50, row.RelayVsGossipP50Lo, row.RelayVsGossipP50Hi = ms(d.p50), ms(d.p50Lo), ms(d.p50Hi)
		row.RelayVsGossipP99, row.RelayVsGossipP99Lo, row.RelayVsGossipP99Hi = ms(d.p99), ms(d.p99Lo), ms(d.p99Hi)
	}
	transfers, calls := load.Sent()
	t.Logf("%s: follow window of %d blocks in %s; sent %d transfers and %d calls so far, %d failed",
		spec.Name, blocks, elapsed.Round(time.Second), transfers, calls, load.Failed())
	// Sizes over the window's last sizedBlocks blocks, which the sequencer's relay still holds (its window is
	// 1,024 blocks: a longer follow window starts below it).
	weightBlockSizes(t, sys, relayPort, start+blocks-min(blocks, sizedBlocks)+1, start+blocks, &row)
	for _, f := range followers {
		require.NoError(t, f.node.Stop(), "stop %s", f.id)
	}

	// Catching up to block catchUp, whose batches L1 must have for the stock node.
	target := catchUp
	waitSequencer(sys, target, true)
	want := seq.HashAt(rpc.BlockNumber(target))
	envs, err := sys.Net.FetchPayloads(t.Context(), sys.Net.Sequencer.EL, 1, target)
	require.NoError(t, err)
	var per32 []devnet.ReplayResult
	var stock, rep, relayRep []catchUpResult
	// With OP_REPLICATOR_BENCH_PPROF, CPU profiles of the replicators' op-nodes over their catch-ups too.
	for round := range rounds {
		per32 = append(per32, replayCeiling(t, sys, envs, 32, fmt.Sprintf("ceiling-fcu32-%d", round+1)))
		stock = append(stock, measureCatchUp(t, sys, fmt.Sprintf("stock-%d", round+1), "stock op-node, L1 derivation only",
			devnet.RoleVerifier, target, want, false))
		rep = append(rep, measureCatchUp(t, sys, fmt.Sprintf("catchup-ws-%s-%d", spec.Name, round+1), "replicator, sequencer op-geth over ws",
			devnet.RoleReplicator, target, want, profile, devnet.WithSource(seq.WS)))
		// The sequencer's relay holds the last 1024 heights it signed.
		if head := seq.NumberAt(rpc.LatestBlockNumber); head > 1000 {
			t.Logf("relay catch-up skipped: the relay's window no longer holds block 1 (head %d)", head)
		} else {
			relayRep = append(relayRep, measureCatchUp(t, sys, fmt.Sprintf("catchup-relay-%s-%d", spec.Name, round+1), "replicator, the sequencer's relay",
				devnet.RoleReplicator, target, want, profile, devnet.WithSource(dsl.RelaySource(relayPort))))
		}
	}
	_, row.Ceiling32 = replayRates(per32)
	row.Stock, row.WS, row.Relay = meanSteady(stock), meanSteady(rep), meanSteady(relayRep)
	row.WSVsRoundCeiling, row.RelayVsRoundCeiling = roundRatio(rep, per32), roundRatio(relayRep, per32)
	for i := range per32 {
		relayRate := "–"
		if i < len(relayRep) {
			relayRate = fmt.Sprintf("%.1f", relayRep[i].steadyRate())
		}
		t.Logf("%s: round %d: ceiling %.1f, stock %.1f, ws %.1f, relay %s blocks/s", spec.Name, i+1,
			per32[i].SteadyBlocksPerSecond(), stock[i].steadyRate(), rep[i].steadyRate(), relayRate)
	}
	t.Logf("%s: catch-up to %d: ceiling %.1f, stock %.1f, ws %.1f, relay %.1f blocks/s; ceiling CPU: %s; ws steady CPU: %s",
		spec.Name, target, row.Ceiling32, row.Stock, row.WS, row.Relay, per32[0].CPU, rep[0].cpuSteady)
	return row
}

// ratio is a/b, 0 where b is 0 (JSON has no infinity).
func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// roundRatio is the mean, over rs's rounds, of each round's steady rate over that round's ceiling (rs[i] ran in
// round i+1: a path skipped in a round is skipped in every later one); 0 without rounds.
func roundRatio(rs []catchUpResult, ceilings []devnet.ReplayResult) float64 {
	var sum float64
	var n int
	for i, r := range rs {
		if i < len(ceilings) && ceilings[i].SteadyBlocksPerSecond() > 0 {
			sum, n = sum+r.steadyRate()/ceilings[i].SteadyBlocksPerSecond(), n+1
		}
	}
	if n == 0 {
		return 0
	}
	return sum / float64(n)
}

func meanSteady(rs []catchUpResult) float64 {
	if len(rs) == 0 {
		return 0
	}
	var sum float64
	for _, r := range rs {
		sum += r.steadyRate()
	}
	return sum / float64(len(rs))
}

// sizedBlocks is how many blocks, at most, weightBlockSizes reads: the default follow window.
const sizedBlocks = 240

// weightBlockSizes sets row's means over the blocks from..to: gas, user transactions, the block's RLP and what each
// path carries per block. gossip: the gossip message's data (snappy of the 65-byte signature and the SSZ payload
// envelope, as op-node publishes it); relay: the relay's message for the block (relay_envelopeByNumber's answer, which
// a subscriber gets inside its notification); ws: the newHeads notification (its header as JSON, plus ~100 bytes of
// subscription envelope) and the answer to debug_getRawBlock (the block's RLP as hex in JSON).
func weightBlockSizes(t *testing.T, sys *dsl.System, relayPort int, from, to uint64, row *benchplot.WeightRow) {
	t.Helper()
	seq := sys.Sequencer.EL
	envs, err := sys.Net.FetchPayloads(t.Context(), sys.Net.Sequencer.EL, from, to)
	require.NoError(t, err)
	relayClient := sys.DialRelay(relayPort)
	var gas, txs, rlpBytes, gossipBytes, relayBytes, wsBytes float64
	for _, env := range envs {
		p := env.ExecutionPayload
		n := uint64(p.BlockNumber)
		gas += float64(p.GasUsed)
		for _, tx := range p.Transactions {
			if len(tx) > 0 && tx[0] != types.DepositTxType {
				txs++
			}
		}
		var ssz bytes.Buffer
		_, err := env.MarshalSSZ(&ssz)
		require.NoError(t, err)
		gossipBytes += float64(len(snappy.Encode(nil, append(make([]byte, 65), ssz.Bytes()...))))

		raw, err := relayClient.EnvelopeByNumberRaw(t.Context(), n)
		require.NoError(t, err, "relay_envelopeByNumber(%d)", n)
		relayBytes += float64(len(raw))

		var block json.RawMessage
		require.NoError(t, seq.RPC.CallContext(t.Context(), &block, "debug_getRawBlock", hexutil.EncodeUint64(n)))
		rlpBytes += float64(len(block)-4) / 2 // "0x…" in quotes
		h, err := seq.HeaderByNumber(t.Context(), new(big.Int).SetUint64(n))
		require.NoError(t, err)
		hj, err := json.Marshal(h)
		require.NoError(t, err)
		wsBytes += float64(len(hj)+100) + float64(len(block)+len(`{"jsonrpc":"2.0","id":1,"result":}`))
	}
	k := float64(len(envs))
	row.GasPerBlock, row.TxsPerBlock = gas/k, txs/k
	row.RLPBytes, row.GossipBytes, row.RelayBytes, row.WSBytes = rlpBytes/k, gossipBytes/k, relayBytes/k, wsBytes/k
	last := envs[len(envs)-1].ExecutionPayload
	row.BaseFeeGweiEnd = (*uint256.Int)(&last.BaseFeePerGas).Float64() / 1e9
}
