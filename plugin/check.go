package plugin

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ethereum/go-ethereum"

	"github.com/ethereum-optimism/optimism/op-service/eth"

	"github.com/op-replicator/op-replicator/plugin/api"
)

// The checks a round makes before it replicates anything: the local chain against op-node's view and our L1 view
// (what op-node did to the unsafe chain since the last round), and the local head against the source's.

// localHead is the local unsafe head. At the steady state op-node's view of it is the block we inserted last, and
// the engine is not asked; otherwise (derivation, gossip or a reset moved it, or op-node's status has not caught up
// with our last insert yet) the engine is.
//
// Except after op-node refused to extend the engine's head (r.refused) while op-geth's head is above op-node's: then
// op-node's head is taken. op-geth keeps a canonical block as its head when a forkchoice update names one of its
// ancestors, so derivation building from L1 a block we had already inserted above (its build began before our
// batch went in) leaves op-node's unsafe head on that block and op-geth's head above it, for good: every block on
// op-geth's head is refused, and nothing else moves either head. Going on from op-node's head re-inserts the
// blocks between, which op-geth has (VALID at once), and the forkchoice update to the last brings both heads to it.
func (r *Replicator) localHead(ctx context.Context, status *eth.SyncStatus) (eth.L2BlockRef, error) {
	refused := r.refused
	r.refused = false
	if last := r.lastReplicated(); last != (eth.L2BlockRef{}) && status.UnsafeL2 == last {
		return last, nil
	}
	head, err := r.l2.L2BlockRefByLabel(ctx, eth.Unsafe)
	if err != nil {
		return eth.L2BlockRef{}, fmt.Errorf("%w: local unsafe head: %w", errEngine, err)
	}
	if refused && head.Number > status.UnsafeL2.Number {
		r.log.Info("op-geth's head is above op-node's unsafe head, going on from op-node's", "op_geth", head.ID(),
			"op_node", status.UnsafeL2.ID())
		return status.UnsafeL2, nil
	}
	return head, nil
}

// checkHead compares the local unsafe head with the source's block at the same height (the spec's step 1), without
// a request: where the source's head is at our height, its hash is that block's; where the source is ahead, the
// next block's parent hash is compared with our head before anything is inserted (head-mismatch as well). A source
// behind us is not a disagreement: it has nothing for us yet.
func (r *Replicator) checkHead(head eth.L2BlockRef, srcHead eth.BlockID) error {
	switch {
	case srcHead.Number < head.Number:
		return fmt.Errorf("%w: the source's head %s is behind our unsafe head %s", errWait, srcHead, head.ID())
	case srcHead.Number == head.Number && srcHead.Hash != head.Hash:
		// A source's head may be the one it last announced (a newHeads notification, an http poll) rather than
		// an answer to this round: before halting on it, the source is asked again, once for this pair.
		if f, ok := r.source.(headForgetter); ok && r.rechecked != [2]eth.BlockID{head.ID(), srcHead} {
			r.rechecked = [2]eth.BlockID{head.ID(), srcHead}
			f.ForgetHead()
			return fmt.Errorf("%w: local unsafe head %s, the source announced %s at that height: asking it again",
				errStale, head.ID(), srcHead.Hash)
		}
		return disagree(api.ReasonHeadMismatch, "local unsafe head %s, source has %s at that height", head.ID(), srcHead.Hash)
	}
	r.rechecked = [2]eth.BlockID{}
	return nil
}

// headForgetter is a source whose Head may answer with the head it last announced; ForgetHead makes its next Head
// ask.
type headForgetter interface {
	ForgetHead()
}

// checkLocalChain looks at what op-node did to the unsafe chain since the last round: the last block we
// replicated must still be in the local chain, and the unsafe head's L1 origin must still be canonical on
// our L1 view. Derivation replacing an unsafe block, an engine reset dropping replicated blocks, or an L1
// reorg under them all halt.
func (r *Replicator) checkLocalChain(ctx context.Context, head eth.L2BlockRef, status *eth.SyncStatus) error {
	seen := r.watch.drain()
	last := r.lastReplicated()
	restored := r.restored
	r.restored = false
	// At the steady state the head is the last block we inserted: it is in the chain, no need to look it up.
	if last != (eth.L2BlockRef{}) && last.ID() != head.ID() {
		local, err := r.l2.L2BlockRefByNumber(ctx, last.Number)
		if err != nil && !errors.Is(err, ethereum.NotFound) {
			r.restored = restored // not looked at yet
			return fmt.Errorf("%w: local block %d: %w", errEngine, last.Number, err)
		}
		if restored && errors.Is(err, ethereum.NotFound) {
			// Replicated before a restart, and the engine no longer has a block at that height: a crashed op-geth
			// can lose its latest blocks. Nothing contradicts them; the source is compared with our head next.
			r.log.Warn("The engine lost blocks replicated before the restart", "last_replicated", last, "unsafe", head)
			r.board.publish(func(s *snapshot) { s.lastReplicated = eth.L2BlockRef{} })
		} else if err != nil || local.Hash != last.Hash {
			return r.explainLost(ctx, last, local, seen, status)
		}
	}
	if head.Number > status.SafeL2.Number {
		origin, err := r.verify.originStatus(ctx, head.L1Origin, status.HeadL1)
		if err != nil {
			return err
		}
		if !origin.unknown && !origin.canonical {
			return disagree(api.ReasonL1OriginReorged, "L1 origin %s of unsafe head %s is no longer canonical, our L1 view has %s",
				head.L1Origin, head.ID(), origin.ours.ID())
		}
		if origin.canonical {
			r.metrics.RecordUnsafeOriginDepth(status.HeadL1.Number - head.L1Origin.Number + 1)
		}
	}
	return nil
}

// explainLost names the reason a replicated block is no longer in the local chain.
func (r *Replicator) explainLost(ctx context.Context, last, local eth.L2BlockRef, seen observed, status *eth.SyncStatus) error {
	now := "nothing"
	if local != (eth.L2BlockRef{}) {
		now = local.ID().String()
	}
	if origin, err := r.verify.originStatus(ctx, last.L1Origin, status.HeadL1); err == nil && !origin.unknown && !origin.canonical {
		return disagree(api.ReasonL1OriginReorged, "replicated block %s was dropped (local chain has %s there): its L1 origin %s was reorged out",
			last.ID(), now, last.L1Origin)
	}
	if seen.derivedParent != nil && seen.derivedParent.Number < last.Number {
		return disagree(api.ReasonUnsafeReorg, "derivation from L1 replaced replicated block %s with %s (built on %s)",
			last.ID(), now, seen.derivedParent.ID())
	}
	return disagree(api.ReasonUnsafeReorg, "replicated block %s was dropped by op-node (%d engine resets; local chain has %s there)",
		last.ID(), seen.resets, now)
}

// synced is the until-synced policy's condition: initial EL sync done and derivation idle at the L1 head
// (within the verifier's confirmation depth), observed after the halt.
func (r *Replicator) synced(haltedAt time.Time) bool {
	if r.engine.IsEngineInitialELSyncing() {
		return false
	}
	origin, ok := r.watch.idleSince(haltedAt)
	if !ok {
		return false
	}
	return origin.Number+r.confs >= r.status.SyncStatus().HeadL1.Number
}
