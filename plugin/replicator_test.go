package plugin

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/log"
	"github.com/stretchr/testify/require"

	"github.com/ethereum-optimism/optimism/op-node/rollup/derive"
	"github.com/ethereum-optimism/optimism/op-node/rollup/engine"
	"github.com/ethereum-optimism/optimism/op-service/eth"
	"github.com/ethereum-optimism/optimism/op-service/testlog"

	"github.com/op-replicator/op-replicator/driverhook"
	"github.com/op-replicator/op-replicator/plugin/api"
	"github.com/op-replicator/op-replicator/plugin/internal/testkit"
	"github.com/op-replicator/op-replicator/plugin/relay"
)

func TestReplicatesUpToSourceHead(t *testing.T) {
	blocks := testkit.BuildChain(t, testkit.RollupConfig(), 10, 0, 0)
	h := newHarness(t, driverhook.HaltManual, blocks)
	h.round()
	h.requireRunning()
	require.Equal(t, blocks[9].Ref, h.engine.head())
	require.Equal(t, blocks[9].Ref, h.rep.lastReplicated())
	for _, b := range blocks {
		local, err := h.engine.L2BlockRefByNumber(context.Background(), b.Ref.Number)
		require.NoError(t, err)
		require.Equal(t, b.Ref.Hash, local.Hash)
	}
}

func TestOnlyAboveSafe(t *testing.T) {
	// Derivation already made blocks 1..5 safe: only 6..10 are taken from the source.
	blocks := testkit.BuildChain(t, testkit.RollupConfig(), 10, 0, 0)
	h := newHarness(t, driverhook.HaltManual, blocks)
	h.engine.setChain(blocks[:5])
	h.engine.setSafe(5)
	h.round()
	h.requireRunning()
	require.Equal(t, 5, h.engine.inserted)
	require.Equal(t, blocks[9].Ref, h.engine.head())
}

func TestStartupHeadMismatchHalts(t *testing.T) {
	cfg := testkit.RollupConfig()
	ours := testkit.BuildChain(t, cfg, 6, 1, 3) // our engine holds another block at heights 3.. than the source
	h := newHarness(t, driverhook.HaltManual, testkit.BuildChain(t, cfg, 6, 0, 0))
	h.engine.setChain(ours)
	h.engine.setSafe(2)
	h.round()
	h.requireHalted(api.ReasonHeadMismatch)
	require.Zero(t, h.engine.inserted)
}

func TestSourceSwitchingChainsHaltsWithHeadMismatch(t *testing.T) {
	cfg := testkit.RollupConfig()
	blocks := testkit.BuildChain(t, cfg, 6, 0, 0)
	h := newHarness(t, driverhook.HaltManual, blocks)
	h.round()
	require.Equal(t, uint64(6), h.engine.head().Number)
	h.engine.setSafe(2)
	// The source now serves another, internally valid chain that diverges at height 4.
	h.source.Set(testkit.BuildChain(t, cfg, 8, 1, 4), 8, nil)
	h.round()
	h.requireHalted(api.ReasonHeadMismatch)
}

func TestInvalidPayloadHalts(t *testing.T) {
	blocks := testkit.BuildChain(t, testkit.RollupConfig(), 6, 0, 0)
	h := newHarness(t, driverhook.HaltManual, blocks)
	h.engine.setChain(blocks[:1])
	h.engine.setSafe(1)
	h.engine.invalid[blocks[3].Ref.Hash] = true
	h.round()
	h.requireHalted(api.ReasonInvalidPayload)
	require.Equal(t, 2, h.engine.inserted, "blocks 2 and 3 inserted, 4 refused")
}

func TestSourceDownDoesNotHalt(t *testing.T) {
	blocks := testkit.BuildChain(t, testkit.RollupConfig(), 8, 0, 0)
	h := newHarness(t, driverhook.HaltManual, blocks)
	h.source.Set(blocks, 4, nil)
	h.round()
	require.Equal(t, uint64(4), h.engine.head().Number)

	h.source.Set(blocks, 8, errors.New("connection refused"))
	var delays []time.Duration
	for range 3 {
		delays = append(delays, h.round())
	}
	h.requireRunning()
	require.Zero(t, h.engine.rewinds)
	require.Equal(t, uint64(4), h.engine.head().Number)
	require.GreaterOrEqual(t, delays[0], h.rep.cfg.PollInterval, "retries are not faster than polling")
	require.Greater(t, delays[2], delays[0], "retries back off")

	h.source.Set(blocks, 8, nil)
	h.round()
	h.requireRunning()
	require.Equal(t, blocks[7].Ref, h.engine.head(), "replication resumes with no gap")
}

