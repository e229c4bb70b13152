package plugin

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ethereum-optimism/optimism/op-service/clock"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/log"
	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/ethereum-optimism/optimism/op-service/eth"
	"github.com/ethereum-optimism/optimism/op-service/retry"

	"github.com/op-replicator/op-replicator/driverhook"
	"github.com/op-replicator/op-replicator/plugin/api"
	"github.com/op-replicator/op-replicator/plugin/relay"
	"github.com/op-replicator/op-replicator/plugin/source"
)

// staleBackoff is the first wait after the unsafe head moved under a round (gossip or derivation got there first);
// it doubles while the head keeps moving, up to the poll interval.
const staleBackoff = 10 * time.Millisecond

// staleWarnEvery is how many consecutive rounds found the unsafe head moved under them before a warning (and again
// every as many after): at the poll interval of 500 ms about 25 s. A race with gossip or derivation ends within a
// few rounds; a run this long means no round can go on, which only the stale count would show otherwise.
const staleWarnEvery = 50

// Replicator runs the pipeline, one round at a time, on one goroutine that owns every write to the engine:
// source -> verify -> insert, with watch checks before each round and the halt around it. Its parts have one owner
// each: the halt and its rewind (halter), the state file (persister), operators' requests (mailbox), what
// replicator_status reads (statusBoard). Service drives it through Start, Stop, Status, BlockStatus, Halt, Resume
// and GateGossip.
type Replicator struct {
	log     log.Logger
	cfg     driverhook.CLIConfig
	source  source.Source
	verify  *verifier
	insert  *inserter
	watch   *watcher
	halt    *halter
	persist *persister
	mail    *mailbox
	board   *statusBoard
	engine  driverhook.Engine
	l2      driverhook.L2Chain
	status  driverhook.SyncStatus
	confs   uint64
	metrics Metricer
	clock   clock.Clock
	backoff retry.Strategy

	evidence *relay.EvidenceLog
	store    *relay.Store                     // verified signed blocks (nil in tests); tells which replicated blocks came signed
	arrivals *lru.Cache[common.Hash, arrival] // recent replicated blocks, for replicator_blockStatus

	// Owned by the loop goroutine.
	failures int // consecutive transient failures, for backoff
	stale    int // consecutive rounds that found the unsafe head moved under them
	// rechecked is the local head and the source's announced head at its height that were found to differ and
	// asked again (headForgetter): the same pair found in the next check is a disagreement.
	rechecked [2]eth.BlockID
	// restored: lastReplicated comes from the state file and was not checked against the engine since the restart.
	restored bool
	// refused: the last round's insertion was refused because its block's parent was not op-node's unsafe head
	// (errNotOnUnsafeHead); the next round's localHead does not take op-geth's head above op-node's.
	refused bool

	lifeMu sync.Mutex         // guards cancel and done
	cancel context.CancelFunc // stops the loop
	done   chan struct{}      // closed when the loop returned; nil until Start started it
}

// Start checks --replicator.l2.rpc and starts the sources and the loop. The loop runs until Stop, whatever ctx says.
func (r *Replicator) Start(ctx context.Context) error {
	if err := r.halt.checkL2RPC(ctx); err != nil {
		return err
	}
	if err := r.source.Start(ctx); err != nil {
		return err
	}
	loopCtx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	r.lifeMu.Lock()
	r.cancel, r.done = cancel, done
	r.lifeMu.Unlock()
	r.log.Info("Starting replicator", "source", r.source.Name(), "poll_interval", r.cfg.PollInterval,
		"halt_policy", r.cfg.HaltPolicy)
	go func() {
		defer close(done)
		r.run(loopCtx)
	}()
	return nil
}

// Stop stops the loop, if it was started, and stops the sources, whatever ctx says; ctx bounds the wait for the
// loop to finish its engine call and for the sources. The errors are joined.
func (r *Replicator) Stop(ctx context.Context) error {
	var result error
	r.lifeMu.Lock()
	cancel, done := r.cancel, r.done
	r.lifeMu.Unlock()
	if done != nil {
		cancel()
		r.halt.onLoop.stop() // a rewind waiting for op-node's event loop gives up
		select {
		case <-done:
		case <-ctx.Done():
			result = fmt.Errorf("replicator loop still running: %w", ctx.Err())
		}
	}
	return errors.Join(result, r.source.Stop(ctx))
}

// Halt hands an operator's halt to the loop and waits for it: the unsafe head is rewound to the safe head.
func (r *Replicator) Halt(ctx context.Context, detail string) error {
	return r.request(ctx, request{halt: true, detail: detail})
}

