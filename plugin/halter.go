package plugin

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/ethereum/go-ethereum/log"

	"github.com/ethereum-optimism/optimism/op-service/clock"
	"github.com/ethereum-optimism/optimism/op-service/eth"
	"github.com/ethereum-optimism/optimism/op-service/retry"

	"github.com/op-replicator/op-replicator/driverhook"
)

// halter is the halt: the running/halted state machine (haltState, halt.go), the rewind of the unsafe chain a halt
// calls for, retried with backoff while halted, and the checks that --replicator.l2.rpc reaches the engine op-node
// drives (at start-up, and while running), so that a rewind never hits another node.
//
// The state machine is safe for concurrent use: the loop, the RPC API and the gossip gate read it, and the gate
// holds its read lock while it hands a payload on. The rest is the loop goroutine's, but for the identity check,
// which runs on a goroutine of its own that the loop joins (wait) before it returns.
type halter struct {
	*haltState

	log      log.Logger
	engine   driverhook.Engine
	onLoop   *loopRewinder // runs the controller's rewind on op-node's event loop
	l2       driverhook.L2Chain
	status   driverhook.SyncStatus
	watch    *watcher
	metrics  Metricer
	clock    clock.Clock
	backoff  retry.Strategy
	board    *statusBoard
	rewinder rewinder    // rewinds op-geth's own chain at a halt; nil in tests that do not need it
	genesis  eth.BlockID // the rollup's L2 genesis, to check that --replicator.l2.rpc is this chain's op-geth

	// rewindPending: halted, but op-geth was not rewound yet (the rewind failed, or the node restarted halted).
	rewindPending bool
	// rewindFailures and rewindRetryAt back a failing rewind off.
	rewindFailures int
	rewindRetryAt  time.Time
	// identityAt is when the rewinder's identity was last checked; identityBusy while a check is queued or runs (on
	// the checker's goroutine, off the round's path: identityChecks, identityDone; ended by wait); rewindEpoch counts
	// rewinds, so that a check that straddles one is not believed.
	identityAt     time.Time
	identityBusy   atomic.Bool
	identityChecks chan func()
	identityDone   chan struct{}
	rewindEpoch    atomic.Uint64
}

// rewinder rewinds the execution engine's own chain to the safe head (engineRewinder). engineHead is the latest
// block of the engine op-node drives, read under the controller's lock: a rewinder that does not reach that engine
// must refuse.
type rewinder interface {
	Rewind(ctx context.Context, safe eth.L2BlockRef, engineHead eth.BlockID) error
}

// identityChecker is a rewinder that can tell, while the replicator runs, that it does not reach the engine op-node
// drives (engineRewinder.CheckIdentity).
type identityChecker interface {
	CheckIdentity(ctx context.Context, engine headerReader, now time.Time, still func() bool) error
}

// startChecker is a rewinder that checks, before the replicator starts, that it reaches this chain's op-geth and the
// engine op-node drives (engineRewinder.Check).
type startChecker interface {
	Check(ctx context.Context, genesis eth.BlockID, engine headReader) error
}

// identityCheckEvery bounds how often the rewinder's identity is checked: at the start of a round, when a source
// has a new head, which this node's engine does not have yet but another node of the chain may.
const identityCheckEvery = time.Second

// rangeBounder is a rewinder that can rewind op-geth only across so many blocks above the safe head (0: any).
type rangeBounder interface {
	MaxUnsafeRange() uint64
}

// checkL2RPC is the start-up check of --replicator.l2.rpc: this chain's op-geth, the engine op-node drives.
func (h *halter) checkL2RPC(ctx context.Context) error {
	c, ok := h.rewinder.(startChecker)
	if !ok {
		return nil
	}
	return c.Check(ctx, h.genesis, h.l2)
}

// unsafeRange is how many blocks above the safe head the unsafe chain may reach for a halt to stay able to rewind
// op-geth (0: any).
func (h *halter) unsafeRange() uint64 {
	if b, ok := h.rewinder.(rangeBounder); ok {
		return b.MaxUnsafeRange()
	}
	return 0
}

// retryRewind retries a rewind that has not succeeded yet, once its backoff has passed. Called while halted.
func (h *halter) retryRewind(ctx context.Context) {
	if h.rewindPending && !h.clock.Now().Before(h.rewindRetryAt) {
		h.rewind(ctx)
	}
}

// restoreHalted takes a halt a previous run left in the state file: unsafe input is held until the halt ends, and
// the first round rewinds op-geth again, in case the previous run stopped between keeping the halt and rewinding.
func (h *halter) restoreHalted(st HaltStatus) {
	h.Restore(st)
	h.engine.HoldUnsafeInput(true)
	h.rewindPending = true
}

// clearRewind forgets a rewind still pending: the halt ended.
func (h *halter) clearRewind() {
	h.rewindPending, h.rewindFailures, h.rewindRetryAt = false, 0, time.Time{}
	h.board.publish(func(s *snapshot) { s.rewindErr = "" })
}