func TestEngineTemporaryErrorDoesNotHalt(t *testing.T) {
	blocks := testkit.BuildChain(t, testkit.RollupConfig(), 4, 0, 0)
	h := newHarness(t, driverhook.HaltManual, blocks)
	h.engine.insertErr = errors.New("engine RPC timeout")
	h.round()
	h.requireRunning()
	h.engine.insertErr = nil
	h.round()
	require.Equal(t, blocks[3].Ref, h.engine.head())
}

func TestStaleHeadIsNotADisagreement(t *testing.T) {
	// Gossip inserted the block first: the engine refuses ours as stale, the next round goes on from there.
	blocks := testkit.BuildChain(t, testkit.RollupConfig(), 4, 0, 0)
	h := newHarness(t, driverhook.HaltManual, blocks)
	h.engine.insertErr = engine.ErrStaleBuild
	// The next round comes soon, and later while the head keeps moving under us (no busy loop), never later than
	// the poll interval.
	first := h.round()
	require.Equal(t, staleBackoff, first)
	require.Equal(t, 2*staleBackoff, h.round())
	for range 20 {
		require.LessOrEqual(t, h.round(), h.rep.cfg.PollInterval)
	}
	require.Equal(t, h.rep.cfg.PollInterval, h.round())
	h.requireRunning()
	// 23 rounds so far, each refused as stale; a run this long warns (it only showed as errors_total before).
	require.Nil(t, h.logs.FindLog(testlog.NewMessageContainsFilter("keeps moving")), "warned before the %dth round", staleWarnEvery)
	for range staleWarnEvery - 23 {
		h.round()
	}
	require.NotNil(t, h.logs.FindLog(testlog.NewLevelFilter(log.LevelWarn), testlog.NewMessageContainsFilter("keeps moving under every round")))
	h.engine.insertErr = nil
	h.round()
	require.Equal(t, blocks[3].Ref, h.engine.head())
	h.engine.insertErr = engine.ErrStaleBuild
	h.source.Set(testkit.BuildChain(t, testkit.RollupConfig(), 5, 0, 0), 5, nil)
	require.Equal(t, staleBackoff, h.round(), "a success starts the backoff over")
}

func TestOriginBeyondOurL1HeadWaits(t *testing.T) {
	blocks := testkit.BuildChain(t, testkit.RollupConfig(), 10, 0, 0)
	h := newHarness(t, driverhook.HaltManual, blocks)
	h.engine.l1Head = testkit.L1Block(2, 0) // blocks 6.. have origins 3..
	h.round()
	h.requireRunning()
	require.Equal(t, uint64(5), h.engine.head().Number)
	h.engine.l1Head = testkit.L1Block(1000, 0)
	h.round()
	require.Equal(t, uint64(10), h.engine.head().Number)
}

func TestDerivationReplacingUnsafeBlocksHalts(t *testing.T) {
	cfg := testkit.RollupConfig()
	blocks := testkit.BuildChain(t, cfg, 8, 0, 0)
	h := newHarness(t, driverhook.HaltManual, blocks)
	h.round()
	require.Equal(t, uint64(8), h.engine.head().Number)

	// op-node derives another block 4 from L1 on top of block 3, replacing our unsafe 4..8.
	derived := testkit.BuildChain(t, cfg, 4, 2, 4)
	h.rep.watch.OnEvent(context.Background(), engine.BuildStartEvent{Attributes: &derive.AttributesWithParent{
		Parent: blocks[2].Ref, DerivedFrom: testkit.L1Block(9, 0)}})
	h.engine.setChain(derived)
	h.engine.setSafe(4)
	h.round()
	h.requireHalted(api.ReasonUnsafeReorg)
}

func TestEngineResetDroppingReplicatedBlocksHalts(t *testing.T) {
	blocks := testkit.BuildChain(t, testkit.RollupConfig(), 8, 0, 0)
	h := newHarness(t, driverhook.HaltManual, blocks)
	h.round()
	h.rep.watch.OnEvent(context.Background(), engine.EngineResetConfirmedEvent{})
	h.engine.setChain(blocks[:5])
	h.round()
	h.requireHalted(api.ReasonUnsafeReorg)
}

