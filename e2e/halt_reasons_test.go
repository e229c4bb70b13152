package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/rpc"

	"github.com/op-replicator/op-replicator/e2e/devnet"
)

// gossipDroppedMetric counts gossiped unsafe blocks a halted replicator dropped.
const gossipDroppedMetric = "op_node_default_replicator_gossip_dropped_total"

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
	d := devnet.Start(t, devnet.Config{})
	ctx := t.Context()
	seq := d.Sequencer.EL
	proxy := newProxy(t, seq.HTTP)
	rep := addFollower(t, d, "replicator", devnet.RoleReplicator, devnet.WithSource(proxy.URL),
		devnet.WithHaltPolicy("manual"), devnet.WithP2PUnpeered(), devnet.WithMetrics())
	verifier := addFollower(t, d, "verifier", devnet.RoleVerifier)
	startTxLoad(t, d, seq)

	waitReplicating(t, d, rep, seq, 10)
	from := header(t, seq, rpc.LatestBlockNumber).Number.Uint64() + 3
	stopSampling := sampleHeads(t, rep) // op-geth's latest, every 100 ms across the halt
	proxy.TamperFrom(from)
	t.Logf("the source tampers with blocks from %d on", from)

	st := waitHalted(t, d, rep, reasonInvalidPayload)
	requireHaltLogged(t, d, rep, reasonInvalidPayload)
	// The block the replicator was offered, as the source serves it: not the sequencer's.
	source, err := devnet.DialEL(proxy.URL)
	require.NoError(t, err)
	defer source.Close()
	tampered := header(t, source, rpc.BlockNumber(from)).Hash()
	require.NotEqual(t, header(t, seq, rpc.BlockNumber(from)).Hash(), tampered, "the source did not tamper with block %d", from)
	require.Contains(t, st.HaltDetail, tampered.Hex()[2:], "the halt is not about the tampered block")
	requireNoBlock(t, rep.EL, tampered, "the tampered block")

	// The L1-only verifier started later: let it catch up with the replicator's derivation once, so that it is a
	// reference for what derivation alone can know.
	require.NoError(t, d.WaitFor(ctx, replicationTimeout, "the verifier to catch up with the halted replicator",
		func(ctx context.Context) (bool, error) {
			mine, err := rep.EL.BlockNumber(ctx)
			if err != nil {
				return false, err
			}
			ref, err := verifier.EL.BlockNumber(ctx)
			return err == nil && ref >= mine, err
		}))

	// Halted, the replicator takes nothing from gossip either.
	require.NoError(t, rep.ConnectPeer(ctx, d.Sequencer))
	startSafe := header(t, rep.EL, rpc.SafeBlockNumber).Number.Uint64()
	sampleFor(t, d, 20*time.Second, func() {
		st := status(t, rep)
		require.Equal(t, stateHalted, st.State, "the replicator resumed under the manual policy")
		requireNoUnsafeBeyondDerived(t, rep)
		latest := header(t, rep.EL, rpc.LatestBlockNumber)
		requireSameBlocks(t, rep.EL, seq, latest.Number.Uint64(), latest.Number.Uint64())
		requireNotAhead(t, d, "the halted replicator's latest block", latest.Number.Uint64(), verifier.EL, rpc.LatestBlockNumber)
	})
	requireNoBlock(t, rep.EL, tampered, "the tampered block")
	// Users of its op-geth never saw the replicated blocks above the safe head after the halt.
	requireHaltHeldInOpGeth(t, stopSampling(), st.Since, 15*time.Second, seq)
	endSafe := header(t, rep.EL, rpc.SafeBlockNumber).Number.Uint64()
	require.Greater(t, endSafe, startSafe+4, "derivation did not go on while halted")
	dropped, err := metricValue(ctx, rep.MetricsURL, gossipDroppedMetric)
	require.NoError(t, err)
	require.Positive(t, dropped, "no gossiped block reached the halted replicator")
	t.Logf("while halted: safe head %d -> %d, %v gossiped blocks dropped", startSafe, endSafe, dropped)
}

