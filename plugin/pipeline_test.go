package plugin

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ethereum-optimism/optimism/op-node/rollup/engine"
	"github.com/ethereum-optimism/optimism/op-service/eth"

	"github.com/op-replicator/op-replicator/driverhook"
	"github.com/op-replicator/op-replicator/plugin/api"
	"github.com/op-replicator/op-replicator/plugin/internal/testkit"
	"github.com/op-replicator/op-replicator/plugin/source"
)

// gatedSource answers block 1 only once it answered every other block up to before (so that the blocks after it
// are ready when it is), and block gate only once open is closed. served is the highest block it answered.
type gatedSource struct {
	*testkit.Source
	before, gate uint64
	open         chan struct{}
	answered     atomic.Int64
	served       atomic.Uint64
}

func (s *gatedSource) Payload(ctx context.Context, n uint64) (*eth.ExecutionPayloadEnvelope, error) {
	timeout := time.After(10 * time.Second) // the test fails below rather than hang
	switch {
	case n == 1:
		for s.before > 2 && s.answered.Load() < int64(s.before-2) && ctx.Err() == nil {
			select {
			case <-time.After(time.Millisecond):
			case <-timeout:
				return nil, errors.New("test source: blocks before the gate were not asked for")
			}
		}
	case n == s.gate:
		select {
		case <-s.open:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-timeout:
		}
	}
	env, err := s.Source.Payload(ctx, n)
	if n > 1 && n < s.before {
		s.answered.Add(1)
	}
	for cur := s.served.Load(); n > cur && !s.served.CompareAndSwap(cur, n); cur = s.served.Load() {
	}
	return env, err
}

// A backlog longer than a round is taken round after round without waiting in between: only the round that reaches
// the source's head waits for the next block.
func TestRoundsGoOnAtOnceWhileBehind(t *testing.T) {
	blocks := testkit.BuildChain(t, testkit.RollupConfig(), maxBlocksPerRound+100, 0, 0)
	h := newHarness(t, driverhook.HaltManual, blocks)
	h.engine.setChain(blocks[:5])
	h.engine.setSafe(5)
	require.Zero(t, h.round(), "the source is more than a round ahead")
	require.Equal(t, uint64(5+maxBlocksPerRound), h.engine.head().Number)
	require.Equal(t, h.rep.cfg.PollInterval, h.round(), "at the source's head: wait for the next block")
	require.Equal(t, uint64(maxBlocksPerRound+100), h.engine.head().Number)
	h.requireRunning()
}

// Catching up in batches while derivation consolidates behind: every block is inserted once, in order, each above
// the safe head of its time, and the engine commits its chain once per batch, not once per block.
func TestCatchUpWhileDerivationConsolidates(t *testing.T) {
	blocks := testkit.BuildChain(t, testkit.RollupConfig(), 400, 0, 0)
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
		require.Equal(t, b.Ref, h.engine.chain[i+1], "block %d", i+1)
	}
	require.Equal(t, blocks[399].Ref, h.rep.lastReplicated())
	t.Logf("390 blocks in %d forkchoice updates", h.engine.forkchoiceUpdates)
}

// Derivation inserting the next blocks itself while a batch of ours is on its way (its safe head reached our unsafe
// head): our batch no longer extends the unsafe head, the engine refuses it as stale, and replication goes on from
// derivation's head without a halt.
func TestDerivationWinningTheRaceIsStaleNotAHalt(t *testing.T) {
	blocks := testkit.BuildChain(t, testkit.RollupConfig(), 200, 0, 0)
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
		require.Equal(t, b.Ref, h.engine.chain[i+1], "block %d", i+1)
	}
}

