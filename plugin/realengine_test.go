package plugin

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/stretchr/testify/require"

	"github.com/ethereum-optimism/optimism/op-node/rollup/engine"
	"github.com/ethereum-optimism/optimism/op-service/eth"
	"github.com/ethereum-optimism/optimism/op-service/testlog"

	"github.com/op-replicator/op-replicator/driverhook"
	"github.com/op-replicator/op-replicator/plugin/api"
	"github.com/op-replicator/op-replicator/plugin/internal/testkit"
)

// The pipeline's scenarios against op-node's own engine controller (realengine_harness_test.go). Each has its
// fakeEngine version in replicator_test.go, pipeline_test.go or halt_test.go.

// Catching up from far behind inserts every block once, in order, in batches: a NewPayload per block and one
// forkchoice update per batch, to its last block; the blocks verified while the engine executed a batch are its next
// one. op-node's unsafe head (the controller's, SyncStatus) is the last block. (TestCatchUpInsertsEveryBlockInOrder,
// TestFetchAndVerifyGoOnWhileTheEngineWorks)
func TestRealEngineCatchUpInBatches(t *testing.T) {
	blocks := testkit.BuildChain(t, testkit.RollupConfig(), 120, 0, 0)
	h := newRealHarness(t, driverhook.HaltManual, blocks)
	h.startAt(blocks[:10], 10)
	var served atomic.Uint64
	h.source.OnPayload = func(n uint64) {
		for cur := served.Load(); n > cur && !served.CompareAndSwap(cur, n); cur = served.Load() {
		}
	}
	// The engine executes the first batch until the blocks after it are verified (a full batch) and fetched ahead.
	released := make(chan bool, 1)
	var first atomic.Bool
	h.el.setOnNewPayload(func(ref eth.L2BlockRef) {
		if first.Swap(true) {
			return
		}
		want := 10 + uint64(h.engine.pending()) + maxBatch + catchUpDepth
		deadline := time.Now().Add(10 * time.Second)
		for served.Load() < want && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		released <- served.Load() >= want
	})
	fcus, newPayloads := h.el.fcuCount(), h.el.newPayloadCount()
	h.catchUp(120)
	require.True(t, <-released, "verification and fetching did not go on while the engine worked")

	require.Equal(t, span(11, 120), numbers(h.el.inserted(newPayloads)), "every block once, in order")
	h.requireChain(blocks)
	calls := h.engine.calls()
	var heads []common.Hash
	for _, c := range calls {
		require.NoError(t, c.err)
		require.Equal(t, c.size, c.inserted)
		heads = append(heads, c.refs[c.inserted-1].Hash)
	}
	var fcuHeads []common.Hash
	for _, fc := range h.el.forkchoiceUpdates(fcus) {
		fcuHeads = append(fcuHeads, fc.HeadBlockHash)
	}
	require.Equal(t, heads, fcuHeads, "one forkchoice update per batch, to its last block")
	require.Less(t, len(fcuHeads), 110, "a forkchoice update per block")
	require.GreaterOrEqual(t, len(calls), 2)
	require.Equal(t, maxBatch, calls[1].size, "the blocks verified while the engine worked were not its next batch")
	h.settle()
	h.requireHeads(blocks[119].Ref, "after catching up")
	require.Equal(t, blocks[119].Ref, h.rep.lastReplicated())
	h.requireNothingAtOrBelowSafe()
	t.Logf("110 blocks in %d forkchoice updates", len(fcuHeads))
}

