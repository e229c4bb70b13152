package plugin

import (
	"context"
	"errors"
	"fmt"

	"github.com/ethereum-optimism/optimism/op-node/rollup/engine"
	"github.com/ethereum-optimism/optimism/op-service/eth"

	"github.com/op-replicator/op-replicator/driverhook"
	"github.com/op-replicator/op-replicator/plugin/api"
)

// inserter puts a verified block at the tip of the local engine, as unsafe only, through the engine controller
// (which refuses anything that does not extend the unsafe head).
//
// The engine's VALID is the check that local execution produced exactly the sequencer's block: op-geth recomputes
// the block hash over the payload's header fields (the state root among them) and refuses a payload whose hash
// differs, then executes the block and refuses it unless its own state root is the header's. A VALID block therefore
// has the sequencer's hash and state root, and reading it back would only repeat that check.
type inserter struct {
	engine driverhook.Engine
}

// Insert inserts blocks, each on the one before it, the first on the unsafe head, with one forkchoice update to the
// last (ProcessPayloads). It returns how many were inserted and why it stopped: a forkchoice update that failed
// after every block was inserted is an engine error too (op-geth's head is then not op-node's unsafe head).
func (i *inserter) Insert(ctx context.Context, envs []*eth.ExecutionPayloadEnvelope, refs []eth.L2BlockRef) (int, error) {
	n, err := i.engine.ProcessPayloads(ctx, envs, refs)
	if err == nil {
		return n, nil
	}
	if n == len(refs) {
		return n, fmt.Errorf("%w: blocks up to %s inserted: %w", errEngine, refs[n-1].ID(), err)
	}
	ref := refs[n]
	switch {
	case errors.Is(err, engine.ErrPayloadInvalid), errors.Is(err, engine.ErrPayloadDenied):
		return n, disagree(api.ReasonInvalidPayload, "local engine refused block %s: %v", ref.ID(), err)
	case errors.Is(err, engine.ErrStaleBuild):
		return n, fmt.Errorf("%w: block %s no longer extends the unsafe head: %w", errStale, ref.ID(), errNotOnUnsafeHead)
	case errors.Is(err, engine.ErrUnsafeInputHeld):
		return n, fmt.Errorf("%w: block %s not inserted: unsafe input is held", errStale, ref.ID())
	case ctx.Err() != nil && errors.Is(err, ctx.Err()):
		return n, err
	default:
		return n, fmt.Errorf("%w: inserting block %s: %w", errEngine, ref.ID(), err)
	}
}