// TestConflictingChainHaltsWithHeadMismatch switches a replicator's source, once it replicates the sequencer's chain, to a second
// sequencer that built other blocks at the same heights (an equivocating sequencer). The replicator must halt
// with head-mismatch, and none of the second sequencer's own blocks may ever enter its chain: its latest block
// stays the first sequencer's.
func TestConflictingChainHaltsWithHeadMismatch(t *testing.T) {
	d := devnet.Start(t, devnet.Config{})
	ctx := t.Context()
	seq := d.Sequencer.EL
	other := addSequencer(t, d, "sequencer-b")
	proxy := newProxy(t, seq.HTTP)
	rep := addFollower(t, d, "replicator", devnet.RoleReplicator, devnet.WithSource(proxy.URL), devnet.WithHaltPolicy("manual"))
	startTxLoad(t, d, seq) // the second sequencer gets none of these: its blocks differ

	waitReplicating(t, d, rep, seq, 10)
	// The second sequencer's own blocks: those above its safe head that the first sequencer does not have.
	var equivocated []common.Hash
	require.NoError(t, d.WaitFor(ctx, replicationTimeout, "the second sequencer to have blocks of its own at the replicator's height",
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
			nums := numberRange(otherSafe.Number+1, otherHead.Number)
			theirs, err := hashesAt(ctx, other.EL, nums)
			if err != nil {
				return false, err
			}
			ours, err := hashesAt(ctx, seq, nums)
			if err != nil {
				return false, err
			}
			equivocated = equivocated[:0]
			for i := range nums {
				if theirs[i] != ours[i] {
					equivocated = append(equivocated, theirs[i])
				}
			}
			return otherSafe.Number < repHead.Number && len(equivocated) > 0, nil
		}))

	proxy.SetUpstream(other.EL.HTTP)
	waitHalted(t, d, rep, reasonHeadMismatch)
	requireHaltLogged(t, d, rep, reasonHeadMismatch)
	sampleFor(t, d, 10*time.Second, func() {
		latest := header(t, rep.EL, rpc.LatestBlockNumber).Number.Uint64()
		requireSameBlocks(t, rep.EL, seq, latest, latest)
	})
	for _, h := range equivocated {
		requireNoBlock(t, rep.EL, h, "a block only the second sequencer built")
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
	d := devnet.Start(t, devnet.Config{})
	ctx := t.Context()
	setBatching(t, d, false)
	seq := d.Sequencer.EL
	other := addSequencer(t, d, "sequencer-b")
	startTxLoad(t, d, seq) // the second sequencer gets none of these: its blocks differ
	rep := addFollower(t, d, "replicator", devnet.RoleReplicator, devnet.WithSource(other.EL.HTTP), devnet.WithHaltPolicy("manual"))

	st := waitReplicating(t, d, rep, other.EL, 15)
	require.Zero(t, st.Safe.Number, "blocks were batched")
	require.NotEqual(t, header(t, seq, rpc.BlockNumber(st.LastReplicated.Number)).Hash(), st.LastReplicated.Hash,
		"the replicated chain is the batched one: nothing to contradict")

	require.NoError(t, other.OpNode.Stop()) // its op-geth keeps serving the chain as it is
	frozenNum := header(t, other.EL, rpc.LatestBlockNumber).Number.Uint64()
	require.NoError(t, d.WaitFor(ctx, replicationTimeout, "the replicator to replicate the second sequencer's last block",
		func(ctx context.Context) (bool, error) {
			latest, err := rep.EL.BlockID(ctx, rpc.LatestBlockNumber)
			return err == nil && latest.Number >= frozenNum, err
		}))
	requireSameBlocks(t, rep.EL, other.EL, 1, frozenNum)
	require.Equal(t, stateRunning, status(t, rep).State)

	setBatching(t, d, true)
	waitHalted(t, d, rep, reasonUnsafeReorg)
	requireHaltLogged(t, d, rep, reasonUnsafeReorg)
	require.NoError(t, d.WaitFor(ctx, time.Minute, "the replicator's safe head to pass the replicated blocks",
		func(ctx context.Context) (bool, error) {
			safe, err := rep.EL.BlockID(ctx, rpc.SafeBlockNumber)
			return err == nil && safe.Number > frozenNum, err
		}))
	// The replicated blocks were replaced, in the canonical chain, by the first sequencer's.
	safe := header(t, rep.EL, rpc.SafeBlockNumber).Number.Uint64()
	requireSameBlocks(t, rep.EL, seq, 1, safe)
	require.Equal(t, stateHalted, status(t, rep).State, "the replicator resumed under the manual policy")
}

// TestStartupCheckHalts restarts a replicator whose engine holds another chain than its source at the source's
// height: with batching off, it replicates a second sequencer's chain; while its op-node is stopped, its
// source is switched to the first sequencer. Starting again, it must halt with head-mismatch before
// replicating anything.
func TestStartupCheckHalts(t *testing.T) {
	d := devnet.Start(t, devnet.Config{})
	ctx := t.Context()
	setBatching(t, d, false)
	seq := d.Sequencer.EL
	other := addSequencer(t, d, "sequencer-b")
	startTxLoad(t, d, seq)
	proxy := newProxy(t, other.EL.HTTP)
	rep := addFollower(t, d, "replicator", devnet.RoleReplicator, devnet.WithSource(proxy.URL), devnet.WithHaltPolicy("manual"))

	st := waitReplicating(t, d, rep, other.EL, 5)
	require.NotEqual(t, header(t, seq, rpc.BlockNumber(st.LastReplicated.Number)).Hash(), st.LastReplicated.Hash,
		"the second sequencer's chain is the first one's: nothing to disagree about")

	require.NoError(t, rep.OpNode.Stop())
	head := header(t, rep.EL, rpc.LatestBlockNumber)
	require.NotEqual(t, header(t, seq, rpc.BlockNumber(head.Number.Uint64())).Hash(), head.Hash(),
		"the replicator's head is the first sequencer's block")
	proxy.SetUpstream(seq.HTTP)
	restarted := time.Now()
	require.NoError(t, rep.Start(ctx))

	st = waitHalted(t, d, rep, reasonHeadMismatch)
	require.True(t, st.Since.After(restarted), "halted at %s, before the restart at %s", st.Since, restarted)
	requireHaltLogged(t, d, rep, reasonHeadMismatch)
	requireNoUnsafeBeyondDerived(t, rep)
}
