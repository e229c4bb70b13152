package plugin

import (
	"context"
	"sync"
	"time"

	"github.com/ethereum-optimism/optimism/op-node/rollup/derive"
	"github.com/ethereum-optimism/optimism/op-node/rollup/engine"
	"github.com/ethereum-optimism/optimism/op-service/clock"
	"github.com/ethereum-optimism/optimism/op-service/eth"
	"github.com/ethereum-optimism/optimism/op-service/event"
)

// watcher observes op-node's own events, as a deriver on op-node's event system: engine resets, derivation
// building blocks from L1 (which replaces unsafe blocks when they do not match), and derivation going idle at
// the L1 head. OnEvent only records and wakes the replication loop; the loop draws the conclusions.
type watcher struct {
	wake chan struct{}

	mu sync.Mutex
	// lowest parent of a block built from L1 data since the last drain: a derived block built on a parent below
	// the unsafe head replaces unsafe blocks.
	derivedParent *eth.L2BlockRef
	resets        int
	// last time derivation went idle, and at which L1 origin.
	idleAt     time.Time
	idleOrigin eth.L1BlockRef

	// The unsafe head of the last engine event op-node's loop handled (UnsafeUpdateEvent, ForkchoiceUpdateEvent),
	// and a channel closed (and replaced) when it changes: what the insert stage waits for (waitLoop).
	loopUnsafe eth.BlockID
	loopMoved  chan struct{}
	// onLoop: registered on op-node's event system (without it, as in unit tests with fakes, no event comes).
	onLoop bool

	clock clock.Clock
}

var _ event.Deriver = (*watcher)(nil)

func newWatcher(clk clock.Clock) *watcher {
	return &watcher{wake: make(chan struct{}, 1), loopMoved: make(chan struct{}), clock: clk}
}

// OnEvent must not block: it runs on op-node's event loop.
func (w *watcher) OnEvent(_ context.Context, ev event.Event) bool {
	w.mu.Lock()
	switch x := ev.(type) {
	case engine.BuildStartEvent:
		if x.Attributes == nil || x.Attributes.DerivedFrom == (eth.L1BlockRef{}) {
			w.mu.Unlock()
			return false
		}
		if w.derivedParent == nil || x.Attributes.Parent.Number < w.derivedParent.Number {
			parent := x.Attributes.Parent
			w.derivedParent = &parent
		}
	case engine.EngineResetConfirmedEvent:
		w.resets++
	case derive.DeriverIdleEvent:
		w.idleAt, w.idleOrigin = w.clock.Now(), x.Origin
	case engine.UnsafeUpdateEvent:
		w.sawLoopUnsafe(x.Ref.ID())
		w.mu.Unlock()
		return false // progress of op-node's loop, not news for the replication loop
	case engine.ForkchoiceUpdateEvent:
		w.sawLoopUnsafe(x.UnsafeL2Head.ID())
		w.mu.Unlock()
		return false
	default:
		w.mu.Unlock()
		return false
	}
	w.mu.Unlock()
	w.poke()
	return false // observed, not handled: op-node's own derivers handle these events
}

// poke wakes the replication loop from outside op-node's events (e.g. equivocation evidence).
func (w *watcher) poke() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Wake signals that something was observed.
func (w *watcher) Wake() <-chan struct{} { return w.wake }

// observed is what the watcher saw since the last drain.
type observed struct {
	derivedParent *eth.L2BlockRef
	resets        int
}

func (w *watcher) drain() observed {
	w.mu.Lock()
	defer w.mu.Unlock()
	o := observed{derivedParent: w.derivedParent, resets: w.resets}
	w.derivedParent, w.resets = nil, 0
	return o
}

// idleSince returns the L1 origin derivation was last idle at, if it went idle after t.
func (w *watcher) idleSince(t time.Time) (eth.L1BlockRef, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.idleAt.IsZero() || w.idleAt.Before(t) {
		return eth.L1BlockRef{}, false
	}
	return w.idleOrigin, true
}

// sawLoopUnsafe records the unsafe head of an engine event op-node's loop handled (w.mu held).
func (w *watcher) sawLoopUnsafe(id eth.BlockID) {
	if id == w.loopUnsafe {
		return
	}
	w.loopUnsafe = id
	close(w.loopMoved)
	w.loopMoved = make(chan struct{})
}

// waitLoop waits until op-node's event loop has handled an engine event with unsafe head id, for at most timeout
// (or until ctx ends), and reports whether it did.
//
// The replicator inserts a batch holding the engine controller's lock (ProcessPayloads), and the events the batch
// emits, with everything queued before them, wait for op-node's loop, whose own engine work waits for that lock.
// Without a pause between batches, the next batch takes the lock as soon as the last one frees it and the loop gets
// about one event in per batch: through a catch-up of heavy blocks (seconds a batch) op-node's sync status stood
// still for a whole round, up to 1,024 blocks, and so did derivation (docs/benchmarks.md, W2's catch-up). The
// batch's own events are queued last, so once the loop has handled one, it has handled everything before it.
func (w *watcher) waitLoop(ctx context.Context, id eth.BlockID, timeout time.Duration) bool {
	if !w.onLoop {
		return false
	}
	timer := w.clock.NewTimer(timeout)
	defer timer.Stop()
	for {
		w.mu.Lock()
		seen, moved := w.loopUnsafe, w.loopMoved
		w.mu.Unlock()
		if seen == id {
			return true
		}
		select {
		case <-moved:
		case <-timer.Ch():
			return false
		case <-ctx.Done():
			return false
		}
	}
}
