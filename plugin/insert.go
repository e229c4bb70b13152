package plugin

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ethereum/go-ethereum/common"

	"github.com/ethereum-optimism/optimism/op-node/rollup/engine"
	"github.com/ethereum-optimism/optimism/op-service/eth"

	"github.com/op-replicator/op-replicator/driverhook"
)

// errEngine: the local engine failed transiently (RPC error, not VALID yet); the block is tried again.
var errEngine = errors.New("local engine error")

// inserter puts a verified block at the tip of the local engine, as unsafe only, through the engine
// controller (which refuses anything that does not extend the unsafe head), and checks that local
// execution produced exactly the sequencer's block.
type inserter struct {
	engine driverhook.Engine
	l2     driverhook.L2Chain
}

func (i *inserter) Insert(ctx context.Context, env *eth.ExecutionPayloadEnvelope, ref eth.L2BlockRef) error {
	err := i.engine.ProcessPayload(ctx, env, ref, time.Time{})
	switch {
	case err == nil:
	case errors.Is(err, engine.ErrPayloadInvalid), errors.Is(err, engine.ErrPayloadDenied):
		return disagree(ReasonInvalidPayload, "local engine refused block %s: %v", ref.ID(), err)
	case errors.Is(err, engine.ErrStaleBuild):
		return fmt.Errorf("%w: block %s no longer extends the unsafe head", errStale, ref.ID())
	default:
		return fmt.Errorf("%w: inserting block %s: %v", errEngine, ref.ID(), err)
	}
	local, err := i.l2.InfoByNumber(ctx, ref.Number)
	if err != nil {
		// Inserted; the next round compares the local head with the source again.
		return fmt.Errorf("%w: reading back block %d: %v", errEngine, ref.Number, err)
	}
	if local.Hash() != env.ExecutionPayload.BlockHash || local.Root() != common.Hash(env.ExecutionPayload.StateRoot) {
		return disagree(ReasonExecutionMismatch, "block %d: local hash %s state root %s, sequencer's hash %s state root %s",
			ref.Number, local.Hash(), local.Root(), env.ExecutionPayload.BlockHash, common.Hash(env.ExecutionPayload.StateRoot))
	}
	return nil
}
