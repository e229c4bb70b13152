package source

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/log"

	"github.com/ethereum-optimism/optimism/op-node/rollup"
	"github.com/ethereum-optimism/optimism/op-service/clock"
	"github.com/ethereum-optimism/optimism/op-service/testlog"

	"github.com/op-replicator/op-replicator/driverhook"
	"github.com/op-replicator/op-replicator/plugin/internal/testkit"
)

// A websocket source starts fetching a block when its newHeads announces it, and the loop's request for that block
// takes what was fetched: the round trip is off the loop's path, and the source is asked once.
func TestRPCSourceFetchesAnnouncedBlockEarly(t *testing.T) {
	cfg := testkit.IsthmusRollupConfig()
	first := testkit.IsthmusBlock(t, cfg)
	el := newSourceEL(first, blockAt(first, 2))
	src := testRPCSource(t, cfg, el.serve(t, true), nil)
	require.NoError(t, src.Start(context.Background()))
	ctx := context.Background()
	for n := uint64(1); n <= 2; n++ {
		el.heads <- el.blocks[n].Header()
		// The fetch can reach the EL before the source records the announcement it started on: both are waited for.
		require.Eventually(t, func() bool {
			h := src.notified.Load()
			return el.rawBlockCalls() == int(n) && h != nil && h.id.Number == n
		}, 5*time.Second, time.Millisecond, "block %d fetched on its announcement", n)
		env, err := src.Payload(ctx, n)
		require.NoError(t, err)
		require.Equal(t, el.blocks[n].Hash(), env.ExecutionPayload.BlockHash)
		require.Equal(t, int(n), el.rawBlockCalls(), "block %d asked for again", n)
	}
}

// testEarlySource is a websocket source of el on a deterministic clock, started.
func testEarlySource(t *testing.T, cfg *rollup.Config, el *sourceEL) (*rpcSource, *clock.DeterministicClock) {
	clk := clock.NewDeterministicClock(time.Unix(1_800_000_000, 0))
	src, err := newRPCSource(testlog.Logger(t, log.LevelInfo), el.serve(t, true), cfg, 5*time.Second, driverhook.DefaultPollInterval, noopMetrics{}, clk)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, src.Stop(context.Background())) })
	require.NoError(t, src.Start(context.Background()))
	return src, clk
}

// announce has el's newHeads announce h and waits until src took it in.
func announce(t *testing.T, el *sourceEL, src *rpcSource, h *types.Header) {
	el.heads <- h
	require.Eventually(t, func() bool {
		n := src.notified.Load()
		return n != nil && n.id.Hash == h.Hash()
	}, 5*time.Second, time.Millisecond)
}

// While the loop does not take the blocks fetched early (halted, or catching up below the head), announcements
// cost the source one fetch, not one each. One that is no longer the head announced is dropped when the loop asks
// past it, and the next announcement is fetched early again. A failed early fetch (the block announced but not served yet) is retried when the loop asks.
func TestRPCSourceEarlyFetchWaitsToBeTaken(t *testing.T) {
	cfg := testkit.IsthmusRollupConfig()
	first := testkit.IsthmusBlock(t, cfg)
	el := newSourceEL(first)
	for n := uint64(2); n <= 5; n++ {
		el.blocks[n] = blockAt(first, n)
	}
	src, _ := testEarlySource(t, cfg, el)
	for n := uint64(1); n <= 3; n++ {
		announce(t, el, src, el.blocks[n].Header())
	}
	require.Eventually(t, func() bool { return el.rawBlockCalls() == 1 }, 5*time.Second, time.Millisecond)
	require.Equal(t, uint64(1), src.early.Load().id.Number, "only the first announcement is fetched while untaken")

	// The loop asks for block 3: the early fetch of block 1 is behind it and no longer the head announced: dropped,
	// and block 3 is fetched now. (One behind a request but of the latest head is kept: the prefetcher asks for
	// several blocks at once, in any order.)
	env, err := src.Payload(context.Background(), 3)
	require.NoError(t, err)
	require.Equal(t, el.blocks[3].Hash(), env.ExecutionPayload.BlockHash)
	require.Equal(t, 2, el.rawBlockCalls())
	require.Nil(t, src.early.Load())

	// Block 4 is announced before the source serves it: the early fetch finds nothing, the loop's request asks again.
	b4 := el.blocks[4]
	el.mu.Lock()
	delete(el.blocks, 4)
	el.mu.Unlock()
	el.heads <- b4.Header()
	require.Eventually(t, func() bool { return el.rawBlockCalls() == 3 }, 5*time.Second, time.Millisecond)
	f := src.early.Load()
	require.NotNil(t, f)
	<-f.done
	require.ErrorIs(t, f.err, ethereum.NotFound)
	el.mu.Lock()
	el.blocks[4] = b4
	el.mu.Unlock()
	env, err = src.Payload(context.Background(), 4)
	require.NoError(t, err)
	require.Equal(t, b4.Hash(), env.ExecutionPayload.BlockHash)
	require.Equal(t, 4, el.rawBlockCalls())
}

