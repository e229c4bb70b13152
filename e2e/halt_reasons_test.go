package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/rpc"

	"github.com/op-replicator/op-replicator/e2e/devnet"
	"github.com/op-replicator/op-replicator/e2e/dsl"
	"github.com/op-replicator/op-replicator/plugin/api"
)

// TestTamperedBlockHalts gives a replicator a source that serves blocks with a wrong state root (and
// self-consistent hashes) from a height on. The replicator must execute the first such block, find it
// INVALID and halt with invalid-payload, logging the halt at error level, without the tampered block ever
// reaching its engine's chain. Within a second of the halt, its op-geth's latest block is one derivation produced
// (sampled every 100 ms across the halt). While it stays halted (manual policy), it must be a plain L1 verifier: its safe
// head advances by derivation, and its latest block is never ahead of an L1-only verifier's, although it
// is then connected to the sequencer by P2P and receives (and drops) the sequencer's gossip.
//
// The replicator is connected to gossip only after the halt: with gossip from the start, the sequencer's
// genuine block at the tampered height arrives by gossip before the replicator polls its source, and the
// source's tampered block at that height is then a head-mismatch, not a block the replicator executes.
func TestTamperedBlockHalts(t *testing.T) {
	sys := dsl.Start(t, devnet.Config{})
	seq := sys.Sequencer.EL
	proxy := sys.NewProxy(seq.HTTP)
	rep := sys.AddReplicator("replicator", devnet.WithSource(proxy.URL),
		devnet.WithHaltPolicy("manual"), devnet.WithP2PUnpeered(), devnet.WithMetrics())
	verifier := sys.AddFollower("verifier", devnet.RoleVerifier)
	sys.StartTxLoad(seq)

	rep.WaitReplicating(seq, 10)
	from := seq.NumberAt(rpc.LatestBlockNumber) + 3
	stopSampling := rep.SampleHeads() // op-geth's latest, every 100 ms across the halt
	proxy.TamperFrom(from)
	t.Logf("the source tampers with blocks from %d on", from)

	st := rep.WaitHalted(api.ReasonInvalidPayload)
	rep.RequireHaltLogged(api.ReasonInvalidPayload)
	// The block the replicator was offered, as the source serves it: not the sequencer's.
	tampered := sys.DialEL(proxy.URL).HashAt(rpc.BlockNumber(from))
	require.NotEqual(t, seq.HashAt(rpc.BlockNumber(from)), tampered, "the source did not tamper with block %d", from)
	require.Contains(t, st.HaltDetail, tampered.Hex()[2:], "the halt is not about the tampered block")
	rep.EL.RequireNoBlock(tampered, "the tampered block")

	// The L1-only verifier started later: let it catch up with the replicator's derivation once, so that it is a
	// reference for what derivation alone can know.
	sys.WaitFor(dsl.ReplicationTimeout, "the verifier to catch up with the halted replicator",
		func(ctx context.Context) (bool, error) {
			mine, err := rep.EL.BlockNumber(ctx)
			if err != nil {
				return false, err
			}
			ref, err := verifier.EL.BlockNumber(ctx)
			return err == nil && ref >= mine, err
		})

	// Halted, the replicator takes nothing from gossip either.
	rep.Connect(sys.Sequencer)
	startSafe := rep.EL.NumberAt(rpc.SafeBlockNumber)
	sys.SampleFor(20*time.Second, func() {
		rep.RequireState(api.StateHalted) // the manual policy: no resume
		rep.RequireNoUnsafeBeyondDerived()
		latest := rep.EL.NumberAt(rpc.LatestBlockNumber)
		rep.EL.RequireSameBlocks(seq, latest, latest)
		verifier.EL.RequireReaches(rpc.LatestBlockNumber, latest, "the halted replicator's latest block")
	})
	rep.EL.RequireNoBlock(tampered, "the tampered block")
	// Users of its op-geth never saw the replicated blocks above the safe head after the halt.
	stopSampling().RequireHaltHeld(st.Since, 15*time.Second, seq)
	endSafe := rep.EL.NumberAt(rpc.SafeBlockNumber)
	require.Greater(t, endSafe, startSafe+4, "derivation did not go on while halted")
	dropped := rep.Metric(dsl.MetricGossipDropped)
	require.Positive(t, dropped, "no gossiped block reached the halted replicator")
	t.Logf("while halted: safe head %d -> %d, %v gossiped blocks dropped", startSafe, endSafe, dropped)
}