// rewind holds unsafe input and rewinds the unsafe chain to the safe head: op-geth's own chain (rewinder), then
// op-node's heads. Until the engine controller has found its heads there is nothing to rewind yet: it is done at the
// next round. A rewind that did not reach op-geth fails closed: op-node's heads stay on the chain op-geth holds,
// input stays held, and it is retried while halted, with backoff; replicator_status shows why (rewindError).
func (h *halter) rewind(ctx context.Context) (eth.L2BlockRef, error) {
	ctx = context.WithoutCancel(ctx)
	h.rewindPending = true
	h.rewindEpoch.Add(1)
	if h.engine.IsEngineInitialELSyncing() || h.status.SyncStatus().UnsafeL2 == (eth.L2BlockRef{}) {
		h.engine.HoldUnsafeInput(true)
		h.board.publish(func(s *snapshot) { s.rewindErr = "the engine's heads are not known yet: rewind deferred" })
		return eth.L2BlockRef{}, errors.New("the engine's heads are not known yet: rewind deferred")
	}
	rewindEngine := func(ctx context.Context, safe eth.L2BlockRef) error {
		if h.rewinder == nil {
			return nil
		}
		// Under the controller's lock nothing moves the engine: its head, read through op-node's own engine
		// client (--l2), is what --replicator.l2.rpc must show before it is rewound.
		head, err := h.l2.L2BlockRefByLabel(ctx, eth.Unsafe)
		if err != nil {
			return fmt.Errorf("%w: the engine's head: %w", errEngine, err)
		}
		if err := h.rewinder.Rewind(ctx, safe, head.ID()); err != nil {
			return err
		}
		return h.checkRewound(ctx, safe)
	}
	head, err := h.onLoop.rewind(ctx, rewindEngine)
	h.watch.drain() // our own reset is not news
	if err != nil {
		err = fmt.Errorf("%w: %w", errRewind, err)
		h.rewindRetryAt = h.clock.Now().Add(h.backoff.Duration(h.rewindFailures))
		h.rewindFailures++
		h.metrics.RecordError(errorKind(err))
		h.board.publish(func(s *snapshot) { s.rewindErr = err.Error() })
		h.log.Error("Halt could not rewind op-geth to the safe head: op-node's heads left on op-geth's chain, input "+
			"held, retrying while halted", "unsafe", head, "err", err, "attempt", h.rewindFailures, "retry_at", h.rewindRetryAt)
		return head, err
	}
	h.rewindPending, h.rewindFailures, h.rewindRetryAt = false, 0, time.Time{}
	h.board.publish(func(s *snapshot) { s.rewindErr = "" })
	return head, nil
}

// checkIdentity has the rewinder check, at most every identityCheckEvery and on a goroutine of its own, that it
// reaches the engine op-node drives: one that is found not to refuses every rewind, and replicator_status says so.
// The goroutine is started by the first check and kept for the next ones (until wait): a check goes three RPC calls
// deep, and a goroutine started for each grew its stack to that depth every second (~a third of a check's CPU in
// W5's profiles, docs/benchmarks.md).
func (h *halter) checkIdentity(ctx context.Context) {
	c, ok := h.rewinder.(identityChecker)
	if !ok || h.clock.Since(h.identityAt) < identityCheckEvery || !h.identityBusy.CompareAndSwap(false, true) {
		return
	}
	now := h.clock.Now()
	h.identityAt = now
	epoch := h.rewindEpoch.Load()
	ctx = context.WithoutCancel(ctx)
	if h.identityChecks == nil {
		checks, done := make(chan func(), 1), make(chan struct{})
		h.identityChecks, h.identityDone = checks, done
		go func() {
			defer close(done)
			for check := range checks {
				check()
			}
		}()
	}
	// Never blocks: identityBusy admits one check at a time, queued or running.
	h.identityChecks <- func() {
		defer h.identityBusy.Store(false)
		still := func() bool { return h.rewindEpoch.Load() == epoch && !h.Halted() }
		if err := c.CheckIdentity(ctx, h.l2, now, still); err != nil {
			h.metrics.RecordError(ErrKindRewind)
			h.board.publish(func(s *snapshot) { s.l2RPCErr = err.Error() })
			h.log.Error("--"+driverhook.L2RPCFlagName+" is not this node's op-geth: a halt will not rewind it", "err", err)
		}
	}
}

// wait joins the identity check in progress, if any, and ends the checker's goroutine (the next check starts
// another).
func (h *halter) wait() {
	if h.identityChecks == nil {
		return
	}
	close(h.identityChecks)
	<-h.identityDone
	h.identityChecks, h.identityDone = nil, nil
}

// checkRewound reads the head of op-node's own engine (--l2) back after the rewinder rewound op-geth. It runs in
// rewindEngine, under the engine controller's lock, where nothing inserts a block: derivation, which goes on right
// after the rewind, would otherwise move the head on before it is read.
func (h *halter) checkRewound(ctx context.Context, safe eth.L2BlockRef) error {
	latest, err := h.l2.L2BlockRefByLabel(ctx, eth.Unsafe)
	if err != nil {
		return fmt.Errorf("%w: reading the engine's head back: %w", errEngine, err)
	}
	if latest.Hash != safe.Hash {
		return fmt.Errorf("after the rewind to %s the engine's head is %s: is --%s this node's op-geth (the engine behind --l2)?",
			safe.ID(), latest.ID(), driverhook.L2RPCFlagName)
	}
	return nil
}

// gossipGate drops gossiped unsafe payloads while halted. The halt state's read lock is held while a payload is
// handed on, so a halt waits for in-flight payloads and the rewind that follows drops them from op-node's queue.
type gossipGate struct {
	next    driverhook.UnsafePayloadReceiver
	halt    *haltState
	metrics Metricer
	log     log.Logger
}

func (g gossipGate) OnUnsafeL2Payload(ctx context.Context, env *eth.ExecutionPayloadEnvelope) {
	if !g.halt.IfRunning(func() { g.next.OnUnsafeL2Payload(ctx, env) }) {
		g.metrics.RecordGossipDropped()
		g.log.Debug("Replicator halted, dropping gossiped unsafe block", "block", env.ExecutionPayload.ID())
	}
}