// Derivation consolidating the blocks inserted, a few behind the unsafe head, on op-node's event loop while the
// replicator catches up: every block is inserted once, in order, none at or below the controller's safe head of its
// time, and the safe head op-node reports moves on. (TestCatchUpWhileDerivationConsolidates, TestOnlyAboveSafe)
func TestRealEngineCatchUpWhileDerivationConsolidates(t *testing.T) {
	blocks := testkit.BuildChain(t, testkit.RollupConfig(), 400, 0, 0)
	h := newRealHarness(t, driverhook.HaltManual, blocks)
	h.startAt(blocks[:10], 10)
	newPayloads := h.el.newPayloadCount()
	// Derivation consolidates up to five blocks behind each seventh block inserted: on the loop, once the batch in
	// the engine (which holds the controller's lock) is done.
	var wg sync.WaitGroup
	var consolidated atomic.Uint64
	h.el.setOnNewPayload(func(ref eth.L2BlockRef) {
		if ref.Number%7 != 0 {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			h.loop.do(ctx, func() {
				if target := ref.Number - 5; target > h.safe.Number {
					if err := h.consolidateOnLoop(target); err != nil {
						t.Error(err)
					}
					consolidated.Store(target)
				}
			})
		}()
	})
	h.catchUp(400)
	wg.Wait()
	h.settle()
	require.Equal(t, span(11, 400), numbers(h.el.inserted(newPayloads)), "every block once, in order")
	h.requireChain(blocks)
	h.requireNothingAtOrBelowSafe()
	require.Greater(t, consolidated.Load(), uint64(300))
	require.Equal(t, h.safe, h.tracker.SyncStatus().SafeL2, "SyncStatus' safe head")
	require.Equal(t, blocks[consolidated.Load()-1].Ref, h.safe)
	h.requireHeads(blocks[399].Ref, "after catching up")
}

// A block the engine finds INVALID halts: the blocks before it in the batch are inserted, none after it, and the halt
// rewinds op-node's and the EL's heads to the safe head. (TestInvalidPayloadHalts)
func TestRealEngineInvalidPayloadHalts(t *testing.T) {
	blocks := testkit.BuildChain(t, testkit.RollupConfig(), 6, 0, 0)
	h := newRealHarness(t, driverhook.HaltManual, blocks)
	h.startAt(blocks[:1], 1)
	h.el.setInvalid(blocks[3].Ref.Hash)
	newPayloads := h.el.newPayloadCount()
	h.round()
	require.Equal(t, []uint64{2, 3, 4}, numbers(h.el.inserted(newPayloads)), "blocks 2 and 3 inserted, 4 refused, none after")
	var invalid error
	for _, c := range h.engine.calls() {
		if c.err != nil {
			invalid = c.err
		}
	}
	require.ErrorIs(t, invalid, engine.ErrPayloadInvalid)
	h.requireHalted(api.ReasonInvalidPayload)
	h.requireNothingAtOrBelowSafe()
}

// The unsafe head moved by gossip (the controller's unsafe-payload queue, on op-node's loop) before a round verified
// the block at that height: stale, not a disagreement; no insertion is attempted on it, and the next round goes on
// from the new head. (TestHeadMovedByGossipIsStale)
func TestRealEngineHeadMovedByGossipIsStale(t *testing.T) {
	blocks := testkit.BuildChain(t, testkit.RollupConfig(), 4, 0, 0)
	h := newRealHarness(t, driverhook.HaltManual, blocks)
	genesis := h.el.head()
	h.gossip(blocks[0].Env)
	h.requireHeads(blocks[0].Ref, "gossip's block")
	newPayloads := h.el.newPayloadCount()
	_, _, err := h.rep.prepare(context.Background(), genesis, blocks[0].Env, nil)
	require.ErrorIs(t, err, errStale)
	require.Empty(t, h.engine.calls(), "an insertion attempt on a head that moved")
	h.round()
	h.requireRunning()
	require.Equal(t, []uint64{2, 3, 4}, numbers(h.el.inserted(newPayloads)))
	h.settle()
	h.requireHeads(blocks[3].Ref, "replicated on from gossip's block")
}

