package plugin

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/log"
	"github.com/stretchr/testify/require"

	"github.com/ethereum-optimism/optimism/op-service/eth"
	"github.com/ethereum-optimism/optimism/op-service/event"
	"github.com/ethereum-optimism/optimism/op-service/testlog"

	"github.com/op-replicator/op-replicator/driverhook"
)

// loopEngine is a driverhook.Engine whose rewind records whether it ran on the event loop, and emits an event, as the
// controller's reset does.
type loopEngine struct {
	driverhook.Engine
	inLoop  *atomic.Bool
	emitter event.Emitter
	ranOn   atomic.Bool // the rewind ran while the loop was draining
}

type resetSeen struct{}

func (resetSeen) String() string { return "reset-seen" }

func (e *loopEngine) RewindUnsafeToSafe(ctx context.Context, rewindEngine func(context.Context, eth.L2BlockRef) error) (eth.L2BlockRef, error) {
	e.ranOn.Store(e.inLoop.Load())
	e.emitter.Emit(ctx, resetSeen{})
	return eth.L2BlockRef{Number: 7}, rewindEngine(ctx, eth.L2BlockRef{Number: 7})
}

// The rewind runs on op-node's event loop (the goroutine draining the event system), and returns after the events it
// emitted were processed: a deriver that observes them (op-node's status tracker) is current when it returns.
func TestRewindRunsOnTheEventLoop(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	exec := event.NewGlobalSynchronous(ctx)
	sys := event.NewSystem(testlog.Logger(t, log.LevelError), exec)
	defer sys.Stop()
	var inLoop atomic.Bool
	go func() { // op-node's driver loop
		for ctx.Err() == nil {
			select {
			case <-exec.Await():
				inLoop.Store(true)
				_ = exec.Drain()
				inLoop.Store(false)
			case <-ctx.Done():
			}
		}
	}()
	var seen atomic.Bool
	sys.Register("status", event.DeriverFunc(func(_ context.Context, ev event.Event) bool {
		if _, ok := ev.(resetSeen); ok {
			seen.Store(true)
		}
		return false
	}))
	eng := &loopEngine{inLoop: &inLoop, emitter: sys.Register("engine", nil)}
	l := newLoopRewinder(eng, sys)

	var safe eth.L2BlockRef
	head, err := l.rewind(ctx, func(_ context.Context, s eth.L2BlockRef) error { safe = s; return nil })
	require.NoError(t, err)
	require.EqualValues(t, 7, head.Number)
	require.EqualValues(t, 7, safe.Number, "rewindEngine gets the safe head")
	require.True(t, eng.ranOn.Load(), "the rewind ran on the event loop")
	require.True(t, seen.Load(), "the events the rewind emitted were processed before it returned")
}

// With nothing draining the event system (op-node stopping), stop ends a rewind's wait.
func TestRewindWaitEndsWhenStopped(t *testing.T) {
	sys := event.NewSystem(testlog.Logger(t, log.LevelError), event.NewGlobalSynchronous(context.Background()))
	defer sys.Stop()
	l := newLoopRewinder(&loopEngine{}, sys)
	done := make(chan error, 1)
	go func() {
		_, err := l.rewind(context.Background(), func(context.Context, eth.L2BlockRef) error { return nil })
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("rewind returned before the loop ran it or it was stopped: %v", err)
	case <-time.After(50 * time.Millisecond): // not a synchronisation: the rewind must still be waiting
	}
	l.stop()
	require.ErrorIs(t, <-done, errLoopStopped)
}