// Resume hands an operator's resume to the loop and waits for it.
func (r *Replicator) Resume(ctx context.Context) error { return r.request(ctx, request{}) }

func (r *Replicator) request(ctx context.Context, req request) error {
	r.lifeMu.Lock()
	done := r.done
	r.lifeMu.Unlock()
	if done == nil {
		return errors.New("replicator is not running")
	}
	return r.mail.send(ctx, req, done)
}

// GateGossip drops gossiped unsafe payloads while halted (gossipGate).
func (r *Replicator) GateGossip(next driverhook.UnsafePayloadReceiver) driverhook.UnsafePayloadReceiver {
	return gossipGate{next: next, halt: r.halt.haltState, metrics: r.metrics, log: r.log}
}

// run is the loop goroutine: a round every poll interval, or sooner when the source has a new head, op-node
// reports something, or an operator asks. Operator requests are served before the next round, and interrupt the
// round in progress.
func (r *Replicator) run(ctx context.Context) {
	timer := r.clock.NewTimer(0)
	defer func() { timer.Stop() }()
	defer r.halt.wait()
	defer r.persist.saveProgress(true) // after the progress writer stopped
	r.persist.startProgress()
	defer r.persist.stopProgress()
	for first := true; ; first = false {
		if !first { // the first round starts at once
			select {
			case <-ctx.Done():
				return
			case req := <-r.mail.requests:
				r.serve(ctx, req)
			case <-timer.Ch():
			case <-r.source.NewHeads():
			case <-r.watch.Wake():
			}
		}
		select {
		case req := <-r.mail.requests:
			r.serve(ctx, req)
		default:
		}
		roundCtx, end := r.mail.startRound(ctx)
		delay := r.runRound(roundCtx)
		end()
		timer.Stop()
		timer = r.clock.NewTimer(delay)
	}
}

// serve takes a request the loop received: it no longer waits, so the rounds after it are not interrupted for it
// (mailbox.send counted it as waiting; counting it off here, before the next round starts, keeps that round from
// being cancelled for a request already served).
func (r *Replicator) serve(ctx context.Context, req request) {
	r.mail.interrupt(-1)
	r.handle(ctx, req)
}

func (r *Replicator) handle(ctx context.Context, req request) {
	if req.halt {
		if r.halt.Halted() {
			req.done <- errors.New("already halted")
			return
		}
		r.haltNow(ctx, api.ReasonOperator, req.detail)
	} else {
		if !r.halt.Halted() {
			req.done <- errors.New("not halted")
			return
		}
		r.resume("operator")
	}
	req.done <- nil
}

// runRound runs one round and returns how long to wait before the next one.
func (r *Replicator) runRound(ctx context.Context) time.Duration {
	more, err := r.round(ctx)
	r.persist.saveProgress(false)
	switch {
	case err == nil && more:
		r.failures, r.stale = 0, 0
		return 0 // a round takes at most maxBlocksPerRound blocks: the next one goes on at once
	case err == nil:
		r.failures, r.stale = 0, 0
		return r.cfg.PollInterval
	case ctx.Err() != nil:
		return 0 // interrupted (an operator request, evidence) or stopping: back to the loop at once
	}
	var d *Disagreement
	if errors.As(err, &d) {
		if ev := r.evidence.TakePending(); ev != nil {
			d = equivocation(ev) // the sequencer signing two blocks explains any disagreement that follows
		}
		r.haltNow(ctx, d.Reason, d.Detail)
		return r.cfg.PollInterval
	}
	if errors.Is(err, errWait) {
		r.log.Debug("Waiting", "err", err)
		return r.cfg.PollInterval
	}
	kind := errorKind(err)
	r.metrics.RecordError(kind)
	if kind == ErrKindStale {
		r.refused = errors.Is(err, errNotOnUnsafeHead)
		r.stale++
		delay := min(r.cfg.PollInterval, staleBackoff<<min(r.stale-1, 16))
		if r.stale%staleWarnEvery == 0 {
			r.log.Warn("The unsafe head keeps moving under every round", "rounds", r.stale, "err", err)
		} else {
			r.log.Debug("Unsafe head moved, starting over", "err", err, "retry_in", delay)
		}
		return delay
	}
	delay := max(r.backoff.Duration(r.failures), r.cfg.PollInterval)
	r.failures++
	r.log.Warn("Replication round failed, retrying", "err", err, "attempt", r.failures, "retry_in", delay)
	return delay
}