// Gossip inserting the next block between the round's verification and its insertion: op-node's controller refuses
// the batch as stale (its first block no longer extends the unsafe head), nothing of it is inserted, the round ends
// stale (soon retried), not halted, and the next round goes on from gossip's block. (TestStaleHeadIsNotADisagreement)
func TestRealEngineBatchOnAMovedHeadIsStale(t *testing.T) {
	blocks := testkit.BuildChain(t, testkit.RollupConfig(), 4, 0, 0)
	h := newRealHarness(t, driverhook.HaltManual, blocks)
	var once sync.Once
	h.engine.setBeforeBatch(func([]eth.L2BlockRef) {
		once.Do(func() { // on the insert stage's goroutine: no require here
			h.ec.AddUnsafePayload(context.Background(), blocks[0].Env)
			deadline := time.Now().Add(10 * time.Second)
			for h.el.head() != blocks[0].Ref && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
		})
	})
	newPayloads := h.el.newPayloadCount()
	require.Equal(t, staleBackoff, h.round(), "a stale round is retried soon")
	h.requireRunning()
	calls := h.engine.calls()
	require.Len(t, calls, 1)
	require.ErrorIs(t, calls[0].err, engine.ErrStaleBuild)
	require.Zero(t, calls[0].inserted)
	require.Equal(t, []uint64{1}, numbers(h.el.inserted(newPayloads)), "gossip's block only")

	h.round()
	h.requireRunning()
	require.Equal(t, []uint64{1, 2, 3, 4}, numbers(h.el.inserted(newPayloads)), "each block once")
	h.settle()
	h.requireHeads(blocks[3].Ref, "replicated on from gossip's block")
	h.requireChain(blocks)
}

// Derivation inserting the next blocks itself (its safe head reached our unsafe head) while a batch of ours is on
// its way: op-node's controller refuses our batch as stale, and replication goes on from derivation's head without a
// halt. (TestDerivationWinningTheRaceIsStaleNotAHalt)
func TestRealEngineDerivationWinningTheRaceIsStale(t *testing.T) {
	blocks := testkit.BuildChain(t, testkit.RollupConfig(), 200, 0, 0)
	h := newRealHarness(t, driverhook.HaltManual, blocks)
	h.startAt(blocks[:10], 10)
	var raced atomic.Uint64
	h.engine.setBeforeBatch(func(refs []eth.L2BlockRef) {
		if refs[0].Number <= 100 || !raced.CompareAndSwap(0, refs[0].Number) {
			return
		}
		// Derivation consolidates up to our unsafe head, then builds the next two blocks from L1: the sequencer's.
		n := refs[0].Number
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		h.loop.do(ctx, func() {
			if err := h.consolidateOnLoop(n - 1); err != nil {
				t.Error(err)
				return
			}
			h.deriveOnLoop(blocks[n-2].Ref, blocks[n-1])
		})
		h.loop.do(ctx, func() { h.deriveOnLoop(blocks[n-1].Ref, blocks[n]) })
	})
	h.catchUp(200)
	n := raced.Load()
	require.NotZero(t, n)
	var stale int
	for _, c := range h.engine.calls() {
		if c.err != nil {
			require.ErrorIs(t, c.err, engine.ErrStaleBuild)
			require.Equal(t, n, c.refs[0].Number)
			require.Zero(t, c.inserted)
			stale++
		}
	}
	require.Equal(t, 1, stale, "our batch on the head derivation moved was not refused")
	h.requireChain(blocks)
	h.requireNothingAtOrBelowSafe()
	h.settle()
	h.requireHeads(blocks[199].Ref, "after catching up")
}

// Derivation replacing replicated unsafe blocks (it builds another block 4 on block 3 from L1, through the controller)
// halts with unsafe-reorg, and the halt rewinds to derivation's safe head. (TestDerivationReplacingUnsafeBlocksHalts)
func TestRealEngineDerivationReplacingUnsafeBlocksHalts(t *testing.T) {
	cfg := testkit.RollupConfig()
	blocks := testkit.BuildChain(t, cfg, 8, 0, 0)
	h := newRealHarness(t, driverhook.HaltManual, blocks)
	h.round()
	h.settle()
	h.requireHeads(blocks[7].Ref, "replicated")
	h.consolidate(3)
	derived := testkit.BuildChain(t, cfg, 4, 2, 4)
	h.derive(derived[3])
	require.Equal(t, derived[3].Ref, h.el.head(), "the EL did not reorg to derivation's block")
	h.round()
	h.requireHalted(api.ReasonUnsafeReorg)
	require.Contains(t, h.rep.halt.Status().Detail, "derivation from L1 replaced replicated block")
}

