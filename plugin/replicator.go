package plugin

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ethereum-optimism/optimism/op-service/clock"
	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/log"
	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/ethereum-optimism/optimism/op-service/eth"
	"github.com/ethereum-optimism/optimism/op-service/retry"

	"github.com/op-replicator/op-replicator/driverhook"
	"github.com/op-replicator/op-replicator/plugin/api"
	"github.com/op-replicator/op-replicator/plugin/relay"
)

// staleBackoff is the first wait after the unsafe head moved under a round (gossip or derivation got there first);
// it doubles while the head keeps moving, up to the poll interval.
const staleBackoff = 10 * time.Millisecond

// Replicator runs the pipeline, one round at a time, on one goroutine that owns every write to the engine:
// source -> verify -> insert, with watch checks before each round and the halt state machine around it.
type Replicator struct {
	log     log.Logger
	cfg     driverhook.CLIConfig
	source  Source
	verify  *verifier
	insert  *inserter
	watch   *watcher
	halt    *haltState
	engine  driverhook.Engine
	l2      driverhook.L2Chain
	status  driverhook.SyncStatus
	confs   uint64
	metrics Metricer
	clock   clock.Clock
	backoff retry.Strategy

	rewinder rewinder    // rewinds op-geth's own chain at a halt; nil in tests that do not need it
	state    *stateFile  // nil without --replicator.state.path
	genesis  eth.BlockID // the rollup's L2 genesis, to check that --replicator.l2.rpc is this chain's op-geth

	requests chan request
	evidence *relay.EvidenceLog
	store    *relay.Store                     // verified signed blocks (nil in tests); tells which replicated blocks came signed
	arrivals *lru.Cache[common.Hash, arrival] // recent replicated blocks, for replicator_blockStatus

	// Owned by the loop goroutine.
	failures int // consecutive transient failures, for backoff
	stale    int // consecutive rounds that found the unsafe head moved under them
	// rechecked is the local head and the source's announced head at its height that were found to differ and
	// asked again (headForgetter): the same pair found in the next check is a disagreement.
	rechecked [2]eth.BlockID
	// rewindPending: halted, but op-geth was not rewound yet (the rewind failed, or the node restarted halted).
	rewindPending bool
	// rewindFailures and rewindRetryAt back a failing rewind off.
	rewindFailures int
	rewindRetryAt  time.Time
	// persistFailed: the last write of the state file failed; it is written again every round until it succeeds.
	persistFailed bool
	// identityAt is when the rewinder's identity was last checked; identityBusy while a check runs (on a goroutine
	// of its own, off the round's path, joined by run); rewindEpoch counts rewinds, so that a check that straddles
	// one is not believed.
	identityAt   time.Time
	identityBusy atomic.Bool
	identityWG   sync.WaitGroup
	rewindEpoch  atomic.Uint64
	// restored: lastReplicated comes from the state file and was not checked against the engine since the restart.
	restored          bool
	persisted         eth.L2BlockRef  // lastReplicated as last written to the state file
	persistedEvidence int             // how much evidence was last written to the state file
	persistedAt       time.Time       // when the state file was last written
	stateSeq          uint64          // numbers the snapshots of the state taken for the state file
	progress          *progressWriter // writes progress while the loop runs; nil otherwise (progress is written at once)

	// roundMu guards the cancel function of the round in progress, and how many operator requests wait for the loop:
	// a request cancels the round's source requests, so that it is served within one engine call.
	roundMu     sync.Mutex
	roundCancel context.CancelFunc
	waiting     int

	mu   sync.Mutex // guards snap
	snap snapshot
}

// snapshot is what the loop publishes for replicator_status.
type snapshot struct {
	lastReplicated   eth.L2BlockRef
	lastReplicatedAt time.Time
	sourceHead       eth.BlockID
	// rewindErr is why the halt's rewind has not succeeded yet ("" once it has, or while running).
	rewindErr string
	// stateErr is why the state file could not be written ("" once it is).
	stateErr string
	// l2RPCErr is why --replicator.l2.rpc was taken for another node while running ("" unless it was).
	l2RPCErr string
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
	CheckIdentity(ctx context.Context, engine headReader, now time.Time, still func() bool) error
}

// identityCheckEvery bounds how often the rewinder's identity is checked: at the start of a round, when a source
// has a new head, which this node's engine does not have yet but another node of the chain may.
const identityCheckEvery = time.Second

