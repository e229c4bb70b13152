package plugin

import (
	"context"
	"errors"
	"sync"

	"github.com/ethereum-optimism/optimism/op-service/eth"
	"github.com/ethereum-optimism/optimism/op-service/event"

	"github.com/op-replicator/op-replicator/driverhook"
)

// loopRewinder runs the engine controller's rewind to the safe head (driverhook.Engine.RewindUnsafeToSafe) on
// op-node's event loop, where op-node runs its own resets. The rewind resets op-node's heads, and with them the
// derivation pipeline and the attributes handler, which are the loop's: the pipeline is unlocked, and the attributes
// handler calls the controller under its own lock, so from another goroutine the rewind would race the loop or take
// the two locks in the reverse order.
//
// It is a deriver on op-node's event system: rewind emits a rewindRequest, which the loop hands to OnEvent; OnEvent
// runs the rewind and emits rewindDone, which the loop processes after the events the rewind's reset emitted. When
// rewind returns, op-node's status tracker has seen the reset: SyncStatus shows the rewound heads.
type loopRewinder struct {
	engine driverhook.Engine
	// request emits rewindRequest, off the loop; done emits rewindDone, from OnEvent on the loop. Two registrations:
	// an actor's Emit reads the event it is processing, which the loop writes, so only an emitter that derives
	// nothing may emit from another goroutine (as op-node's driver does). Nil without op-node's event system (unit
	// tests): the rewind runs on the caller's goroutine.
	request, done event.Emitter

	stopOnce sync.Once
	stopped  chan struct{}
}

// errLoopStopped ends a rewind whose answer did not come before the replicator stopped.
var errLoopStopped = errors.New("replicator stopped before op-node's event loop ran the rewind")

type rewindResult struct {
	head eth.L2BlockRef
	err  error
}

// rewindRequest asks the event loop to run the rewind; rewindDone carries its result behind the reset's events.
type rewindRequest struct {
	rewindEngine func(ctx context.Context, safe eth.L2BlockRef) error
	answer       chan rewindResult
}

type rewindDone struct {
	rewindResult
	answer chan rewindResult
}

func (rewindRequest) String() string { return "replicator-rewind-request" }
func (rewindDone) String() string    { return "replicator-rewind-done" }

func newLoopRewinder(engine driverhook.Engine, events event.Registry) *loopRewinder {
	l := &loopRewinder{engine: engine, stopped: make(chan struct{})}
	if events != nil {
		l.done = events.Register("replicator-rewind", l)
		l.request = events.Register("replicator-rewind-request", nil)
	}
	return l
}

// rewind runs the controller's rewind on the event loop and waits for it, or until the replicator stops. The rewind
// always completes once the loop has started it: ctx is not looked at.
func (l *loopRewinder) rewind(ctx context.Context, rewindEngine func(ctx context.Context, safe eth.L2BlockRef) error) (eth.L2BlockRef, error) {
	ctx = context.WithoutCancel(ctx)
	if l.request == nil {
		return l.engine.RewindUnsafeToSafe(ctx, rewindEngine)
	}
	answer := make(chan rewindResult, 1)
	l.request.Emit(ctx, rewindRequest{rewindEngine: rewindEngine, answer: answer})
	select {
	case res := <-answer:
		return res.head, res.err
	case <-l.stopped:
		return eth.L2BlockRef{}, errLoopStopped
	}
}

// OnEvent runs on op-node's event loop.
func (l *loopRewinder) OnEvent(ctx context.Context, ev event.Event) bool {
	switch x := ev.(type) {
	case rewindRequest:
		head, err := l.engine.RewindUnsafeToSafe(ctx, x.rewindEngine)
		l.done.Emit(ctx, rewindDone{rewindResult: rewindResult{head: head, err: err}, answer: x.answer})
		return true
	case rewindDone:
		x.answer <- x.rewindResult // buffered: never blocks the loop
		return true
	}
	return false
}

// stop ends the wait of a rewind in progress.
func (l *loopRewinder) stop() { l.stopOnce.Do(func() { close(l.stopped) }) }