// A halt holds op-node's unsafe input: gossip is dropped by the gate, and a payload already past it is dropped by the
// controller (not queued, not inserted); resumed, the controller takes gossip again.
// (TestHaltDropsGossip, and the patch's TestHeldUnsafeInputIsDropped on the replicator's halt)
func TestRealEngineHaltHoldsUnsafeInputUntilResume(t *testing.T) {
	blocks := testkit.BuildChain(t, testkit.RollupConfig(), 6, 0, 0)
	h := newRealHarness(t, driverhook.HaltManual, blocks)
	h.source.Set(blocks, 2, nil)
	h.round()
	h.consolidate(2)
	h.settle()
	h.requireHeads(blocks[1].Ref, "replicated")

	passed := &addingReceiver{h: h}
	gate := h.svc.GateGossip(passed)
	done := make(chan error, 1)
	h.rep.handle(context.Background(), request{halt: true, detail: "maintenance", done: done})
	require.NoError(t, <-done)
	newPayloads := h.el.newPayloadCount()
	gate.OnUnsafeL2Payload(context.Background(), blocks[2].Env)
	require.Zero(t, passed.n.Load(), "gossip passed the gate while halted")
	h.gossip(blocks[2].Env) // already past the gate
	var queued *eth.ExecutionPayloadEnvelope
	h.onLoop(func() { queued, _ = h.ec.PeekUnsafePayload() })
	require.Nil(t, queued, "a payload queued while input is held")
	require.Empty(t, h.el.inserted(newPayloads), "a payload inserted while input is held")
	h.requireHeads(blocks[1].Ref, "held")
	n, err := h.engine.ProcessPayloads(context.Background(), []*eth.ExecutionPayloadEnvelope{blocks[2].Env}, []eth.L2BlockRef{blocks[2].Ref})
	require.ErrorIs(t, err, engine.ErrUnsafeInputHeld)
	require.Zero(t, n)

	h.rep.handle(context.Background(), request{done: done})
	require.NoError(t, <-done)
	h.requireRunning()
	gate.OnUnsafeL2Payload(context.Background(), blocks[2].Env)
	require.Equal(t, int64(1), passed.n.Load())
	h.settle()
	h.requireHeads(blocks[2].Ref, "gossip taken again after the resume")
	h.source.Set(blocks, 6, nil)
	h.round()
	h.requireRunning()
	h.settle()
	h.requireHeads(blocks[5].Ref, "replicated on from gossip's block")
	h.requireNothingAtOrBelowSafe()
}

// addingReceiver hands gossiped payloads to the controller's unsafe-payload queue, as op-node's gossip does.
type addingReceiver struct {
	h *realHarness
	n atomic.Int64
}

func (r *addingReceiver) OnUnsafeL2Payload(ctx context.Context, env *eth.ExecutionPayloadEnvelope) {
	r.n.Add(1)
	r.h.ec.AddUnsafePayload(ctx, env)
}

