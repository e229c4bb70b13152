package plugin

import (
	"context"
	"fmt"

	"github.com/ethereum-optimism/optimism/op-node/rollup"
	"github.com/ethereum-optimism/optimism/op-node/rollup/derive"
	"github.com/ethereum-optimism/optimism/op-service/eth"

	"github.com/op-replicator/op-replicator/driverhook"
	"github.com/op-replicator/op-replicator/plugin/api"
)

// verifier checks a block from the source against the local chain and our own L1 view before it may be
// inserted. It never modifies anything.
type verifier struct {
	rollup *rollup.Config
	l1     *l1View
	// derivation checks every rule of derivation but data availability.
	derivation *derivationRules
}

func newVerifier(deps driverhook.Deps) *verifier {
	l1 := newL1View(deps.L1)
	return &verifier{rollup: deps.Rollup, l1: l1, derivation: newDerivationRules(deps, l1)}
}

// Check returns the block's ref if the block may be inserted on top of head:
//   - it is the next block: number = head + 1, parent hash = head hash, and above the safe head;
//   - its L1 origin (from the L1-info deposit) is the block our L1 view has at that height (an origin beyond our
//     L1 head is not known yet: errWait, not a disagreement);
//   - its L1 origin is the parent's origin or that origin's successor on L1;
//   - it is the block derivation would build on head from that origin (derivationRules).
func (v *verifier) Check(ctx context.Context, env *eth.ExecutionPayloadEnvelope, head, safe eth.L2BlockRef, l1Head eth.L1BlockRef) (eth.L2BlockRef, error) {
	ref, err := derive.PayloadToBlockRef(v.rollup, env.ExecutionPayload)
	if err != nil {
		return eth.L2BlockRef{}, disagree(api.ReasonInvalidPayload, "block %s has no valid L1-info deposit: %v", env.ExecutionPayload.ID(), err)
	}
	if ref.Number != head.Number+1 {
		return eth.L2BlockRef{}, fmt.Errorf("%w: block %s is not next after local head %s", errStale, ref.ID(), head.ID())
	}
	if ref.Number <= safe.Number {
		// Never at or below the safe head, whatever the source claims.
		return eth.L2BlockRef{}, fmt.Errorf("%w: block %s is not above the safe head %s", errStale, ref.ID(), safe.ID())
	}
	if ref.ParentHash != head.Hash {
		return eth.L2BlockRef{}, disagree(api.ReasonHeadMismatch, "source block %s builds on %s, local unsafe head is %s", ref.ID(), ref.ParentHash, head.ID())
	}
	origin, err := v.checkOrigin(ctx, ref, l1Head)
	if err != nil {
		return eth.L2BlockRef{}, err
	}
	if err := checkOriginSuccession(ref, head, origin); err != nil {
		return eth.L2BlockRef{}, err
	}
	if err := v.derivation.Check(ctx, env, ref, head, origin, l1Head); err != nil {
		return eth.L2BlockRef{}, err
	}
	return ref, nil
}

// checkOrigin requires the block's L1 origin to be canonical on our own L1 view, and returns our L1 block.
func (v *verifier) checkOrigin(ctx context.Context, ref eth.L2BlockRef, l1Head eth.L1BlockRef) (eth.L1BlockRef, error) {
	origin, err := v.originStatus(ctx, ref.L1Origin, l1Head)
	switch {
	case err != nil:
		return eth.L1BlockRef{}, err
	case origin.unknown:
		return eth.L1BlockRef{}, fmt.Errorf("%w: L1 origin %s of block %s is beyond our L1 head %s", errWait, ref.L1Origin, ref.ID(), l1Head.ID())
	case !origin.canonical:
		return eth.L1BlockRef{}, disagree(api.ReasonL1OriginMismatch, "L1 origin %s of block %s is not canonical on our L1 view, which has %s",
			ref.L1Origin, ref.ID(), origin.ours.ID())
	}
	return origin.ours, nil
}

type originStatus struct {
	unknown   bool // beyond our L1 head
	canonical bool
	ours      eth.L1BlockRef // our L1 block at the origin's height
}

// originStatus looks an L1 origin up on our own L1 view.
func (v *verifier) originStatus(ctx context.Context, origin eth.BlockID, l1Head eth.L1BlockRef) (originStatus, error) {
	if origin.Number > l1Head.Number {
		return originStatus{unknown: true}, nil
	}
	ours, err := v.l1.L1BlockRefByNumber(ctx, origin.Number, l1Head)
	if err != nil {
		return originStatus{}, fmt.Errorf("%w: L1 block %d: %w", errL1, origin.Number, err)
	}
	return originStatus{canonical: ours.Hash == origin.Hash, ours: ours}, nil
}

// checkOriginSuccession requires the block's L1 origin to be the parent's, or the L1 block right after it
// (origin is our L1 block at the origin's height, as checkOrigin returned it).
func checkOriginSuccession(ref, parent eth.L2BlockRef, origin eth.L1BlockRef) error {
	switch ref.L1Origin.Number {
	case parent.L1Origin.Number:
		if ref.L1Origin.Hash != parent.L1Origin.Hash {
			return disagree(api.ReasonL1OriginMismatch, "block %s has L1 origin %s, its parent %s has %s at the same height",
				ref.ID(), ref.L1Origin, parent.ID(), parent.L1Origin)
		}
		if ref.SequenceNumber != parent.SequenceNumber+1 {
			return disagree(api.ReasonL1OriginMismatch, "block %s has sequence number %d, its parent %s has %d in the same epoch",
				ref.ID(), ref.SequenceNumber, parent.ID(), parent.SequenceNumber)
		}
	case parent.L1Origin.Number + 1:
		if origin.ParentHash != parent.L1Origin.Hash {
			return disagree(api.ReasonL1OriginMismatch, "block %s has L1 origin %s, whose L1 parent %s is not its parent's origin %s",
				ref.ID(), ref.L1Origin, origin.ParentHash, parent.L1Origin)
		}
		if ref.SequenceNumber != 0 {
			return disagree(api.ReasonL1OriginMismatch, "block %s starts epoch %s with sequence number %d",
				ref.ID(), ref.L1Origin, ref.SequenceNumber)
		}
	default:
		return disagree(api.ReasonL1OriginMismatch, "block %s has L1 origin %s, neither its parent's origin %s nor the next",
			ref.ID(), ref.L1Origin, parent.L1Origin)
	}
	return nil
}
