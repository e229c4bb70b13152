package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ethereum/go-ethereum/rpc"

	"github.com/ethereum-optimism/optimism/op-service/eth"

	"github.com/op-replicator/op-replicator/e2e/devnet"
	"github.com/op-replicator/op-replicator/e2e/dsl"
	"github.com/op-replicator/op-replicator/plugin/api"
)

// forgedBlocks is how many blocks with a redirected transfer the forging source must have served before the test
// checks that none of them went in.
const forgedBlocks = 5

// TestForgedBlocksFromAnUnsignedSourceNeverGoIn has a proxy in front of the sequencer's op-geth serve, from a
// height on, blocks in which a user transfer goes to another recipient (re-signed by its sender: same nonce, gas,
// fees and value), with the state root a scratch engine computes for them and the later blocks relinked: blocks
// that execute VALID, use the same gas and obey every derivation rule, which nothing but the sequencer's signature
// tells from the sequencer's. Two replicators take it as an
// RPC source: one with --replicator.require-signature, its signed blocks from a relay that serves the sequencer's
// blocks two behind its head (so that the forged block always arrives first), and one with --replicator.quorum 2
// beside two honest RPC sources slower than the forger. Neither ever hands a forged block to its op-geth, neither
// halts, both follow the sequencer's chain, and both set the forger aside (replicator_status).
func TestForgedBlocksFromAnUnsignedSourceNeverGoIn(t *testing.T) {
	sys := dsl.Start(t, devnet.Config{})
	seq := sys.Sequencer.EL
	sys.StartTxLoad(seq)
	forger := sys.NewProxy(seq.HTTP)
	slowRelay := startFakeRelay(t, sys.Net.L2.Rollup, seq.HTTP, sys.Net.Keys.SequencerP2P)
	slowRelay.behind = 2
	honestA, honestB := sys.NewProxy(seq.HTTP), sys.NewProxy(seq.HTTP)
	honestA.SetDelay(150 * time.Millisecond)
	honestB.SetDelay(150 * time.Millisecond)

	signedOnly := sys.AddReplicator("signed-only", devnet.WithSource(forger.URL+","+slowRelay.URL),
		devnet.WithNodeArgs("--replicator.require-signature"))
	quorum := sys.AddReplicator("quorum", devnet.WithSource(forger.URL+","+honestA.URL+","+honestB.URL),
		devnet.WithNodeArgs("--replicator.quorum=2"))
	reps := []*dsl.Replicator{signedOnly, quorum}
	for _, rep := range reps {
		rep.WaitReplicating(seq, 3)
	}

	// The sequencer's own op-geth is the scratch engine: it holds every parent's state, and keeps the forged blocks
	// as side blocks.
	forging, err := devnet.NewForger(t.Context(), sys.Sequencer.EngineURL, sys.Sequencer.JWT, sys.Net.L2.Rollup, sys.Net.Keys.L2Accounts)
	require.NoError(t, err)
	forger.SetForger(forging)
	from := seq.NumberAt(rpc.LatestBlockNumber) + 2
	forger.TamperFromWith(from, devnet.TamperRedirectTransfer)
	sys.WaitFor(dsl.ReplicationTimeout, "the forger to serve blocks with a redirected transfer",
		func(context.Context) (bool, error) { return len(forger.Forged()) >= forgedBlocks, nil })
	for _, rep := range reps {
		head := rep.WaitReachesHead(seq)
		rep.RequireRunning()
		rep.EL.RequireSameBlocks(seq, from, head.Number)
		for _, h := range forger.Forged() {
			rep.EL.RequireNoBlock(h, "a block with a redirected transfer")
		}
		forged := sourceHealth(t, rep.Status(), forger.URL)
		require.Positive(t, forged.Errors, "%s never caught the forger", rep.Name)
		require.Regexp(t, "where the sequencer signed|than a quorum of 2", forged.LastError)
		require.False(t, forged.Signed)
		t.Logf("%s: forger %s: %d errors, last: %s", rep.Name, forged.Name, forged.Errors, forged.LastError)
	}
	t.Logf("%d forged blocks served, none inserted", len(forger.Forged()))
	for _, rep := range reps {
		balance, err := rep.EL.BalanceAt(t.Context(), devnet.ForgedRecipient, nil)
		require.NoError(t, err)
		require.Zero(t, balance.Sign(), "%s: the forged recipient got value", rep.Name)
	}
}

