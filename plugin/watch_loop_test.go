package plugin

import (
	"context"
	"testing"
	"time"

	"github.com/ethereum-optimism/optimism/op-node/rollup/engine"
	"github.com/ethereum-optimism/optimism/op-service/clock"
	"github.com/ethereum-optimism/optimism/op-service/eth"
	"github.com/ethereum/go-ethereum/common"
	"github.com/stretchr/testify/require"
)

// The insert stage waits after a batch until op-node's loop has handled the batch's engine event (the unsafe head
// it inserted), so that the loop's sync status and derivation are not starved through a catch-up; at most a bound,
// and not at all without op-node's loop.
func TestWaitLoopEndsOnceOpNodesLoopHandledTheBatch(t *testing.T) {
	clk := clock.NewDeterministicClock(time.Unix(1000, 0))
	w := newWatcher(clk)
	head := eth.L2BlockRef{Hash: common.Hash{1}, Number: 32}
	require.False(t, w.waitLoop(context.Background(), head.ID(), time.Second), "not on op-node's loop: no wait")

	w.onLoop = true
	done := make(chan bool, 1)
	go func() { done <- w.waitLoop(context.Background(), head.ID(), time.Second) }()
	// An earlier head handled meanwhile does not end the wait.
	w.OnEvent(context.Background(), engine.UnsafeUpdateEvent{Ref: eth.L2BlockRef{Hash: common.Hash{2}, Number: 31}})
	select {
	case <-done:
		t.Fatal("returned before the loop handled the batch's head")
	case <-time.After(20 * time.Millisecond):
	}
	w.OnEvent(context.Background(), engine.ForkchoiceUpdateEvent{UnsafeL2Head: head})
	require.True(t, <-done, "the loop handled the batch's forkchoice update")

	// A loop that does not get to it: the wait ends at the bound.
	next := eth.BlockID{Hash: common.Hash{3}, Number: 64}
	go func() { done <- w.waitLoop(context.Background(), next, time.Second) }()
	for {
		select {
		case ok := <-done:
			require.False(t, ok)
			return
		default:
			clk.AdvanceTime(100 * time.Millisecond)
			time.Sleep(time.Millisecond)
		}
	}
}