// A disagreement halts, and the halt's rewind, run by the replicator's deriver on op-node's event loop, brings
// op-node's unsafe head back to the safe head: the controller's, SyncStatus' (as soon as the halt returns) and the
// EL's own (debug_setHead under the controller's lock, given the EL's head). Nothing is replicated while halted;
// resumed, replication starts over from the safe head. (TestSourceSwitchingChainsHaltsWithHeadMismatch,
// TestHaltChecksTheEngineItRewound, TestManualHaltWaitsForOperator)
func TestRealEngineDisagreementRewindsOpNodeToTheSafeHead(t *testing.T) {
	cfg := testkit.RollupConfig()
	blocks := testkit.BuildChain(t, cfg, 6, 0, 0)
	h := newRealHarness(t, driverhook.HaltManual, blocks)
	h.round()
	h.settle()
	h.requireHeads(blocks[5].Ref, "replicated")
	h.consolidate(2)

	// The source now serves another, internally valid chain that diverges at height 4.
	h.source.Set(testkit.BuildChain(t, cfg, 8, 1, 4), 8, nil)
	h.round()
	h.requireHalted(api.ReasonHeadMismatch)
	h.rewinder.requireCalls(t, []eth.BlockID{blocks[5].Ref.ID()}, []eth.L2BlockRef{blocks[1].Ref})
	require.False(t, h.rep.halt.rewindPending)
	require.Empty(t, h.logs.FindLogs(testlog.NewMessageContainsFilter("Halt could not rewind")))

	newPayloads := h.el.newPayloadCount()
	h.clock.AdvanceTime(time.Hour)
	h.round()
	require.Empty(t, h.el.inserted(newPayloads), "replicated while halted")

	h.source.Set(blocks, 6, nil)
	done := make(chan error, 1)
	h.rep.handle(context.Background(), request{done: done})
	require.NoError(t, <-done)
	h.round()
	h.requireRunning()
	require.Equal(t, []uint64{3, 4, 5, 6}, numbers(h.el.inserted(newPayloads)), "replicated again from the safe head")
	h.settle()
	h.requireHeads(blocks[5].Ref, "after the resume")
	h.requireChain(blocks)
	h.requireNothingAtOrBelowSafe()
}

// A halt whose rewind of the EL fails leaves op-node's heads on the chain the EL holds (the controller's, SyncStatus'),
// with unsafe input held, says why in replicator_status, and is retried with backoff while halted until it
// succeeds; then op-node's heads and the EL's are at the safe head. (TestHaltRewindFailsClosedAndRetries)
func TestRealEngineFailedRewindLeavesTheHeadsAndIsRetried(t *testing.T) {
	blocks := testkit.BuildChain(t, testkit.RollupConfig(), 7, 0, 0)
	h := newRealHarness(t, driverhook.HaltManual, blocks)
	h.source.Set(blocks, 6, nil)
	h.round()
	h.consolidate(2)
	h.settle()
	h.requireHeads(blocks[5].Ref, "replicated")
	h.rewinder.fail(errors.New("debug_setHead: connection refused"))

	done := make(chan error, 1)
	h.rep.handle(context.Background(), request{halt: true, detail: "maintenance", done: done})
	require.NoError(t, <-done)
	require.Equal(t, api.StateHalted, h.rep.halt.Status().State)
	h.requireHeads(blocks[5].Ref, "heads reset over an EL that was not rewound")
	require.Equal(t, blocks[1].Ref, h.tracker.SyncStatus().SafeL2)
	require.True(t, h.rep.halt.rewindPending)
	st, err := h.svc.Status(context.Background())
	require.NoError(t, err)
	require.Contains(t, st.RewindError, "connection refused")

	newPayloads := h.el.newPayloadCount()
	h.gossip(blocks[6].Env) // it extends the unsafe head
	require.Empty(t, h.el.inserted(newPayloads), "unsafe input not held after a failed rewind")
	h.requireHeads(blocks[5].Ref, "held")

	h.round()
	require.Equal(t, 1, h.rewinder.calls(), "retried before its backoff")
	h.clock.AdvanceTime(time.Minute)
	h.round()
	require.Equal(t, 2, h.rewinder.calls())
	h.requireHeads(blocks[5].Ref, "heads reset over an EL that was not rewound")

	h.rewinder.fail(nil)
	h.clock.AdvanceTime(time.Minute)
	h.round()
	require.Equal(t, api.StateHalted, h.rep.halt.Status().State)
	h.requireHeads(blocks[1].Ref, "not rewound to the safe head once the EL could be")
	h.rewinder.requireCalls(t, []eth.BlockID{blocks[5].Ref.ID(), blocks[5].Ref.ID(), blocks[5].Ref.ID()},
		[]eth.L2BlockRef{blocks[1].Ref, blocks[1].Ref, blocks[1].Ref})
	require.False(t, h.rep.halt.rewindPending)
	st, err = h.svc.Status(context.Background())
	require.NoError(t, err)
	require.Empty(t, st.RewindError)
	h.gossip(blocks[2].Env) // it extends the safe head
	require.Empty(t, h.el.inserted(newPayloads), "unsafe input not held after the rewind")
	h.requireHeads(blocks[1].Ref, "held")
	h.requireNothingAtOrBelowSafe()
}