// A disagreement found while verifying the next batch stops the batch the engine is executing at its next block
// boundary: the halt does not wait for blocks it will rewind anyway, and nothing after the disagreement is inserted.
func TestDisagreementStopsTheBatchInFlight(t *testing.T) {
	cfg := testkit.RollupConfig()
	ours := testkit.BuildChain(t, cfg, 40, 0, 0)
	other := testkit.BuildChain(t, cfg, 40, 1, 36)
	// Block 37 of the source is on another block 36 than the one it served: a head mismatch, found as block 37 is
	// verified. The source answers block 37 only once a batch of several blocks is in the engine.
	served := append(append([]testkit.Block{}, ours[:36]...), other[36:]...)
	inEngine := make(chan struct{})
	h := newHarness(t, driverhook.HaltManual, served, withSource(func(h *harness) source.Source {
		return &gatedSource{Source: h.source, before: 37, gate: 37, open: inEngine}
	}))
	interrupted := make(chan bool, 1)
	var blockedAt atomic.Uint64
	// Counted from before the round: the verifier may have verified the blocks after block 1 before block 1's
	// insertion starts (they are fetched first), and would then read op-node's status no more.
	base := h.engine.statusReads.Load()
	h.engine.beforeInsert = func(ctx context.Context, ref eth.L2BlockRef) {
		if ref.Number == 1 {
			// Block 1 finishes once the verifier holds five more blocks (a read of op-node's status each, besides
			// the round's own few), so that the engine's next batch has several.
			want := base + 8
			deadline := time.Now().Add(10 * time.Second)
			for h.engine.statusReads.Load() < want && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
		}
		// The first block from 5 on in a batch of several: fewer than maxBatch blocks are left to verify before
		// block 37, so the verifier reaches it while the engine is still executing this block.
		if ctx.Done() == nil || ref.Number < 5 || !blockedAt.CompareAndSwap(0, ref.Number) {
			return
		}
		close(inEngine)
		select {
		case <-ctx.Done():
			interrupted <- true
		case <-time.After(10 * time.Second):
			interrupted <- false
		}
	}
	h.round()
	select {
	case ok := <-interrupted:
		require.True(t, ok, "the batch in the engine was not interrupted by the disagreement")
	default:
		t.Fatal("no batch of several blocks reached the engine before block 37")
	}
	h.requireHalted(api.ReasonHeadMismatch)
	require.Equal(t, int(blockedAt.Load()-1), h.engine.inserted, "a block inserted after the disagreement was found")
	require.Equal(t, uint64(0), h.engine.head().Number, "rewound to the safe head")
}

// An idle engine gets the blocks verified so far at once, not after the blocks already fetched are verified too: at
// the start of a round, with 37 blocks fetched when the first arrives, the engine's first batch is that block (or
// the few verified before the insert stage's goroutine first waits for a batch), not a full one, which kept the
// engine idle for the verification of 31 blocks at the start of every round.
func TestIdleEngineGetsTheVerifiedBlocksAtOnce(t *testing.T) {
	blocks := testkit.BuildChain(t, testkit.RollupConfig(), 60, 0, 0)
	h := newHarness(t, driverhook.HaltManual, blocks, withSource(func(h *harness) source.Source {
		return &gatedSource{Source: h.source, before: 40}
	}))
	h.round()
	h.requireRunning()
	require.Equal(t, uint64(60), h.engine.head().Number)
	require.Less(t, h.engine.batches[0], 8, "batches %v", h.engine.batches)
}

// While the engine executes a batch, the next blocks are fetched and verified, and wait; they go to the engine together
// as its next batch once it is idle: a full one (maxBatch) when the engine took long enough, one forkchoice update.
func TestFetchAndVerifyGoOnWhileTheEngineWorks(t *testing.T) {
	blocks := testkit.BuildChain(t, testkit.RollupConfig(), 200, 0, 0)
	var src *gatedSource
	h := newHarness(t, driverhook.HaltManual, blocks, withSource(func(h *harness) source.Source {
		src = &gatedSource{Source: h.source, before: 1, open: make(chan struct{})}
		return src
	}))
	var first atomic.Bool
	released := make(chan bool, 1)
	h.engine.beforeInsert = func(ctx context.Context, ref eth.L2BlockRef) {
		if first.Swap(true) {
			return
		}
		h.engine.mu.Lock()
		k := uint64(h.engine.batches[0])
		h.engine.mu.Unlock()
		// Verification stops with a full batch after the k blocks in the engine, and fetching catchUpDepth blocks
		// further: the source is asked for block k + maxBatch + catchUpDepth once block k + maxBatch is verified.
		want := k + maxBatch + catchUpDepth
		deadline := time.Now().Add(10 * time.Second)
		for src.served.Load() < want && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		released <- src.served.Load() >= want
	}
	h.round()
	require.True(t, <-released, "verification and fetching did not go on while the engine worked")
	h.requireRunning()
	require.GreaterOrEqual(t, len(h.engine.batches), 2)
	require.Equal(t, maxBatch, h.engine.batches[1], "the blocks verified while the engine worked were not its next batch")
	for i, b := range blocks[:h.engine.head().Number] {
		require.Equal(t, b.Ref, h.engine.chain[i+1], "block %d", i+1)
	}
}