func TestL1ReorgOfUnsafeOriginHalts(t *testing.T) {
	blocks := testkit.BuildChain(t, testkit.RollupConfig(), 8, 0, 0)
	h := newHarness(t, driverhook.HaltManual, blocks)
	h.engine.setChain(blocks[:2])
	h.engine.setSafe(2)
	h.round()
	require.Equal(t, uint64(8), h.engine.head().Number)
	h.reorgL1(3, 9) // the origin of blocks 6..8 is gone from our L1 view
	h.round()
	h.requireHalted(api.ReasonL1OriginReorged)
}

func TestHaltDropsGossip(t *testing.T) {
	blocks := testkit.BuildChain(t, testkit.RollupConfig(), 2, 0, 0)
	h := newHarness(t, driverhook.HaltManual, blocks)
	next := &countingReceiver{}
	gate := h.svc.GateGossip(next)
	gate.OnUnsafeL2Payload(context.Background(), blocks[0].Env)
	require.Equal(t, 1, next.n)

	h.rep.haltNow(context.Background(), api.ReasonOperator, "test")
	gate.OnUnsafeL2Payload(context.Background(), blocks[1].Env)
	require.Equal(t, 1, next.n, "no gossiped block passes while halted")

	h.rep.resume("test")
	gate.OnUnsafeL2Payload(context.Background(), blocks[1].Env)
	require.Equal(t, 2, next.n)
}

type countingReceiver struct{ n int }

func (c *countingReceiver) OnUnsafeL2Payload(context.Context, *eth.ExecutionPayloadEnvelope) { c.n++ }

func TestNothingReplicatedWhileHalted(t *testing.T) {
	blocks := testkit.BuildChain(t, testkit.RollupConfig(), 6, 0, 0)
	h := newHarness(t, driverhook.HaltManual, blocks)
	h.rep.haltNow(context.Background(), api.ReasonOperator, "test")
	calls := h.source.Calls
	h.round()
	require.Zero(t, h.engine.inserted)
	require.Equal(t, calls, h.source.Calls, "a halted replicator does not use the source")
}

func TestWaitsForInitialELSync(t *testing.T) {
	blocks := testkit.BuildChain(t, testkit.RollupConfig(), 6, 0, 0)
	h := newHarness(t, driverhook.HaltManual, blocks)
	h.engine.elSyncing = true
	h.round()
	require.Zero(t, h.engine.inserted)
	h.engine.elSyncing = false
	h.round()
	require.Equal(t, 6, h.engine.inserted)
}

func TestHeadMovedByGossipIsStale(t *testing.T) {
	blocks := testkit.BuildChain(t, testkit.RollupConfig(), 4, 0, 0)
	h := newHarness(t, driverhook.HaltManual, blocks)
	// The status tracker already shows block 2 (inserted by gossip) while this round started at block 1.
	h.engine.setChain(blocks[:1])
	_, _, err := h.rep.prepare(context.Background(), eth.L2BlockRef{Hash: testkit.Genesis.Hash, L1Origin: h.cfg.Genesis.L1}, blocks[0].Env, nil)
	require.ErrorIs(t, err, errStale)
	require.Zero(t, h.engine.inserted, "no insertion attempt on a head that moved")
	h.round()
	h.requireRunning()
	require.Equal(t, blocks[3].Ref, h.engine.head())
}

// Catching up from far behind in batches inserts every block, in order, above the safe head.
func TestCatchUpInsertsEveryBlockInOrder(t *testing.T) {
	blocks := testkit.BuildChain(t, testkit.RollupConfig(), 120, 0, 0)
	h := newHarness(t, driverhook.HaltManual, blocks)
	h.engine.setChain(blocks[:10])
	h.engine.setSafe(10)
	for h.engine.head().Number < 120 {
		h.round()
		h.requireRunning()
	}
	require.Equal(t, 110, h.engine.inserted)
	for i, b := range blocks {
		require.Equal(t, b.Ref, h.engine.chain[i+1], "block %d", i+1)
	}
	require.Equal(t, blocks[119].Ref, h.rep.lastReplicated())
	t.Logf("110 blocks in %d forkchoice updates, batches %v", h.engine.forkchoiceUpdates, h.engine.batches)
}

