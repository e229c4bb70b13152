package plugin

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ethereum-optimism/optimism/op-node/rollup/derive"
	"github.com/ethereum-optimism/optimism/op-service/eth"
	"github.com/ethereum-optimism/optimism/op-service/testlog"

	"github.com/op-replicator/op-replicator/driverhook"
	"github.com/op-replicator/op-replicator/plugin/api"
	"github.com/op-replicator/op-replicator/plugin/internal/testkit"
)

// haltedHarness returns a replicator that halted on a head mismatch at start-up; the source is then fixed, so a
// resumed replicator replicates again.
func haltedHarness(t *testing.T, policy driverhook.HaltPolicy) (*harness, []testkit.Block) {
	cfg := testkit.RollupConfig()
	blocks := testkit.BuildChain(t, cfg, 6, 0, 0)
	h := newHarness(t, policy, blocks)
	h.engine.setChain(testkit.BuildChain(t, cfg, 3, 1, 2))
	h.round()
	h.requireHalted(api.ReasonHeadMismatch)
	return h, blocks
}

func TestTimedHaltResumesAfterDuration(t *testing.T) {
	h, blocks := haltedHarness(t, driverhook.HaltTimed)
	require.Equal(t, h.clock.Now().Add(time.Minute), h.rep.halt.Status().ResumeAt)
	h.clock.AdvanceTime(59 * time.Second)
	h.round()
	require.Equal(t, api.StateHalted, h.rep.halt.Status().State)
	require.Zero(t, h.engine.inserted)

	h.clock.AdvanceTime(time.Second)
	h.round()
	h.requireRunning()
	require.Equal(t, blocks[5].Ref, h.engine.head())
}

func TestManualHaltWaitsForOperator(t *testing.T) {
	h, blocks := haltedHarness(t, driverhook.HaltManual)
	h.clock.AdvanceTime(24 * time.Hour)
	h.round()
	require.Equal(t, api.StateHalted, h.rep.halt.Status().State)

	done := make(chan error, 1)
	h.rep.handle(context.Background(), request{done: done})
	require.NoError(t, <-done)
	h.round()
	h.requireRunning()
	require.Equal(t, blocks[5].Ref, h.engine.head())
}

func TestUntilSyncedHaltResumesWhenDerivationCaughtUp(t *testing.T) {
	h, blocks := haltedHarness(t, driverhook.HaltUntilSynced)
	l1Head := h.engine.SyncStatus().HeadL1

	h.clock.AdvanceTime(time.Hour)
	h.round()
	require.Equal(t, api.StateHalted, h.rep.halt.Status().State, "time alone does not resume")

	h.rep.watch.OnEvent(context.Background(), derive.DeriverIdleEvent{Origin: testkit.L1Block(l1Head.Number-10, 0)})
	h.round()
	require.Equal(t, api.StateHalted, h.rep.halt.Status().State, "idle far behind the L1 head is not caught up")

	h.engine.elSyncing = true
	h.rep.watch.OnEvent(context.Background(), derive.DeriverIdleEvent{Origin: l1Head})
	h.round()
	require.Equal(t, api.StateHalted, h.rep.halt.Status().State, "not while the engine is EL syncing")

	h.engine.elSyncing = false
	h.round()
	h.requireRunning()
	require.Equal(t, blocks[5].Ref, h.engine.head())
}

func TestUntilSyncedIgnoresIdleBeforeHalt(t *testing.T) {
	cfg := testkit.RollupConfig()
	h := newHarness(t, driverhook.HaltUntilSynced, testkit.BuildChain(t, cfg, 6, 0, 0))
	h.rep.watch.OnEvent(context.Background(), derive.DeriverIdleEvent{Origin: h.engine.SyncStatus().HeadL1})
	h.clock.AdvanceTime(time.Second)
	h.engine.setChain(testkit.BuildChain(t, cfg, 3, 1, 2))
	h.round()
	h.requireHalted(api.ReasonHeadMismatch)
	h.round()
	require.Equal(t, api.StateHalted, h.rep.halt.Status().State)
}

func TestOperatorHaltAndResumeOverAPI(t *testing.T) {
	blocks := testkit.BuildChain(t, testkit.RollupConfig(), 6, 0, 0)
	h := newHarness(t, driverhook.HaltTimed, blocks)
	h.engine.setSafe(0)
	client := h.client()
	ctx := context.Background()
	require.Error(t, client.Halt(ctx, "not started"), "requests need the running loop")

	require.NoError(t, h.svc.Start(ctx))
	t.Cleanup(func() { require.NoError(t, h.svc.Stop(ctx)) })
	require.Eventually(t, func() bool { return h.engine.head().Number == 6 }, 5*time.Second, 10*time.Millisecond)

	require.NoError(t, client.Halt(ctx, "maintenance"))
	st, err := client.Status(ctx)
	require.NoError(t, err)
	require.Equal(t, api.StateHalted, st.State)
	require.Equal(t, api.ReasonOperator, st.HaltReason)
	require.Equal(t, "maintenance", st.HaltDetail)
	require.Equal(t, uint64(0), h.engine.head().Number, "halt rewinds to safe")
	require.Error(t, client.Halt(ctx, ""), "already halted")

	require.NoError(t, client.Resume(ctx))
	require.Eventually(t, func() bool { return h.engine.head().Number == 6 }, 5*time.Second, 10*time.Millisecond)
	st, err = client.Status(ctx)
	require.NoError(t, err)
	require.Equal(t, api.StateRunning, st.State)
	require.Equal(t, blocks[5].Ref.ID(), st.LastReplicated)
	require.Error(t, client.Resume(ctx), "not halted")
}