// payloadsEngine answers ProcessPayloads with n and err, whatever it is given.
type payloadsEngine struct {
	driverhook.Engine
	n   int
	err error
}

func (e payloadsEngine) ProcessPayloads(context.Context, []*eth.ExecutionPayloadEnvelope, []eth.L2BlockRef) (int, error) {
	return e.n, e.err
}

// How the inserter names why the engine stopped: a refused block halts, a moved head or held input is stale, and a
// forkchoice update that failed after every block went in is an engine error (op-geth's head is not op-node's).
func TestInsertErrors(t *testing.T) {
	blocks := testkit.BuildChain(t, testkit.RollupConfig(), 3, 0, 0)
	envs := []*eth.ExecutionPayloadEnvelope{blocks[0].Env, blocks[1].Env}
	refs := []eth.L2BlockRef{blocks[0].Ref, blocks[1].Ref}
	for _, tc := range []struct {
		name string
		n    int
		err  error
		want error
	}{
		{"all inserted", 2, nil, nil},
		{"forkchoice update failed", 2, errors.New("forkchoice update to 0x.. failed"), errEngine},
		{"invalid", 1, engine.ErrPayloadInvalid, &Disagreement{}},
		{"stale", 0, engine.ErrStaleBuild, errStale},
		{"held", 0, engine.ErrUnsafeInputHeld, errStale},
		{"engine down", 0, errors.New("connection refused"), errEngine},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, err := (&inserter{engine: payloadsEngine{n: tc.n, err: tc.err}}).Insert(context.Background(), envs, refs)
			require.Equal(t, tc.n, n)
			var d *Disagreement
			switch {
			case tc.want == nil:
				require.NoError(t, err)
			case errors.As(tc.want, &d):
				require.ErrorAs(t, err, &d)
				require.Equal(t, api.ReasonInvalidPayload, d.Reason)
			default:
				require.ErrorIs(t, err, tc.want)
			}
		})
	}
}

// stepMetrics records the insert stage's steps (insert_seconds): how many of each and their total time.
type stepMetrics struct {
	NoopMetrics
	mu    sync.Mutex
	count map[string]int
	total map[string]time.Duration
}

func (m *stepMetrics) RecordInsert(step string, d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.count[step]++
	m.total[step] += d
}

// The insert stage records, for every batch, the time it waited for the batch (idle), the batch's time in the
// engine and its wait for op-node's loop: an operator reads from their shares what paces a catch-up.
func TestInsertStageRecordsItsSteps(t *testing.T) {
	blocks := testkit.BuildChain(t, testkit.RollupConfig(), 70, 0, 0)
	m := &stepMetrics{count: map[string]int{}, total: map[string]time.Duration{}}
	h := newHarness(t, driverhook.HaltManual, blocks, func(_ *harness, _ *components, mm *Metricer) { *mm = m })
	// Each block takes the engine 10 ms of the replicator's clock.
	h.engine.beforeInsert = func(context.Context, eth.L2BlockRef) { h.clock.AdvanceTime(10 * time.Millisecond) }
	h.round()
	h.requireRunning()
	require.Equal(t, 70, h.engine.inserted)

	batches := len(h.engine.batches)
	require.Greater(t, batches, 1, "70 blocks take more than one batch")
	require.Equal(t, map[string]int{insertStepIdle: batches, insertStepEngine: batches, insertStepLoopTurn: batches}, m.count)
	require.Equal(t, 700*time.Millisecond, m.total[insertStepEngine], "the engine's time is the batches' inserts")
	require.Zero(t, m.total[insertStepLoopTurn], "no op-node loop to wait for")
}