// TestConflictingChainHaltsWithHeadMismatch switches a replicator's source, once it replicates the sequencer's chain, to a second
// sequencer that built other blocks at the same heights (an equivocating sequencer). The replicator must halt
// with head-mismatch, and none of the second sequencer's own blocks may ever enter its chain: its latest block
// stays the first sequencer's.
func TestConflictingChainHaltsWithHeadMismatch(t *testing.T) {
	sys := dsl.Start(t, devnet.Config{})
	seq := sys.Sequencer.EL
	other := sys.AddSequencer("sequencer-b")
	proxy := sys.NewProxy(seq.HTTP)
	rep := sys.AddReplicator("replicator", devnet.WithSource(proxy.URL), devnet.WithHaltPolicy("manual"))
	sys.StartTxLoad(seq) // the second sequencer gets none of these: its blocks differ

	rep.WaitReplicating(seq, 10)
	// Batching stops, so that the safe heads stand still: the replicator's head then moves away from them, and the
	// second sequencer's own blocks above its safe head stay its own. With batching on, the safe heads trailed the
	// unsafe ones by as few as 3 blocks for the whole wait below on a busy machine (a CI run), short of its margin.
	sys.SetBatching(false)
	// The second sequencer's own blocks: those above its safe head that the first sequencer does not have.
	var equivocated []common.Hash
	sys.WaitFor(dsl.ReplicationTimeout, "the second sequencer to have blocks of its own at the replicator's height",
		func(ctx context.Context) (bool, error) {
			repHead, err := rep.EL.BlockID(ctx, rpc.LatestBlockNumber)
			if err != nil {
				return false, err
			}
			otherSafe, err := other.EL.BlockID(ctx, rpc.SafeBlockNumber)
			if err != nil {
				return false, err
			}
			otherHead, err := other.EL.BlockID(ctx, rpc.LatestBlockNumber)
			if err != nil || otherHead.Number < repHead.Number {
				return false, err
			}
			nums := devnet.NumberRange(otherSafe.Number+1, otherHead.Number)
			theirs, err := other.EL.HashesAt(ctx, nums)
			if err != nil {
				return false, err
			}
			ours, err := seq.HashesAt(ctx, nums)
			if err != nil {
				return false, err
			}
			equivocated = equivocated[:0]
			for i := range nums {
				if theirs[i] != ours[i] {
					equivocated = append(equivocated, theirs[i])
				}
			}
			// A margin of blocks: the second sequencer derives the first one's batches too, and once its safe head
			// reaches the replicator's head it builds on that block, and a switch then finds no mismatch.
			return otherSafe.Number+3 < repHead.Number && len(equivocated) > 0, nil
		})

	proxy.SetUpstream(other.EL.HTTP)
	rep.WaitHalted(api.ReasonHeadMismatch)
	rep.RequireHaltLogged(api.ReasonHeadMismatch)
	sys.SampleFor(10*time.Second, func() {
		latest := rep.EL.NumberAt(rpc.LatestBlockNumber)
		rep.EL.RequireSameBlocks(seq, latest, latest)
	})
	for _, h := range equivocated {
		rep.EL.RequireNoBlock(h, "a block only the second sequencer built")
	}
	t.Logf("none of the second sequencer's %d own blocks reached the replicator", len(equivocated))
}