func TestAdminMethodsOnlyWithAdmin(t *testing.T) {
	h := newHarness(t, driverhook.HaltTimed, nil)
	require.Len(t, h.svc.APIs(false), 1)
	require.Len(t, h.svc.APIs(true), 2)
	for _, api := range h.svc.APIs(true) {
		require.Equal(t, "replicator", api.Namespace)
	}
}

// The round after an operator's resume runs however late the requesting goroutine is scheduled after handing the
// request over (here: never, as if descheduled): the loop counts the request off before that round starts. It was
// counted off by the requester, and a round started before that was cancelled at once and waited for a timer.
func TestRoundAfterAResumeRunsWhateverTheRequesterDoes(t *testing.T) {
	blocks := testkit.BuildChain(t, testkit.RollupConfig(), 6, 0, 0)
	h := newHarness(t, driverhook.HaltManual, blocks)
	h.engine.setSafe(0)
	ctx := context.Background()
	require.NoError(t, h.svc.Start(ctx))
	t.Cleanup(func() { require.NoError(t, h.svc.Stop(ctx)) })
	require.Eventually(t, func() bool { return h.engine.head().Number == 6 }, 5*time.Second, 10*time.Millisecond)
	require.NoError(t, h.client().Halt(ctx, "maintenance"))
	require.Equal(t, uint64(0), h.engine.head().Number)

	// What mailbox.send does, up to the hand-over.
	done := make(chan error, 1)
	h.rep.mail.interrupt(1)
	h.rep.mail.requests <- request{done: done}
	require.NoError(t, <-done)
	require.Eventually(t, func() bool { return h.engine.head().Number == 6 }, 5*time.Second, 10*time.Millisecond,
		"the round after the resume must replicate")
}

// A halt reads op-node's engine back after rewinding op-geth over --replicator.l2.rpc, to catch a flag that names
// another op-geth. It reads it before op-node goes on: derivation inserting the next block right after the rewind
// is not the old head still there. A rewind that did not reach op-node's engine fails closed: op-node's heads stay
// on the chain the engine holds.
func TestHaltChecksTheEngineItRewound(t *testing.T) {
	blocks := testkit.BuildChain(t, testkit.RollupConfig(), 6, 0, 0)
	for _, tc := range []struct {
		name     string
		thisGeth bool // the rewinder rewinds op-node's own engine
	}{
		{"this node's op-geth", true},
		{"another op-geth", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var engineHeads []eth.BlockID
			h := newHarness(t, driverhook.HaltManual, blocks, withRewinder(func(h *harness) rewinder {
				return rewinderFunc(func(_ context.Context, safe eth.L2BlockRef, engineHead eth.BlockID) error {
					engineHeads = append(engineHeads, engineHead)
					if tc.thisGeth {
						h.engine.setHead(safe.Number)
					}
					return nil
				})
			}))
			h.round()
			require.Equal(t, blocks[5].Ref, h.engine.head())
			h.engine.setSafe(2)
			h.engine.afterRewind = func() { h.engine.derive(blocks[2]) } // derivation, at once

			done := make(chan error, 1)
			h.rep.handle(context.Background(), request{halt: true, detail: "maintenance", done: done})
			require.NoError(t, <-done)
			require.Equal(t, api.StateHalted, h.rep.halt.Status().State)
			require.Equal(t, []eth.BlockID{blocks[5].Ref.ID()}, engineHeads, "the rewinder is given the engine's head")
			failed := h.logs.FindLog(testlog.NewMessageContainsFilter("Halt could not rewind"))
			if tc.thisGeth {
				require.Nil(t, failed, "a derived block taken for the old head")
				require.False(t, h.rep.halt.rewindPending)
			} else {
				require.NotNil(t, failed, "another op-geth's rewind taken for this node's")
				require.ErrorContains(t, failed.AttrValue("err").(error), "the engine's head is")
				require.True(t, h.rep.halt.rewindPending, "the rewind is retried while halted")
				require.Equal(t, blocks[5].Ref, h.engine.head(), "op-node's heads reset over an engine that was not rewound")
				require.Zero(t, h.engine.rewinds)
			}
		})
	}
}