// sourceHealth returns the standing of the source at url in a replicator's status.
func sourceHealth(t *testing.T, st *api.Status, url string) api.SourceHealth {
	t.Helper()
	for _, s := range st.Sources {
		if strings.TrimSuffix(s.Name, "/") == strings.TrimSuffix(url, "/") {
			return s
		}
	}
	require.FailNow(t, "no such source", "%s not in %+v", url, st.Sources)
	return api.SourceHealth{}
}

// TestFreshNodeFollowingAReplayingRelayKeepsRunning starts a replicator whose safe head is genesis (no batch is
// posted) on the sequencer's relay and on a relay that replays, as soon as it is subscribed to, an old pair the
// sequencer really signed at height 10 (the sequencer's block, and another one it "signed" there: a stand-in
// signed with the devnet sequencer's key). The pair is above the fresh node's safe head, but older than gossip's
// 60 s age window: it is history, not equivocation evidence. The replicator keeps running and follows the
// sequencer's chain, block 10 included.
func TestFreshNodeFollowingAReplayingRelayKeepsRunning(t *testing.T) {
	seqRelay := dsl.FreePort(t)
	sys := dsl.Start(t, devnet.Config{SequencerArgs: dsl.RelayArgs(seqRelay),
		L2GenesisAge: 3 * time.Minute, BatcherStopped: true})
	seq := sys.Sequencer.EL
	sys.StartTxLoad(seq)
	sys.WaitFor(dsl.ReplicationTimeout, "the sequencer to build block 20", func(ctx context.Context) (bool, error) {
		head, err := seq.BlockID(ctx, rpc.LatestBlockNumber)
		return err == nil && head.Number >= 20, err
	})
	replayer := startFakeRelay(t, sys.Net.L2.Rollup, seq.HTTP, sys.Net.Keys.SequencerP2P)
	genuine, err := replayer.signed(t.Context(), 10)
	require.NoError(t, err)
	replayer.replay = append(replayer.replay, genuine, oldVariant(t, replayer, 10, 0))
	replayer.replayGate = make(chan struct{})
	close(replayer.replayGate) // at once: while the replicator's safe head is genesis
	age := time.Since(time.Unix(int64(genuine.Envelope.ExecutionPayload.Timestamp), 0))
	require.Greater(t, age, time.Minute, "block 10 must be older than gossip's age window")

	rep := sys.AddReplicator("fresh", devnet.WithHaltPolicy("manual"), devnet.WithMetrics(),
		devnet.WithSource(dsl.RelaySource(seqRelay)+","+replayer.URL))
	sys.WaitFor(dsl.ReplicationTimeout, "the replayed pair to be taken as a replay", rep.MetricIs(dsl.AtLeast(1), dsl.MetricReplaysDropped))
	require.Equal(t, eth.BlockID{Hash: sys.Net.L2.Rollup.Genesis.L2.Hash}, eth.BlockID{Hash: rep.EL.HashAt(rpc.SafeBlockNumber)},
		"the replicator's safe head is genesis: the pair is above it")
	head := rep.WaitReachesHead(seq)
	rep.EL.RequireSameBlocks(seq, 1, head.Number)
	sys.SampleFor(5*time.Second, func() {
		st := rep.Status()
		require.Equal(t, api.StateRunning, st.State, "a replayed pair halted a fresh replicator: %s %s", st.HaltReason, st.HaltDetail)
	})
	require.Empty(t, rep.EquivocationEvidence(), "a replayed pair was taken as equivocation evidence")
}