// The replicator running on its own goroutines beside op-node's event loop, halted and resumed by an operator over
// the API: the halt's rewind waits for the loop (no deadlock with the controller's lock or the batches in flight),
// SyncStatus shows the safe head as soon as the halt has returned, and the resumed replicator catches up again.
// (TestOperatorHaltAndResumeOverAPI)
func TestRealEngineOperatorHaltAndResumeWhileRunning(t *testing.T) {
	blocks := testkit.BuildChain(t, testkit.RollupConfig(), 40, 0, 0)
	h := newRealHarness(t, driverhook.HaltTimed, blocks)
	h.source.Set(blocks, 20, nil)
	client := h.client()
	ctx := context.Background()
	require.NoError(t, h.svc.Start(ctx))
	t.Cleanup(func() { require.NoError(t, h.svc.Stop(ctx)) })
	require.Eventually(t, func() bool { return h.tracker.SyncStatus().UnsafeL2 == blocks[19].Ref }, 10*time.Second, time.Millisecond)
	h.consolidate(5)

	h.source.Set(blocks, 40, nil) // the replicator may be catching up when the operator halts it
	require.NoError(t, client.Halt(ctx, "maintenance"))
	require.Equal(t, blocks[4].Ref, h.tracker.SyncStatus().UnsafeL2, "SyncStatus' unsafe head once the halt returned")
	require.Equal(t, blocks[4].Ref, h.el.head())
	st, err := client.Status(ctx)
	require.NoError(t, err)
	require.Equal(t, api.StateHalted, st.State)

	require.NoError(t, client.Resume(ctx))
	require.Eventually(t, func() bool { return h.tracker.SyncStatus().UnsafeL2 == blocks[39].Ref }, 10*time.Second, time.Millisecond)
	require.NoError(t, h.svc.Stop(ctx))
	h.requireRunning()
	h.requireChain(blocks)
	h.rewinder.requireSafes(t, []eth.L2BlockRef{blocks[4].Ref})
	h.requireNothingAtOrBelowSafe()
}

// A local chain that differs from the source's at start-up halts with head-mismatch before anything is inserted, and
// the halt rewinds op-node and the EL to the safe head. (TestStartupHeadMismatchHalts)
func TestRealEngineStartupHeadMismatchHalts(t *testing.T) {
	cfg := testkit.RollupConfig()
	h := newRealHarness(t, driverhook.HaltManual, testkit.BuildChain(t, cfg, 6, 0, 0))
	h.startAt(testkit.BuildChain(t, cfg, 6, 1, 3), 2) // the EL holds another block at heights 3..
	newPayloads := h.el.newPayloadCount()
	h.round()
	h.requireHalted(api.ReasonHeadMismatch)
	require.Empty(t, h.el.inserted(newPayloads))
	require.Empty(t, h.engine.calls())
}

// The engine API failing (op-geth down) ends the round without a halt, op-node's heads untouched; replication goes
// on once it answers again. (TestEngineTemporaryErrorDoesNotHalt)
func TestRealEngineEngineErrorDoesNotHalt(t *testing.T) {
	blocks := testkit.BuildChain(t, testkit.RollupConfig(), 4, 0, 0)
	h := newRealHarness(t, driverhook.HaltManual, blocks)
	genesis := h.el.head()
	h.el.setDown(errors.New("engine API: connection refused"))
	h.round()
	h.requireRunning()
	calls := h.engine.calls()
	require.Len(t, calls, 1)
	require.ErrorContains(t, calls[0].err, "connection refused")
	h.settle()
	h.requireHeads(genesis, "nothing inserted")
	h.el.setDown(nil)
	h.round()
	h.requireRunning()
	h.settle()
	h.requireHeads(blocks[3].Ref, "replicated once the engine answered")
}

