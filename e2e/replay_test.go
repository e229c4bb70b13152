package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ethereum/go-ethereum/rpc"

	"github.com/ethereum-optimism/optimism/op-service/eth"
	opsigner "github.com/ethereum-optimism/optimism/op-service/signer"

	"github.com/op-replicator/op-replicator/e2e/devnet"
	"github.com/op-replicator/op-replicator/e2e/dsl"
	"github.com/op-replicator/op-replicator/plugin/api"
)

// TestRelayReplaysHaltNothing has a replicator follow the sequencer's relay and a second relay that replays old
// history the sequencer really signed (stand-ins signed with the devnet sequencer's key): a pair of different
// blocks at one height below the safe head — as an earlier unsafe reorg of the sequencer would have left — and
// 2,000 other old blocks, then the sequencer's current blocks. Equivocation means two signed blocks at a height
// above our safe head: the replays are dropped and counted, and nothing halts.
func TestRelayReplaysHaltNothing(t *testing.T) {
	const oldBlocks = 2000
	seqRelay := dsl.FreePort(t)
	sys := dsl.Start(t, devnet.Config{SequencerArgs: dsl.RelayArgs(seqRelay)})
	seq := sys.Sequencer.EL
	sys.StartTxLoad(seq)
	sys.WaitFor(time.Minute, "a safe head above block 12", func(ctx context.Context) (bool, error) {
		safe, err := seq.BlockID(ctx, rpc.SafeBlockNumber)
		return err == nil && safe.Number > 12, err
	})

	replayer := startFakeRelay(t, sys.Net.L2.Rollup, seq.HTTP, sys.Net.Keys.SequencerP2P)
	safe := seq.NumberAt(rpc.SafeBlockNumber)
	ctx := t.Context()
	// The pair at height 10: the sequencer's block and another one it "signed" there.
	genuine, err := replayer.signed(ctx, 10)
	require.NoError(t, err)
	replayer.replay = append(replayer.replay, genuine, oldVariant(t, replayer, 10, 0))
	for i := 0; i < oldBlocks; i++ {
		replayer.replay = append(replayer.replay, oldVariant(t, replayer, 1+uint64(i)%safe, i+1))
	}
	t.Logf("replaying a signed pair at height 10 and %d other blocks at heights 1-%d (safe head %d)", oldBlocks, safe, safe)

	replayer.replayGate = make(chan struct{})
	rep := sys.AddReplicator("replicator", devnet.WithHaltPolicy("manual"), devnet.WithMetrics(),
		devnet.WithSource(dsl.RelaySource(seqRelay)+","+replayer.URL))
	// The replay comes once the replicator's own safe head is past the replayed heights: a node's safe head is
	// what tells it that L1 settled a height (a node just started, still deriving, cannot know it yet).
	sys.WaitFor(dsl.ReplicationTimeout, "the replicator's safe head to pass the replayed heights",
		func(ctx context.Context) (bool, error) {
			h, err := rep.EL.BlockID(ctx, rpc.SafeBlockNumber)
			return err == nil && h.Number >= safe, err
		})
	close(replayer.replayGate)
	sys.WaitFor(dsl.ReplicationTimeout, "the replays to be dropped and counted", rep.MetricIs(dsl.AtLeast(oldBlocks+2), dsl.MetricReplaysDropped))
	rep.WaitReachesHead(seq)
	sys.SampleFor(5*time.Second, func() {
		st := rep.Status()
		require.Equal(t, api.StateRunning, st.State, "replayed history halted the replicator: %s %s", st.HaltReason, st.HaltDetail)
	})
	require.Empty(t, rep.EquivocationEvidence(), "replayed history was taken as equivocation evidence")
	rep.WaitReachesHead(seq)
	t.Logf("%v replayed blocks dropped", rep.Metric(dsl.MetricReplaysDropped))
}

// oldVariant returns the sequencer's block n changed (its prev-randao set from i, the hash recomputed) and
// signed with the relay's key: a block the sequencer could have signed at that height once.
func oldVariant(t *testing.T, f *fakeRelay, n uint64, i int) *opsigner.SignedExecutionPayloadEnvelope {
	t.Helper()
	env, err := f.l2.PayloadByNumber(t.Context(), n)
	require.NoError(t, err)
	env.ExecutionPayload.PrevRandao = eth.Bytes32{0xee, byte(i >> 8), byte(i)}
	env.ExecutionPayload.BlockHash, _ = env.CheckBlockHash()
	signed, err := f.sign(t.Context(), env)
	require.NoError(t, err, "sign block %d", n)
	return signed
}