// round: resume if the halt policy says so; then, while running, check the local chain against op-node's view,
// our L1 view and the source (check.go), and replicate what the source has beyond our unsafe head. more is whether
// the source has blocks beyond what the round took.
func (r *Replicator) round(ctx context.Context) (more bool, err error) {
	r.persist.retry()
	if !r.halt.Halted() {
		r.halt.checkIdentity(ctx)
	}
	if r.halt.Halted() {
		r.halt.retryRewind(ctx)
		if !r.halt.ShouldResume(r.clock.Now(), r.synced) {
			return false, nil
		}
		r.resume("halt policy " + string(r.cfg.HaltPolicy))
	}
	if ev := r.evidence.TakePending(); ev != nil {
		return false, equivocation(ev)
	}
	if r.engine.IsEngineInitialELSyncing() {
		return false, nil
	}
	status := r.status.SyncStatus()
	if status.UnsafeL2 == (eth.L2BlockRef{}) {
		return false, nil // the engine controller has not found its heads yet
	}
	head, err := r.localHead(ctx, status)
	if err != nil {
		return false, err
	}
	if err := r.checkLocalChain(ctx, head, status); err != nil {
		return false, err
	}
	srcHead, err := r.source.Head(ctx)
	if errors.Is(err, relay.ErrNoBlockYet) {
		return false, fmt.Errorf("%w: %w", errWait, err) // a relay source still subscribing: its first block wakes us
	} else if err != nil {
		return false, fmt.Errorf("%w: head: %w", errSource, err)
	}
	r.board.publish(func(s *snapshot) { s.sourceHead = srcHead })
	r.metrics.RecordHeadLag(lag(srcHead.Number, head.Number))
	if err := r.checkHead(head, srcHead); err != nil {
		return false, err
	}
	if head.Number >= srcHead.Number {
		return false, nil
	}
	to := min(srcHead.Number, head.Number+maxBlocksPerRound)
	if bound := r.halt.unsafeRange(); bound > 0 {
		limit := status.SafeL2.Number + bound
		if head.Number >= limit {
			return false, fmt.Errorf("%w: the unsafe head %s is %d blocks above the safe head %s, as far as a halt could "+
				"rewind this op-geth (hash scheme, not an archive node)", errWait, head.ID(), bound, status.SafeL2.ID())
		}
		to = min(to, limit)
	}
	return to < srcHead.Number, r.replicate(ctx, head, to, srcHead)
}

// haltNow halts: the state (kept in the state file first, so that a crash restarts halted), then the rewind of the
// unsafe chain to the safe head, in op-node and in op-geth, with unsafe input held, so that the node is a plain L1
// verifier until the halt policy resumes it.
func (r *Replicator) haltNow(ctx context.Context, reason api.Reason, detail string) {
	if !r.halt.Halt(reason, detail, r.clock.Now()) {
		return
	}
	r.board.publish(func(s *snapshot) { s.lastReplicated = eth.L2BlockRef{} })
	r.persist.save()
	r.metrics.RecordHalt(reason)
	r.metrics.RecordState(api.StateHalted)
	head, err := r.halt.rewind(ctx)
	if err != nil {
		r.log.Error("Replicator halted; its rewind to the safe head failed and is retried while halted", "reason", reason,
			"detail", detail, "unsafe", head, "policy", r.cfg.HaltPolicy, "rewind_err", err)
		return
	}
	r.log.Error("Replicator halted: unsafe head rewound to the safe head", "reason", reason, "detail", detail,
		"unsafe", head, "policy", r.cfg.HaltPolicy)
}

func (r *Replicator) resume(why string) {
	if !r.halt.Resume(r.clock.Now()) {
		return
	}
	r.engine.HoldUnsafeInput(false)
	r.halt.clearRewind()
	r.failures = 0
	// Evidence that arrived while halted (a second equivocation during a timed halt) halts again at the next round
	// while L1 has not settled its height; settled, it is history, kept in replicator_equivocationEvidence only.
	if ev := r.evidence.TakePending(); ev != nil {
		if safe := r.status.SyncStatus().SafeL2; ev.Number > safe.Number {
			r.evidence.Requeue(ev)
			r.log.Warn("Equivocation evidence that arrived while halted is above the safe head: halting again",
				"block", ev.Number, "safe", safe.ID())
		}
	}
	r.persist.save()
	r.metrics.RecordState(api.StateRunning)
	r.log.Info("Replicator resumed", "why", why)
}

func (r *Replicator) lastReplicated() eth.L2BlockRef { return r.board.lastReplicated() }