// The early fetch is of the block announced: another block announced at its height before it was taken (a reorg)
// replaces it, and a fetch that got another block than the one announced (the source reorged in between) is not
// used: the block at that height is asked for again.
func TestRPCSourceEarlyFetchFollowsReorgs(t *testing.T) {
	cfg := testkit.IsthmusRollupConfig()
	first := testkit.IsthmusBlock(t, cfg)
	el := newSourceEL(first, blockAt(first, 2))
	orphan := el.blocks[2]
	src, _ := testEarlySource(t, cfg, el)
	announce(t, el, src, orphan.Header())
	require.Eventually(t, func() bool { return el.rawBlockCalls() == 1 }, 5*time.Second, time.Millisecond)
	<-src.early.Load().done

	// The sequencer replaces block 2 (another extra field: another hash) and announces it.
	h := types.CopyHeader(orphan.Header())
	h.Extra = append(h.Extra[:len(h.Extra):len(h.Extra)], 1)
	replacement := types.NewBlockWithHeader(h).WithBody(*orphan.Body())
	require.NotEqual(t, orphan.Hash(), replacement.Hash())
	el.mu.Lock()
	el.blocks[2] = replacement
	el.mu.Unlock()
	announce(t, el, src, replacement.Header())
	require.Eventually(t, func() bool { return el.rawBlockCalls() == 2 }, 5*time.Second, time.Millisecond)
	env, err := src.Payload(context.Background(), 2)
	require.NoError(t, err)
	require.Equal(t, replacement.Hash(), env.ExecutionPayload.BlockHash)
	require.Equal(t, 2, el.rawBlockCalls())

	// Announced, but replaced at the source before the early fetch: that fetch is not the block announced.
	el.mu.Lock()
	el.blocks[2] = orphan
	el.mu.Unlock()
	el.heads <- blockAt(first, 3).Header() // no block 3 served: an early fetch of 3 finds nothing
	require.Eventually(t, func() bool { return el.rawBlockCalls() == 3 }, 5*time.Second, time.Millisecond)
	_, _ = src.Payload(context.Background(), 3) // takes it (not found), asks again
	el.mu.Lock()
	el.blocks[2] = replacement
	el.mu.Unlock()
	announce(t, el, src, orphan.Header()) // the source announces the orphan, but serves the replacement
	require.Eventually(t, func() bool { return el.rawBlockCalls() == 5 }, 5*time.Second, time.Millisecond)
	<-src.early.Load().done
	env, err = src.Payload(context.Background(), 2)
	require.NoError(t, err)
	require.Equal(t, replacement.Hash(), env.ExecutionPayload.BlockHash)
	require.Equal(t, 6, el.rawBlockCalls(), "the early fetch of another block than announced was used")
}

// A block fetched early is not used once it is more than a block time old (the loop was halted, or behind, since):
// the source is asked for its block at that height again.
func TestRPCSourceEarlyFetchExpires(t *testing.T) {
	cfg := testkit.IsthmusRollupConfig()
	el := newSourceEL(testkit.IsthmusBlock(t, cfg))
	clk := clock.NewDeterministicClock(time.Unix(1_800_000_000, 0))
	src, err := newRPCSource(testlog.Logger(t, log.LevelInfo), el.serve(t, true), cfg, 5*time.Second, driverhook.DefaultPollInterval, noopMetrics{}, clk)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, src.Stop(context.Background())) })
	require.NoError(t, src.Start(context.Background()))
	el.heads <- el.blocks[1].Header()
	require.Eventually(t, func() bool { return el.rawBlockCalls() == 1 }, 5*time.Second, time.Millisecond)
	clk.AdvanceTime(time.Duration(cfg.BlockTime)*time.Second + time.Millisecond)
	env, err := src.Payload(context.Background(), 1)
	require.NoError(t, err)
	require.Equal(t, el.blocks[1].Hash(), env.ExecutionPayload.BlockHash)
	require.Equal(t, 2, el.rawBlockCalls(), "the expired early fetch was used")
}