// A rewinder that rewinds another node than the EL op-node drives (a --replicator.l2.rpc naming another op-geth) is
// caught under the controller's lock, when the EL's head is read back: the halt fails closed, op-node's heads stay on
// the EL's chain with input held, and the rewind is retried while halted. (TestHaltChecksTheEngineItRewound)
func TestRealEngineRewindOfAnotherNodeFailsClosed(t *testing.T) {
	blocks := testkit.BuildChain(t, testkit.RollupConfig(), 7, 0, 0)
	h := newRealHarness(t, driverhook.HaltManual, blocks)
	h.source.Set(blocks, 6, nil)
	h.round()
	h.consolidate(2)
	h.settle()
	h.rewinder.otherNode()
	done := make(chan error, 1)
	h.rep.handle(context.Background(), request{halt: true, detail: "maintenance", done: done})
	require.NoError(t, <-done)
	require.Equal(t, api.StateHalted, h.rep.halt.Status().State)
	failed := h.logs.FindLog(testlog.NewMessageContainsFilter("Halt could not rewind"))
	require.NotNil(t, failed, "another node's rewind taken for this node's")
	require.ErrorContains(t, failed.AttrValue("err").(error), "the engine's head is")
	require.True(t, h.rep.halt.rewindPending)
	h.requireHeads(blocks[5].Ref, "heads reset over an EL that was not rewound")
	h.rewinder.requireCalls(t, []eth.BlockID{blocks[5].Ref.ID()}, []eth.L2BlockRef{blocks[1].Ref})
	newPayloads := h.el.newPayloadCount()
	h.gossip(blocks[6].Env)
	require.Empty(t, h.el.inserted(newPayloads), "unsafe input not held")
}

// op-geth keeps a canonical block as its head when a forkchoice update names one of its ancestors (the fake EL does
// the same). Derivation building from L1 a block the replicator had already inserted above (its build began before
// the replicator's batch went in) leaves op-node's unsafe head on that block and op-geth's head above it. The
// replicator goes on from op-node's head: the blocks between go in again (op-geth has them), and both heads follow
// the source. Found in the backlog bench (B9): a fresh node stayed at block 12, op-geth at 13, for 13 minutes,
// "running", every round refused as stale. (No fakeEngine version: the fake engine has one head.)
func TestRealEngineOpGethHeadAboveOpNodesGoesOn(t *testing.T) {
	blocks := testkit.BuildChain(t, testkit.RollupConfig(), 20, 0, 0)
	h := newRealHarness(t, driverhook.HaltManual, blocks)
	h.source.Set(blocks, 13, nil)
	h.round()
	h.settle()
	h.requireHeads(blocks[12].Ref, "replicated")

	h.consolidate(11)
	h.derive(blocks[11]) // block 12, built again from L1 on block 11: op-node's unsafe head, not op-geth's
	require.Equal(t, blocks[12].Ref, h.el.head(), "the EL moved its head back to an ancestor")
	require.Equal(t, blocks[11].Ref, h.tracker.SyncStatus().UnsafeL2)

	h.source.Set(blocks, 20, nil)
	for i := 0; h.tracker.SyncStatus().UnsafeL2.Number < 20; i++ {
		require.Less(t, i, 5, "op-node's unsafe head stays at %s, op-geth's at %s", h.tracker.SyncStatus().UnsafeL2.ID(),
			h.el.head().ID())
		h.round()
		h.settle()
		h.requireRunning()
	}
	h.requireHeads(blocks[19].Ref, "after going on from op-node's head")
	h.requireChain(blocks)
	h.requireNothingAtOrBelowSafe()
}