// rangeBounder is a rewinder that can rewind op-geth only across so many blocks above the safe head (0: any).
type rangeBounder interface {
	MaxUnsafeRange() uint64
}

// request is an operator's halt or resume, executed by the loop goroutine.
type request struct {
	halt   bool
	detail string
	done   chan error
}

// runRound runs one round and returns how long to wait before the next one.
func (r *Replicator) runRound(ctx context.Context) time.Duration {
	more, err := r.round(ctx)
	r.persistProgress(false)
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
		r.stale++
		delay := min(r.cfg.PollInterval, staleBackoff<<min(r.stale-1, 16))
		r.log.Debug("Unsafe head moved, starting over", "err", err, "retry_in", delay)
		return delay
	}
	delay := max(r.backoff.Duration(r.failures), r.cfg.PollInterval)
	r.failures++
	r.log.Warn("Replication round failed, retrying", "err", err, "attempt", r.failures, "retry_in", delay)
	return delay
}

// round: resume if the halt policy says so; then, while running, check the local chain against op-node's view,
// our L1 view and the source (watch), and replicate what the source has beyond our unsafe head. more is whether
// the source has blocks beyond what the round took.
func (r *Replicator) round(ctx context.Context) (more bool, err error) {
	if r.persistFailed {
		r.persist()
	}
	if !r.halt.Halted() {
		r.checkIdentity(ctx)
	}
	if r.halt.Halted() {
		if r.rewindPending && !r.clock.Now().Before(r.rewindRetryAt) {
			r.rewind(ctx)
		}
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
	if err != nil {
		return false, fmt.Errorf("%w: head: %w", errSource, err)
	}
	r.publish(func(s *snapshot) { s.sourceHead = srcHead })
	r.metrics.RecordHeadLag(lag(srcHead.Number, head.Number))
	if err := r.checkHead(head, srcHead); err != nil {
		return false, err
	}
	if head.Number >= srcHead.Number {
		return false, nil
	}
	to := min(srcHead.Number, head.Number+maxBlocksPerRound)
	if b, ok := r.rewinder.(rangeBounder); ok && b.MaxUnsafeRange() > 0 {
		limit := status.SafeL2.Number + b.MaxUnsafeRange()
		if head.Number >= limit {
			return false, fmt.Errorf("%w: the unsafe head %s is %d blocks above the safe head %s, as far as a halt could "+
				"rewind this op-geth (hash scheme, not an archive node)", errWait, head.ID(), b.MaxUnsafeRange(), status.SafeL2.ID())
		}
		to = min(to, limit)
	}
	return to < srcHead.Number, r.replicate(ctx, head, to, srcHead)
}

// localHead is the local unsafe head. At the steady state op-node's view of it is the block we inserted last, and
// the engine is not asked; otherwise (derivation, gossip or a reset moved it, or op-node's status has not caught up
// with our last insert yet) the engine is.
func (r *Replicator) localHead(ctx context.Context, status *eth.SyncStatus) (eth.L2BlockRef, error) {
	if last := r.lastReplicated(); last != (eth.L2BlockRef{}) && status.UnsafeL2 == last {
		return last, nil
	}
	head, err := r.l2.L2BlockRefByLabel(ctx, eth.Unsafe)
	if err != nil {
		return eth.L2BlockRef{}, fmt.Errorf("%w: local unsafe head: %w", errEngine, err)
	}
	return head, nil
}

// checkHead compares the local unsafe head with the source's block at the same height (the spec's step 1), without
// a request: where the source's head is at our height, its hash is that block's; where the source is ahead, the
// next block's parent hash is compared with our head before anything is inserted (head-mismatch as well). A source
// behind us is not a disagreement: it has nothing for us yet.
func (r *Replicator) checkHead(head eth.L2BlockRef, srcHead eth.BlockID) error {
	switch {
	case srcHead.Number < head.Number:
		return fmt.Errorf("%w: the source's head %s is behind our unsafe head %s", errWait, srcHead, head.ID())
	case srcHead.Number == head.Number && srcHead.Hash != head.Hash:
		// A source's head may be the one it last announced (a newHeads notification, an http poll) rather than
		// an answer to this round: before halting on it, the source is asked again, once for this pair.
		if f, ok := r.source.(headForgetter); ok && r.rechecked != [2]eth.BlockID{head.ID(), srcHead} {
			r.rechecked = [2]eth.BlockID{head.ID(), srcHead}
			f.ForgetHead()
			return fmt.Errorf("%w: local unsafe head %s, the source announced %s at that height: asking it again",
				errStale, head.ID(), srcHead.Hash)
		}
		return disagree(api.ReasonHeadMismatch, "local unsafe head %s, source has %s at that height", head.ID(), srcHead.Hash)
	}
	r.rechecked = [2]eth.BlockID{}
	return nil
}

// headForgetter is a source whose Head may answer with the head it last announced; ForgetHead makes its next Head
// ask.
type headForgetter interface {
	ForgetHead()
}

// checkLocalChain looks at what op-node did to the unsafe chain since the last round: the last block we
// replicated must still be in the local chain, and the unsafe head's L1 origin must still be canonical on
// our L1 view. Derivation replacing an unsafe block, an engine reset dropping replicated blocks, or an L1
// reorg under them all halt.
func (r *Replicator) checkLocalChain(ctx context.Context, head eth.L2BlockRef, status *eth.SyncStatus) error {
	seen := r.watch.drain()
	last := r.lastReplicated()
	restored := r.restored
	r.restored = false
	// At the steady state the head is the last block we inserted: it is in the chain, no need to look it up.
	if last != (eth.L2BlockRef{}) && last.ID() != head.ID() {
		local, err := r.l2.L2BlockRefByNumber(ctx, last.Number)
		if err != nil && !errors.Is(err, ethereum.NotFound) {
			r.restored = restored // not looked at yet
			return fmt.Errorf("%w: local block %d: %w", errEngine, last.Number, err)
		}
		if restored && errors.Is(err, ethereum.NotFound) {
			// Replicated before a restart, and the engine no longer has a block at that height: a crashed op-geth
			// can lose its latest blocks. Nothing contradicts them; the source is compared with our head next.
			r.log.Warn("The engine lost blocks replicated before the restart", "last_replicated", last, "unsafe", head)
			r.publish(func(s *snapshot) { s.lastReplicated = eth.L2BlockRef{} })
		} else if err != nil || local.Hash != last.Hash {
			return r.explainLost(ctx, last, local, seen, status)
		}
	}
	if head.Number > status.SafeL2.Number {
		origin, err := r.verify.originStatus(ctx, head.L1Origin, status.HeadL1)
		if err != nil {
			return err
		}
		if !origin.unknown && !origin.canonical {
			return disagree(api.ReasonL1OriginReorged, "L1 origin %s of unsafe head %s is no longer canonical, our L1 view has %s",
				head.L1Origin, head.ID(), origin.ours.ID())
		}
		if origin.canonical {
			r.metrics.RecordUnsafeOriginDepth(status.HeadL1.Number - head.L1Origin.Number + 1)
		}
	}
	return nil
}

// explainLost names the reason a replicated block is no longer in the local chain.
func (r *Replicator) explainLost(ctx context.Context, last, local eth.L2BlockRef, seen observed, status *eth.SyncStatus) error {
	now := "nothing"
	if local != (eth.L2BlockRef{}) {
		now = local.ID().String()
	}
	if origin, err := r.verify.originStatus(ctx, last.L1Origin, status.HeadL1); err == nil && !origin.unknown && !origin.canonical {
		return disagree(api.ReasonL1OriginReorged, "replicated block %s was dropped (local chain has %s there): its L1 origin %s was reorged out",
			last.ID(), now, last.L1Origin)
	}
	if seen.derivedParent != nil && seen.derivedParent.Number < last.Number {
		return disagree(api.ReasonUnsafeReorg, "derivation from L1 replaced replicated block %s with %s (built on %s)",
			last.ID(), now, seen.derivedParent.ID())
	}
	return disagree(api.ReasonUnsafeReorg, "replicated block %s was dropped by op-node (%d engine resets; local chain has %s there)",
		last.ID(), seen.resets, now)
}

// synced is the until-synced policy's condition: initial EL sync done and derivation idle at the L1 head
// (within the verifier's confirmation depth), observed after the halt.
func (r *Replicator) synced(haltedAt time.Time) bool {
	if r.engine.IsEngineInitialELSyncing() {
		return false
	}
	origin, ok := r.watch.idleSince(haltedAt)
	if !ok {
		return false
	}
	return origin.Number+r.confs >= r.status.SyncStatus().HeadL1.Number
}

// haltNow halts: the state (kept in the state file first, so that a crash restarts halted), then the rewind of the
// unsafe chain to the safe head, in op-node and in op-geth, with unsafe input held, so that the node is a plain L1
// verifier until the halt policy resumes it.
func (r *Replicator) haltNow(ctx context.Context, reason api.Reason, detail string) {
	if !r.halt.Halt(reason, detail, r.clock.Now()) {
		return
	}
	r.publish(func(s *snapshot) { s.lastReplicated = eth.L2BlockRef{} })
	r.persist()
	r.metrics.RecordHalt(reason)
	r.metrics.RecordState(api.StateHalted)
	head, err := r.rewind(ctx)
	if err != nil {
		r.log.Error("Replicator halted; its rewind to the safe head failed and is retried while halted", "reason", reason,
			"detail", detail, "unsafe", head, "policy", r.cfg.HaltPolicy, "rewind_err", err)
		return
	}
	r.log.Error("Replicator halted: unsafe head rewound to the safe head", "reason", reason, "detail", detail,
		"unsafe", head, "policy", r.cfg.HaltPolicy)
}

// rewind holds unsafe input and rewinds the unsafe chain to the safe head: op-geth's own chain (rewinder), then
// op-node's heads. Until the engine controller has found its heads there is nothing to rewind yet: it is done at the
// next round. A rewind that did not reach op-geth fails closed: op-node's heads stay on the chain op-geth holds,
// input stays held, and it is retried while halted, with backoff; replicator_status shows why (rewindError).
func (r *Replicator) rewind(ctx context.Context) (eth.L2BlockRef, error) {
	ctx = context.WithoutCancel(ctx)
	r.rewindPending = true
	r.rewindEpoch.Add(1)
	if r.engine.IsEngineInitialELSyncing() || r.status.SyncStatus().UnsafeL2 == (eth.L2BlockRef{}) {
		r.engine.HoldUnsafeInput(true)
		r.publish(func(s *snapshot) { s.rewindErr = "the engine's heads are not known yet: rewind deferred" })
		return eth.L2BlockRef{}, errors.New("the engine's heads are not known yet: rewind deferred")
	}
	var rewindEngine func(context.Context, eth.L2BlockRef) error
	if r.rewinder != nil {
		rewindEngine = func(ctx context.Context, safe eth.L2BlockRef) error {
			// Under the controller's lock nothing moves the engine: its head, read through op-node's own engine
			// client (--l2), is what --replicator.l2.rpc must show before it is rewound.
			head, err := r.l2.L2BlockRefByLabel(ctx, eth.Unsafe)
			if err != nil {
				return fmt.Errorf("%w: the engine's head: %w", errEngine, err)
			}
			if err := r.rewinder.Rewind(ctx, safe, head.ID()); err != nil {
				return err
			}
			return r.checkRewound(ctx, safe)
		}
	}
	head, err := r.engine.RewindUnsafeToSafe(ctx, rewindEngine)
	r.watch.drain() // our own reset is not news
	if err != nil {
		err = fmt.Errorf("%w: %w", errRewind, err)
		r.rewindRetryAt = r.clock.Now().Add(r.backoff.Duration(r.rewindFailures))
		r.rewindFailures++
		r.metrics.RecordError(errorKind(err))
		r.publish(func(s *snapshot) { s.rewindErr = err.Error() })
		r.log.Error("Halt could not rewind op-geth to the safe head: op-node's heads left on op-geth's chain, input "+
			"held, retrying while halted", "unsafe", head, "err", err, "attempt", r.rewindFailures, "retry_at", r.rewindRetryAt)
		return head, err
	}
	r.rewindPending, r.rewindFailures, r.rewindRetryAt = false, 0, time.Time{}
	r.publish(func(s *snapshot) { s.rewindErr = "" })
	return head, nil
}

// checkIdentity has the rewinder check, at most every identityCheckEvery and on a goroutine of its own, that it
// reaches the engine op-node drives: one that is found not to refuses every rewind, and replicator_status says so.
func (r *Replicator) checkIdentity(ctx context.Context) {
	c, ok := r.rewinder.(identityChecker)
	if !ok || r.clock.Since(r.identityAt) < identityCheckEvery || !r.identityBusy.CompareAndSwap(false, true) {
		return
	}
	now := r.clock.Now()
	r.identityAt = now
	epoch := r.rewindEpoch.Load()
	ctx = context.WithoutCancel(ctx)
	r.identityWG.Add(1)
	go func() {
		defer r.identityWG.Done()
		defer r.identityBusy.Store(false)
		still := func() bool { return r.rewindEpoch.Load() == epoch && !r.halt.Halted() }
		if err := c.CheckIdentity(ctx, r.l2, now, still); err != nil {
			r.metrics.RecordError(ErrKindRewind)
			r.publish(func(s *snapshot) { s.l2RPCErr = err.Error() })
			r.log.Error("--"+driverhook.L2RPCFlagName+" is not this node's op-geth: a halt will not rewind it", "err", err)
		}
	}()
}

// checkRewound reads the head of op-node's own engine (--l2) back after the rewinder rewound op-geth. It runs in
// rewindEngine, under the engine controller's lock, where nothing inserts a block: derivation, which goes on right
// after the rewind, would otherwise move the head on before it is read.
func (r *Replicator) checkRewound(ctx context.Context, safe eth.L2BlockRef) error {
	latest, err := r.l2.L2BlockRefByLabel(ctx, eth.Unsafe)
	if err != nil {
		return fmt.Errorf("%w: reading the engine's head back: %w", errEngine, err)
	}
	if latest.Hash != safe.Hash {
		return fmt.Errorf("after the rewind to %s the engine's head is %s: is --%s this node's op-geth (the engine behind --l2)?",
			safe.ID(), latest.ID(), driverhook.L2RPCFlagName)
	}
	return nil
}

func (r *Replicator) resume(why string) {
	if !r.halt.Resume(r.clock.Now()) {
		return
	}
	r.engine.HoldUnsafeInput(false)
	r.rewindPending, r.rewindFailures, r.rewindRetryAt = false, 0, time.Time{}
	r.publish(func(s *snapshot) { s.rewindErr = "" })
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
	r.persist()
	r.metrics.RecordState(api.StateRunning)
	r.log.Info("Replicator resumed", "why", why)
}

// persist writes the state file (if configured) and returns once it is written. It is called by the loop
// goroutine only.
func (r *Replicator) persist() {
	if r.state == nil {
		return
	}
	seq, st := r.stateSnapshot()
	if err := r.state.saveInOrder(seq, st); err != nil {
		err = fmt.Errorf("%w: %w", errState, err)
		r.persistFailed = true
		r.metrics.RecordError(errorKind(err))
		r.publish(func(s *snapshot) { s.stateErr = err.Error() })
		r.log.Error("Could not write the replicator state file: a restart now would not know this state; retrying every round",
			"err", err)
		return
	}
	if r.persistFailed {
		r.persistFailed = false
		r.publish(func(s *snapshot) { s.stateErr = "" })
		r.log.Info("Replicator state file written again", "state", st.State)
	}
	r.persisted, r.persistedEvidence, r.persistedAt = st.lastReplicated(), len(st.Evidence), r.clock.Now()
}

// stateSnapshot numbers and takes what the state file keeps.
func (r *Replicator) stateSnapshot() (uint64, *persistedState) {
	h := r.halt.Status()
	st := &persistedState{State: h.State, Reason: h.Reason, Detail: h.Detail, Since: h.Since, Evidence: r.evidence.All()}
	if !h.ResumeAt.IsZero() {
		st.ResumeAt = &h.ResumeAt
	}
	if last := r.lastReplicated(); last != (eth.L2BlockRef{}) {
		st.LastReplicated = &last
	}
	r.stateSeq++
	return r.stateSeq, st
}

// persistEvery bounds how often progress alone (a new last replicated block) is written to the state file: a write
// is two fsyncs, a noticeable share of a following op-node's CPU if done often (docs/benchmarks.md). After a crash the file then
// names a replicated block up to persistEvery older than the last, which the restart check uses as well (it is in
// the chain below the newer ones). Halts, resumes and new evidence are written at once, and the loop writes its
// progress when it stops.
const persistEvery = 30 * time.Second

// persistProgress writes the state file when the evidence changed, or when the last replicated block changed and
// the last write is persistEvery old (or now, with force). Progress alone is handed to the progress writer while
// the loop runs; evidence, and progress with force, are written before it returns.
func (r *Replicator) persistProgress(force bool) {
	if r.state == nil {
		return
	}
	evidence := r.evidence.Count() != r.persistedEvidence
	progress := r.lastReplicated() != r.persisted && (force || r.clock.Since(r.persistedAt) >= persistEvery)
	switch {
	case evidence || (progress && (force || r.progress == nil)):
		r.persist()
	case progress:
		seq, st := r.stateSnapshot()
		r.progress.write(seq, st)
		r.persisted, r.persistedAt = st.lastReplicated(), r.clock.Now()
	}
}

// restore takes the state a previous run left in the state file.
func (r *Replicator) restore(st *persistedState) {
	r.evidence.Restore(st.Evidence)
	r.persistedEvidence = len(st.Evidence)
	if st.LastReplicated != nil {
		r.snap.lastReplicated, r.persisted, r.restored = *st.LastReplicated, *st.LastReplicated, true
	}
	if st.State == api.StateHalted { // running, it is running since this start
		h := HaltStatus{State: st.State, Reason: st.Reason, Detail: st.Detail, Since: st.Since}
		if st.ResumeAt != nil {
			h.ResumeAt = *st.ResumeAt
		}
		r.halt.Restore(h)
		// Nothing from outside derivation until the halt ends; the first round rewinds op-geth again, in case the
		// previous run stopped between keeping the halt and rewinding.
		r.engine.HoldUnsafeInput(true)
		r.rewindPending = true
		r.metrics.RecordState(api.StateHalted)
	}
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

// serve takes a request the loop received: it no longer waits, so the rounds after it are not interrupted for it
// (Service.request counted it as waiting; counting it off here, before the next round starts, keeps that round from
// being cancelled for a request already served).
func (r *Replicator) serve(ctx context.Context, req request) {
	r.interruptRound(-1)
	r.handle(ctx, req)
}

// run is the loop goroutine: a round every poll interval, or sooner when the source has a new head, op-node
// reports something, or an operator asks. Operator requests are served before the next round, and interrupt the
// round in progress.
func (r *Replicator) run(ctx context.Context) {
	timer := r.clock.NewTimer(0)
	defer func() { timer.Stop() }()
	defer r.identityWG.Wait()
	defer r.persistProgress(true) // after the progress writer stopped
	if r.state != nil {
		r.progress = startProgressWriter(r.state, r.log, r.metrics)
		defer func() {
			r.progress.stop()
			r.progress = nil
		}()
	}
	for first := true; ; first = false {
		if !first { // the first round starts at once
			select {
			case <-ctx.Done():
				return
			case req := <-r.requests:
				r.serve(ctx, req)
			case <-timer.Ch():
			case <-r.source.NewHeads():
			case <-r.watch.Wake():
			}
		}
		select {
		case req := <-r.requests:
			r.serve(ctx, req)
		default:
		}
		roundCtx, end := r.startRound(ctx)
		delay := r.runRound(roundCtx)
		end()
		timer.Stop()
		timer = r.clock.NewTimer(delay)
	}
}

// startRound returns the context of a round, already cancelled if an operator request is waiting, and the
// function that ends the round.
func (r *Replicator) startRound(ctx context.Context) (context.Context, func()) {
	roundCtx, cancel := context.WithCancel(ctx)
	r.roundMu.Lock()
	r.roundCancel = cancel
	if r.waiting > 0 {
		cancel()
	}
	r.roundMu.Unlock()
	return roundCtx, func() {
		r.roundMu.Lock()
		r.roundCancel = nil
		r.roundMu.Unlock()
		cancel()
	}
}

// interruptRound cancels the source requests of the round in progress; delta > 0 also counts an operator request
// waiting for the loop (delta < 0 when it no longer waits), so that rounds starting meanwhile are cancelled too.
func (r *Replicator) interruptRound(delta int) {
	r.roundMu.Lock()
	defer r.roundMu.Unlock()
	r.waiting += delta
	if delta >= 0 && r.roundCancel != nil {
		r.roundCancel()
	}
}

func (r *Replicator) publish(f func(*snapshot)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f(&r.snap)
}

func (r *Replicator) snapshot() snapshot {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.snap
}

func (r *Replicator) lastReplicated() eth.L2BlockRef { return r.snapshot().lastReplicated }

func lag(source, local uint64) uint64 {
	if source > local {
		return source - local
	}
	return 0
}
