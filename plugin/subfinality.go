package plugin

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/rpc"
	"github.com/op-replicator/op-replicator/plugin/api"

	"github.com/ethereum-optimism/optimism/op-service/eth"
)

// Sub-finality (Polymer's consistency check, RIP-7789): every L2 block is anchored to an L1 origin. An unsafe
// block whose origin is canonical, and deep, on our own L1 view is on the same L1 fork as we are; one whose
// origin is L1-finalized can only be undone by the sequencer equivocating, not by an L1 reorg.

// arrival is what the replicator remembers of a block it inserted.
type arrival struct {
	source string
	signed bool
	at     time.Time
}

// BlockStatus looks a block of the local canonical chain up and ties it to its L1 origin on our L1 view.
func (r *Replicator) BlockStatus(ctx context.Context, id rpc.BlockNumberOrHash) (*api.BlockStatus, error) {
	ref, err := r.localBlock(ctx, id)
	if err != nil {
		return nil, err
	}
	sync := r.status.SyncStatus()
	st := &api.BlockStatus{Hash: ref.Hash, Number: ref.Number, Label: api.LabelUnsafe, L1Origin: ref.L1Origin}
	switch {
	case ref.Number <= sync.FinalizedL2.Number:
		st.Label = api.LabelFinalized
	case ref.Number <= sync.SafeL2.Number:
		st.Label = api.LabelSafe
	}
	origin, err := r.verify.originStatus(ctx, ref.L1Origin, sync.HeadL1)
	if err != nil {
		return nil, err
	}
	if origin.canonical {
		st.L1OriginCanonical = true
		st.L1OriginDepth = sync.HeadL1.Number - ref.L1Origin.Number + 1
		st.L1OriginSafe = ref.L1Origin.Number <= sync.SafeL1.Number
		st.L1OriginFinalized = ref.L1Origin.Number <= sync.FinalizedL1.Number
	}
	if a, ok := r.arrivals.Get(ref.Hash); ok {
		at := a.at
		st.Replicated, st.Signed, st.Source, st.ArrivedAt = true, a.signed, a.source, &at
	}
	return st, nil
}

// localBlock resolves a number or hash to a block of the local canonical chain.
func (r *Replicator) localBlock(ctx context.Context, id rpc.BlockNumberOrHash) (eth.L2BlockRef, error) {
	if hash, ok := id.Hash(); ok {
		ref, err := r.l2.L2BlockRefByHash(ctx, hash)
		if err != nil {
			return eth.L2BlockRef{}, notFound(err, "block %s", hash)
		}
		canonical, err := r.l2.L2BlockRefByNumber(ctx, ref.Number)
		if err != nil || canonical.Hash != ref.Hash {
			return eth.L2BlockRef{}, fmt.Errorf("block %s is not in the local canonical chain", ref.ID())
		}
		return ref, nil
	}
	num, _ := id.Number()
	switch num {
	case rpc.LatestBlockNumber, rpc.PendingBlockNumber:
		return r.l2.L2BlockRefByLabel(ctx, eth.Unsafe)
	case rpc.SafeBlockNumber:
		return r.l2.L2BlockRefByLabel(ctx, eth.Safe)
	case rpc.FinalizedBlockNumber:
		return r.l2.L2BlockRefByLabel(ctx, eth.Finalized)
	}
	if num < 0 {
		return eth.L2BlockRef{}, fmt.Errorf("unsupported block tag %s", num)
	}
	ref, err := r.l2.L2BlockRefByNumber(ctx, uint64(num))
	if err != nil {
		return eth.L2BlockRef{}, notFound(err, "block %d", num)
	}
	return ref, nil
}

func notFound(err error, format string, args ...any) error {
	if errors.Is(err, ethereum.NotFound) {
		return fmt.Errorf(format+" not found", args...)
	}
	return fmt.Errorf(format+": %w", append(args, err)...)
}