// A batch is cut short between blocks by an operator's halt: the blocks inserted before it are rewound with the
// rest of the unsafe chain, and none is inserted after it.
func TestHaltInterruptsBatch(t *testing.T) {
	blocks := testkit.BuildChain(t, testkit.RollupConfig(), 40, 0, 0)
	h := newHarness(t, driverhook.HaltManual, blocks)
	h.engine.setChain(blocks[:1])
	h.engine.setSafe(1)
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the operator's request arrived before the batch
	b := &batch{}
	parent := blocks[0].Ref
	for _, blk := range blocks[1:10] {
		require.NoError(t, b.add(h.rep.prepare(context.Background(), parent, blk.Env, nil)))
		parent = blk.Ref
	}
	n, err := h.rep.insertBatch(ctx, b, blocks[39].Ref.ID())
	require.NoError(t, err, "an interrupted batch is no error")
	require.Zero(t, n)
	require.Zero(t, h.engine.inserted, "inserted after the request")
}

// announcingSource answers Head with a head it announced earlier, until ForgetHead: a newHeads subscription or an
// http poller that has not seen the source's latest yet.
type announcingSource struct {
	*testkit.Source
	mu        sync.Mutex
	announced *eth.BlockID
	forgot    int
}

func (s *announcingSource) Head(ctx context.Context) (eth.BlockID, error) {
	s.mu.Lock()
	announced := s.announced
	s.mu.Unlock()
	if announced != nil {
		return *announced, nil
	}
	return s.Source.Head(ctx)
}

func (s *announcingSource) ForgetHead() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.announced = nil
	s.forgot++
}

func (s *announcingSource) announce(id eth.BlockID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.announced = &id
}

// A head the source announced that differs from ours at our height is asked of the source again before it is a
// disagreement: the source's answer now decides. Confirmed, it halts (head-mismatch) in the next round.
func TestAnnouncedHeadMismatchIsAskedAgainBeforeItHalts(t *testing.T) {
	cfg := testkit.RollupConfig()
	blocks := testkit.BuildChain(t, cfg, 6, 0, 0)
	var src *announcingSource
	h := newHarness(t, driverhook.HaltManual, blocks, func(h *harness, parts *components, _ *Metricer) {
		src = &announcingSource{Source: h.source}
		parts.source = src
	})
	h.round()
	h.requireRunning()
	require.Equal(t, uint64(6), h.engine.head().Number)
	h.engine.setSafe(2)

	// Stale: the source announced another block 6 before, and serves ours now.
	other := testkit.BuildChain(t, cfg, 6, 1, 4)
	src.announce(other[5].Ref.ID())
	h.round()
	h.requireRunning()
	require.Equal(t, 1, src.forgot, "the source was not asked again")
	h.round()
	h.requireRunning()
	require.Equal(t, uint64(6), h.engine.head().Number)

	// Confirmed: the source serves the other chain, as it announced.
	h.source.Set(other, 6, nil)
	src.announce(other[5].Ref.ID())
	h.round()
	h.requireRunning()
	require.Equal(t, 2, src.forgot)
	h.round()
	h.requireHalted(api.ReasonHeadMismatch)
}

// A relay source still making its first subscription has no head yet (relay.ErrNoBlockYet): a node starting up asks
// before the relay could answer. The round waits for it, its first block wakes the loop, and nothing is counted or
// logged as a failure; a relay that failed is still counted.
func TestRelayWithNoBlockYetIsWaitedFor(t *testing.T) {
	blocks := testkit.BuildChain(t, testkit.RollupConfig(), 4, 0, 0)
	m := &countingMetrics{}
	h := newHarness(t, driverhook.HaltManual, blocks, withMetrics(m))
	h.source.Set(blocks, 4, fmt.Errorf("%w: relay: subscribing", relay.ErrNoBlockYet))
	require.Equal(t, time.Second, h.round(), "waits for the poll interval, or the relay's first block")
	h.requireRunning()
	require.Zero(t, m.source.Load(), "a relay still subscribing is no source failure")
	require.Nil(t, h.logs.FindLog(testlog.NewLevelFilter(log.LevelWarn), testlog.NewMessageContainsFilter("Replication round failed")))

	h.source.Set(blocks, 4, nil)
	h.round()
	require.Equal(t, blocks[3].Ref, h.engine.head())

	h.source.Set(blocks, 4, fmt.Errorf("%w: relay: no block received yet", relay.ErrUnavailable))
	h.round()
	require.Equal(t, int64(1), m.source.Load(), "a relay that failed is counted")
}
