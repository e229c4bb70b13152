//go:build bench

package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ethereum/go-ethereum/rpc"

	"github.com/ethereum-optimism/optimism/op-service/eth"

	"github.com/op-replicator/op-replicator/e2e/devnet"
	"github.com/op-replicator/op-replicator/e2e/dsl"
)

// ceilings replays the sequencer's blocks 1..target into fresh op-geths, rounds times each, alternating: with a
// forkchoice update per block, and with one per 32 blocks.
func ceilings(t *testing.T, sys *dsl.System, target uint64, rounds int) (perBlock, per32 []devnet.ReplayResult) {
	t.Helper()
	fetchStart := time.Now()
	envs, err := sys.Net.FetchPayloads(t.Context(), sys.Net.Sequencer.EL, 1, target)
	require.NoError(t, err)
	t.Logf("fetched %d payloads in %s", len(envs), time.Since(fetchStart).Round(time.Millisecond))
	return ceilingsOf(t, sys, envs, rounds)
}

// ceilingsOf is ceilings with the payloads (the sequencer's blocks 1..target) already fetched.
func ceilingsOf(t *testing.T, sys *dsl.System, envs []*eth.ExecutionPayloadEnvelope, rounds int) (perBlock, per32 []devnet.ReplayResult) {
	t.Helper()
	for round := range rounds {
		fcu1, fcu32 := ceilingRound(t, sys, envs, round+1)
		perBlock, per32 = append(perBlock, fcu1), append(per32, fcu32)
	}
	return perBlock, per32
}

// ceilingRound replays envs once with a forkchoice update per block, then once with one per 32 blocks, each into a
// fresh op-geth.
func ceilingRound(t *testing.T, sys *dsl.System, envs []*eth.ExecutionPayloadEnvelope, round int) (perBlock, per32 devnet.ReplayResult) {
	t.Helper()
	perBlock = replayCeiling(t, sys, envs, 1, fmt.Sprintf("ceiling-fcu1-%d", round))
	per32 = replayCeiling(t, sys, envs, 32, fmt.Sprintf("ceiling-fcu32-%d", round))
	return perBlock, per32
}

// replayCeiling replays envs into a fresh op-geth called name, with a forkchoice update every every blocks, checks
// its head, stops it and returns the replay's rate and where the machine's CPU went meanwhile.
func replayCeiling(t *testing.T, sys *dsl.System, envs []*eth.ExecutionPayloadEnvelope, every int, name string) devnet.ReplayResult {
	t.Helper()
	return replayCeilingOn(t, sys, envs, every, name, false)
}

// replayCeilingOn is replayCeiling, on geth's default HTTP client if defaultClient (Engine.ReplayDefaultClient).
func replayCeilingOn(t *testing.T, sys *dsl.System, envs []*eth.ExecutionPayloadEnvelope, every int, name string, defaultClient bool) devnet.ReplayResult {
	t.Helper()
	e := sys.StartEngine(name)
	before := snapshotCPU(t, sys.Net, e.OpGeth)
	stopGethProfile := gethProfile(t, e.EL.EL, name)
	replay := e.Replay
	if defaultClient {
		replay = e.ReplayDefaultClient
	}
	res, err := replay(t.Context(), envs, every)
	stopGethProfile()
	require.NoError(t, err)
	res.CPU = cpuSince(before, snapshotCPU(t, sys.Net, e.OpGeth))
	require.Equal(t, envs[len(envs)-1].ExecutionPayload.BlockHash, e.EL.HashAt(rpc.LatestBlockNumber), "%s: head after the replay", name)
	require.NoError(t, e.Stop())
	t.Logf("%s: %d blocks in %s: %.1f blocks/s, %.1f over the steady part; CPU: %s", name, res.Blocks,
		res.Elapsed.Round(time.Millisecond), res.BlocksPerSecond(), res.SteadyBlocksPerSecond(), res.CPU)
	return res
}

// replayRates lists the replays' rates over their steady part (from a tenth of the way, as a catch-up's; since
// a412567, before which the whole replay counted) and returns their mean.
func replayRates(rs []devnet.ReplayResult) (string, float64) {
	var out []float64
	for _, r := range rs {
		out = append(out, r.SteadyBlocksPerSecond())
	}
	return rates(out)
}

// fetchingCeilings replays the sequencer's blocks 1..target into fresh op-geths, rounds times, fetching them from
// the sequencer's op-geth while replaying (Devnet.ReplayFetching, as the ws replicator's prefetcher fetches) with one
// forkchoice update per 32 blocks: the engine's ceiling when its source shares the machine.
func fetchingCeilings(t *testing.T, sys *dsl.System, target uint64, rounds int) []devnet.ReplayResult {
	t.Helper()
	// As the replicator's prefetcher: 16 requests in flight (source.MaxInFlight), two batches of 32 ahead.
	const inFlight, lookahead = 16, 64
	var out []devnet.ReplayResult
	for round := range rounds {
		name := fmt.Sprintf("ceiling-fetching-%d", round+1)
		e := sys.StartEngine(name)
		before := snapshotCPU(t, sys.Net, e.OpGeth)
		res, err := sys.Net.ReplayFetching(t.Context(), e.Engine, sys.Net.Sequencer.EL, 1, target, 32, inFlight, lookahead)
		require.NoError(t, err)
		res.CPU = cpuSince(before, snapshotCPU(t, sys.Net, e.OpGeth))
		head := e.EL.HashAt(rpc.LatestBlockNumber)
		require.Equal(t, sys.Sequencer.EL.HashAt(rpc.BlockNumber(target)), head, "%s: head after the replay", name)
		require.NoError(t, e.Stop())
		t.Logf("%s: %d blocks in %s: %.1f blocks/s, %.1f over the steady part; CPU: %s", name, res.Blocks,
			res.Elapsed.Round(time.Millisecond), res.BlocksPerSecond(), res.SteadyBlocksPerSecond(), res.CPU)
		out = append(out, res)
	}
	return out
}

// ceilingRows writes the two ceiling rows, and returns the mean of the per-32 ceiling (the anchor).
func ceilingRows(out *strings.Builder, perBlock, per32 []devnet.ReplayResult) float64 {
	list1, mean1 := replayRates(perBlock)
	list32, mean32 := replayRates(per32)
	fmt.Fprintf(out, "| engine ceiling: prefetched, `newPayload` + forkchoice update per block | %s | %.2f× | %d blocks from genesis, counted from a tenth of the way; each round a fresh op-geth |\n",
		list1, mean1/mean32, perBlock[0].Blocks)
	fmt.Fprintf(out, "| engine ceiling: prefetched, one forkchoice update per 32 blocks | %s | 1.00× (anchor) | |\n", list32)
	return mean32
}