// TestDerivationContradictsUnsafeChain makes L1 contradict a replicator's unsafe chain. With batching off, the
// replicator replicates a second sequencer's chain (which differs from the batched one); that sequencer then
// stops, and batching resumes: the first sequencer's batches reach L1 and the replicator's own derivation
// replaces the replicated blocks. The replicator must see op-node's reorg and halt with unsafe-reorg, and its
// safe chain must then be the first sequencer's.
//
// The second sequencer is stopped before batching resumes: its own derivation would otherwise reorg its chain
// too, and the replicator could see that (a head-mismatch) first.
func TestDerivationContradictsUnsafeChain(t *testing.T) {
	sys := dsl.Start(t, devnet.Config{})
	sys.SetBatching(false)
	seq := sys.Sequencer.EL
	other := sys.AddSequencer("sequencer-b")
	sys.StartTxLoad(seq) // the second sequencer gets none of these: its blocks differ
	rep := sys.AddReplicator("replicator", devnet.WithSource(other.EL.HTTP), devnet.WithHaltPolicy("manual"))

	st := rep.WaitReplicating(other.EL, 15)
	require.Zero(t, st.Safe.Number, "blocks were batched")
	require.NotEqual(t, seq.HashAt(rpc.BlockNumber(st.LastReplicated.Number)), st.LastReplicated.Hash,
		"the replicated chain is the batched one: nothing to contradict")

	require.NoError(t, other.OpNode.Stop()) // its op-geth keeps serving the chain as it is
	frozenNum := other.EL.NumberAt(rpc.LatestBlockNumber)
	sys.WaitFor(dsl.ReplicationTimeout, "the replicator to replicate the second sequencer's last block",
		func(ctx context.Context) (bool, error) {
			latest, err := rep.EL.BlockID(ctx, rpc.LatestBlockNumber)
			return err == nil && latest.Number >= frozenNum, err
		})
	rep.EL.RequireSameBlocks(other.EL, 1, frozenNum)
	rep.RequireRunning()

	sys.SetBatching(true)
	rep.WaitHalted(api.ReasonUnsafeReorg)
	rep.RequireHaltLogged(api.ReasonUnsafeReorg)
	sys.WaitFor(time.Minute, "the replicator's safe head to pass the replicated blocks",
		func(ctx context.Context) (bool, error) {
			safe, err := rep.EL.BlockID(ctx, rpc.SafeBlockNumber)
			return err == nil && safe.Number > frozenNum, err
		})
	// The replicated blocks were replaced, in the canonical chain, by the first sequencer's.
	rep.EL.RequireSameBlocks(seq, 1, rep.EL.NumberAt(rpc.SafeBlockNumber))
	rep.RequireState(api.StateHalted) // the manual policy: no resume
}

// TestStartupCheckHalts restarts a replicator whose engine holds another chain than its source at the source's
// height: with batching off, it replicates a second sequencer's chain; while its op-node is stopped, its
// source is switched to the first sequencer. Starting again, it must halt with head-mismatch before
// replicating anything.
func TestStartupCheckHalts(t *testing.T) {
	sys := dsl.Start(t, devnet.Config{})
	sys.SetBatching(false)
	seq := sys.Sequencer.EL
	other := sys.AddSequencer("sequencer-b")
	sys.StartTxLoad(seq)
	proxy := sys.NewProxy(other.EL.HTTP)
	rep := sys.AddReplicator("replicator", devnet.WithSource(proxy.URL), devnet.WithHaltPolicy("manual"))

	st := rep.WaitReplicating(other.EL, 5)
	require.NotEqual(t, seq.HashAt(rpc.BlockNumber(st.LastReplicated.Number)), st.LastReplicated.Hash,
		"the second sequencer's chain is the first one's: nothing to disagree about")

	require.NoError(t, rep.OpNode.Stop())
	head := rep.EL.HeaderAt(rpc.LatestBlockNumber)
	require.NotEqual(t, seq.HashAt(rpc.BlockNumber(head.Number.Uint64())), head.Hash(),
		"the replicator's head is the first sequencer's block")
	proxy.SetUpstream(seq.HTTP)
	restarted := time.Now()
	rep.StartAgain()

	st = rep.WaitHalted(api.ReasonHeadMismatch)
	require.True(t, st.Since.After(restarted), "halted at %s, before the restart at %s", st.Since, restarted)
	rep.RequireHaltLogged(api.ReasonHeadMismatch)
	rep.RequireNoUnsafeBeyondDerived()
}
