package plugin

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ethereum-optimism/optimism/op-service/eth"

	"github.com/op-replicator/op-replicator/driverhook"
	"github.com/op-replicator/op-replicator/plugin/api"
)

// firstLastSource answers the first block asked for only once the source answered every other block up to last:
// the first batch of a round then holds every block up to maxBatch, whatever the goroutines' scheduling.
type firstLastSource struct {
	*fakeSource
	first, last uint64
	answered    atomic.Int64
}

func (s *firstLastSource) Payload(ctx context.Context, n uint64) (*eth.ExecutionPayloadEnvelope, error) {
	if n == s.first {
		for s.answered.Load() < int64(s.last-s.first) && ctx.Err() == nil {
			time.Sleep(time.Millisecond)
		}
	} else {
		defer s.answered.Add(1)
	}
	return s.fakeSource.Payload(ctx, n)
}

// Catching up in batches while derivation consolidates behind: every block is inserted once, in order, each above
// the safe head of its time, and the engine commits its chain once per batch, not once per block.
func TestCatchUpWhileDerivationConsolidates(t *testing.T) {
	blocks := buildChain(t, testRollupConfig(), 400, 0, 0)
	h := newHarness(t, driverhook.HaltManual, blocks)
	h.engine.setChain(blocks[:10])
	h.engine.setSafe(10)
	// Derivation consolidates the blocks we inserted, a few behind the unsafe head, as the engine inserts batches.
	h.engine.beforeInsert = func(_ context.Context, ref eth.L2BlockRef) {
		if ref.Number%7 == 0 {
			h.engine.setSafe(max(h.engine.SyncStatus().SafeL2.Number, ref.Number-5))
		}
	}
	for h.engine.head().Number < 400 {
		h.round()
		h.requireRunning()
	}
	require.Zero(t, h.engine.belowSafe, "an insertion at or below the safe head was attempted")
	require.Equal(t, 390, h.engine.inserted)
	for i, b := range blocks {
		require.Equal(t, b.ref, h.engine.chain[i+1], "block %d", i+1)
	}
	require.Equal(t, blocks[399].ref, h.rep.lastReplicated())
	require.Less(t, h.engine.forkchoiceUpdates, 390/4, "blocks are inserted in batches")
	t.Logf("390 blocks in %d forkchoice updates", h.engine.forkchoiceUpdates)
}

// Derivation inserting the next blocks itself while a batch of ours is on its way (its safe head reached our unsafe
// head): our batch no longer extends the unsafe head, the engine refuses it as stale, and replication goes on from
// derivation's head without a halt.
func TestDerivationWinningTheRaceIsStaleNotAHalt(t *testing.T) {
	blocks := buildChain(t, testRollupConfig(), 200, 0, 0)
	h := newHarness(t, driverhook.HaltManual, blocks)
	h.engine.setChain(blocks[:10])
	h.engine.setSafe(10)
	var raced atomic.Bool
	h.engine.beforeInsert = func(_ context.Context, ref eth.L2BlockRef) {
		if ref.Number > 100 && !raced.Swap(true) {
			h.engine.setChain(blocks[:ref.Number+2]) // derivation's blocks, the sequencer's own
			h.engine.setSafe(ref.Number + 2)
		}
	}
	for h.engine.head().Number < 200 {
		h.round()
		h.requireRunning()
	}
	require.True(t, raced.Load())
	require.Zero(t, h.engine.belowSafe)
	for i, b := range blocks {
		require.Equal(t, b.ref, h.engine.chain[i+1], "block %d", i+1)
	}
}

// A disagreement found while verifying the next batch stops the batch the engine is executing at its next block
// boundary: the halt does not wait for blocks it will rewind anyway, and nothing after the disagreement is inserted.
func TestDisagreementStopsTheBatchInFlight(t *testing.T) {
	cfg := testRollupConfig()
	ours := buildChain(t, cfg, 40, 0, 0)
	other := buildChain(t, cfg, 40, 1, 36)
	// Block 37 of the source is on another block 36 than the one it served: a head mismatch, found while block 37 is
	// verified, after blocks 1..32 went to the engine as the first batch.
	served := append(append([]chainBlock{}, ours[:36]...), other[36:]...)
	h := newHarness(t, driverhook.HaltManual, served, withSource(func(h *harness) Source {
		return &firstLastSource{fakeSource: h.source, first: 1, last: 40}
	}))
	h.engine.setSafe(0)
	interrupted := make(chan bool, 1)
	var calls atomic.Int64
	h.engine.beforeInsert = func(ctx context.Context, ref eth.L2BlockRef) {
		if calls.Add(1) > 1 {
			return
		}
		select { // the engine is still executing block 1 when the disagreement is found
		case <-ctx.Done():
			interrupted <- true
		case <-time.After(10 * time.Second):
			interrupted <- false
		}
	}
	h.round()
	require.True(t, <-interrupted, "the batch in the engine was not interrupted by the disagreement")
	h.requireHalted(api.ReasonHeadMismatch)
	require.Equal(t, []int{32}, h.engine.batches[:1], "the first batch was blocks 1..32")
	require.Zero(t, h.engine.inserted, "nothing inserted after the disagreement was found")
	require.Equal(t, uint64(0), h.engine.head().Number, "rewound to the safe head")
}