// A rewind that fails (op-geth cannot roll back, or is not reachable) leaves op-node's heads on op-geth's chain with
// input held, says why in replicator_status, and is retried with backoff until it succeeds.
func TestHaltRewindFailsClosedAndRetries(t *testing.T) {
	blocks := testkit.BuildChain(t, testkit.RollupConfig(), 6, 0, 0)
	fail := errors.New("debug_setHead: connection refused")
	var calls int
	h := newHarness(t, driverhook.HaltManual, blocks, withRewinder(func(h *harness) rewinder {
		return rewinderFunc(func(_ context.Context, safe eth.L2BlockRef, _ eth.BlockID) error {
			calls++
			if fail != nil {
				return fail
			}
			h.engine.setHead(safe.Number)
			return nil
		})
	}))
	h.round()
	require.Equal(t, blocks[5].Ref, h.engine.head())
	h.engine.setSafe(2)

	done := make(chan error, 1)
	h.rep.handle(context.Background(), request{halt: true, detail: "maintenance", done: done})
	require.NoError(t, <-done)
	require.Equal(t, blocks[5].Ref, h.engine.head(), "heads reset over op-geth's rejected chain")
	require.True(t, h.engine.held, "input must stay held")
	st, err := h.svc.Status(context.Background())
	require.NoError(t, err)
	require.Equal(t, api.StateHalted, st.State)
	require.Contains(t, st.RewindError, "connection refused")

	// Not retried before the backoff, then retried; nothing is inserted meanwhile.
	h.round()
	require.Equal(t, 1, calls)
	h.clock.AdvanceTime(time.Minute)
	h.round()
	require.Equal(t, 2, calls)
	require.Equal(t, blocks[5].Ref, h.engine.head())

	fail = nil
	h.clock.AdvanceTime(time.Minute)
	h.round()
	require.Equal(t, 3, calls)
	require.Equal(t, blocks[1].Ref, h.engine.head(), "rewound to the safe head once op-geth could be rewound")
	st, err = h.svc.Status(context.Background())
	require.NoError(t, err)
	require.Empty(t, st.RewindError)
	require.False(t, h.rep.halt.rewindPending)
}

// boundedRewinder rewinds this node's engine, across at most bound blocks above the safe head.
type boundedRewinder struct {
	h     *harness
	bound uint64
}

func (b boundedRewinder) Rewind(_ context.Context, safe eth.L2BlockRef, _ eth.BlockID) error {
	b.h.engine.setHead(safe.Number)
	return nil
}

func (b boundedRewinder) MaxUnsafeRange() uint64 { return b.bound }

// On an op-geth that can be rewound only across so many blocks (hash scheme, not an archive node), the replicator
// holds no more unsafe blocks above the safe head than that, and goes on as the safe head moves.
func TestUnsafeRangeBoundedByTheRewinder(t *testing.T) {
	blocks := testkit.BuildChain(t, testkit.RollupConfig(), 10, 0, 0)
	h := newHarness(t, driverhook.HaltManual, blocks, withRewinder(func(h *harness) rewinder {
		return boundedRewinder{h: h, bound: 3}
	}))
	h.engine.setSafe(0)
	h.round()
	require.Equal(t, uint64(3), h.engine.head().Number, "replicated beyond the range a halt can rewind")
	require.Equal(t, h.rep.cfg.PollInterval, h.round(), "at the bound, the replicator waits")
	require.Equal(t, uint64(3), h.engine.head().Number)

	h.engine.setSafe(2)
	h.round()
	require.Equal(t, uint64(5), h.engine.head().Number)
	h.requireRunning()
}

// otherNodeRewinder is a --replicator.l2.rpc that the identity check finds to be another node.
type otherNodeRewinder struct{ found *atomic.Bool }

func (o otherNodeRewinder) CheckIdentity(context.Context, headerReader, time.Time, func() bool) error {
	if o.found.Swap(true) {
		return nil
	}
	return fmt.Errorf("%w: ahead of the engine", errOtherNode)
}

func (o otherNodeRewinder) Rewind(context.Context, eth.L2BlockRef, eth.BlockID) error {
	if o.found.Load() {
		return fmt.Errorf("%w: refused", errOtherNode)
	}
	return nil
}

// A --replicator.l2.rpc found, while running, to be another node is shown in replicator_status, and a halt then
// rewinds nothing: it fails closed.
func TestIdentityCheckWhileRunning(t *testing.T) {
	blocks := testkit.BuildChain(t, testkit.RollupConfig(), 6, 0, 0)
	var found atomic.Bool
	h := newHarness(t, driverhook.HaltManual, blocks, withRewinder(func(*harness) rewinder { return otherNodeRewinder{&found} }))
	h.round()
	h.rep.halt.wait()
	st, err := h.svc.Status(context.Background())
	require.NoError(t, err)
	require.Contains(t, st.L2RPCError, "not this node's op-geth")
	require.Equal(t, blocks[5].Ref, h.engine.head(), "replication goes on")

	h.engine.setSafe(2)
	done := make(chan error, 1)
	h.rep.handle(context.Background(), request{halt: true, detail: "x", done: done})
	require.NoError(t, <-done)
	st, err = h.svc.Status(context.Background())
	require.NoError(t, err)
	require.Equal(t, api.StateHalted, st.State)
	require.Contains(t, st.RewindError, "not this node's op-geth")
	require.Equal(t, blocks[5].Ref, h.engine.head(), "heads reset over an engine that was not rewound")
}
