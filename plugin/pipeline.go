package plugin

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/op-replicator/op-replicator/plugin/source"

	"github.com/ethereum-optimism/optimism/op-service/eth"
)

// maxBlocksPerRound bounds one round of catching up, so that the local chain is checked against op-node's view and
// our L1 view (watch) at least every maxBlocksPerRound blocks. Operator requests and evidence interrupt a round. What
// op-node does to the unsafe chain during a round needs no round boundary to be seen: a reset or derivation replacing
// a block moves the unsafe head, so the round's next batch no longer extends it and the round ends (errStale), and
// every block's L1 origin is checked against our L1 view as it is verified. Each boundary leaves the engine idle
// while the next round's first blocks are fetched, so rounds are long (docs/benchmarks-history.md, catching up).
const maxBlocksPerRound = 1024

// maxBatch is the most blocks inserted with one forkchoice update.
const maxBatch = 32

// The sources remember which of them served a block (source.Multi.ServedBy) for source.RecentBlocks blocks: twice
// what is fetched between a block's fetch and its insertion, a batch and the blocks fetched ahead of it. This does
// not compile if they would forget sooner.
const _ = uint(source.RecentBlocks - 2*(maxBatch+prefetchDepth))

// replicate takes the source's blocks after head up to to (at most maxBlocksPerRound, srcHead being the source's
// head) through the pipeline. Its stages overlap: the prefetcher fetches ahead on goroutines of its own; this
// goroutine verifies each block on the one before it; the insert stage executes one batch at a time on a goroutine
// of its own. The engine is handed, whenever it is idle, every block verified since its last batch (up to maxBatch):
// while it executes a batch, the next one is fetched and verified. At the head, a batch is the one block that arrived.
func (r *Replicator) replicate(ctx context.Context, head eth.L2BlockRef, to uint64, srcHead eth.BlockID) error {
	depth := prefetchDepth
	if to-head.Number > maxBatch {
		depth = catchUpDepth
	}
	fetch := newPrefetcher(ctx, r.source, head.Number+1, to, depth)
	defer fetch.Close()
	ins := r.startInserting(ctx, srcHead, fetch.Close)
	verr := r.verifyBlocks(ctx, fetch, head, ins)
	n, ierr := ins.finish(verr)
	if n > 0 {
		r.failures = 0 // progress: an error later in the round starts its backoff afresh
	}
	if ierr != nil {
		return ierr // about an earlier block than verr
	}
	return verr
}

// verifyBlocks is the verify stage: it takes the fetched blocks in order through prepare, each on the block before
// it (the first on head), and offers the insert stage the blocks verified so far whenever it is idle. It stops at the
// first block that fails (handing over the ones before it), when the insert stage fails, when ctx ends, or once every
// block was handed over.
func (r *Replicator) verifyBlocks(ctx context.Context, fetch *prefetcher, head eth.L2BlockRef, ins *insertStage) error {
	cur := &batch{}
	handed := false // a batch went to the insert stage this round
	for {
		next := fetch.Pending()
		if next == nil {
			ins.send(cur)
			return nil
		}
		var idle chan<- *batch // offered to an idle engine once it holds a block
		if len(cur.envs) > 0 {
			idle = ins.batches
		}
		switch {
		case len(cur.envs) == maxBatch:
			next = nil // full: wait for the engine
		case len(cur.envs) > 0 && !handed:
			// The round's first verified block goes to the engine, idle at the start of a round, before the next
			// block is verified, even if the insert stage's goroutine has not run yet.
			next = nil
		case len(cur.envs) > 0:
			// An idle engine gets the blocks verified so far at once, before the next block is verified: verifying
			// the blocks already fetched first would keep it idle at the start of every round.
			select {
			case idle <- cur:
				head, cur = cur.last(), &batch{}
				continue
			default:
			}
		}
		select {
		case idle <- cur:
			head, cur, handed = cur.last(), &batch{}, true
		case f := <-next:
			if err := r.verifyNext(ctx, cur, head, f, fetch); err != nil {
				return r.stopAt(cur, ins, err)
			}
		case <-ins.failed:
			return nil // its error ends the round
		case <-ctx.Done():
			return nil // interrupted: the loop serves the request
		}
	}
}

// verifyNext verifies a fetched block onto the last one verified (cur's last, else head) and adds it to cur; only
// then does the prefetcher move on, so that how far it fetched tells how far verification got.
func (r *Replicator) verifyNext(ctx context.Context, cur *batch, head eth.L2BlockRef, f fetched, fetch *prefetcher) error {
	parent := head
	if len(cur.envs) > 0 {
		parent = cur.last()
	}
	err := cur.add(r.prepare(ctx, parent, f.env, f.err))
	fetch.Advance()
	return err
}

// stopAt ends verification at a block that failed: the blocks verified before it are still inserted, unless it is a
// disagreement (the halt rewinds them anyway).
func (r *Replicator) stopAt(cur *batch, ins *insertStage, err error) error {
	var d *Disagreement
	if !errors.As(err, &d) {
		ins.send(cur)
	}
	return err
}

// batch is verified blocks, each on the one before, to insert together.
type batch struct {
	envs []*eth.ExecutionPayloadEnvelope
	refs []eth.L2BlockRef
}

// add appends a block prepare verified, or returns prepare's error.
func (b *batch) add(env *eth.ExecutionPayloadEnvelope, ref eth.L2BlockRef, err error) error {
	if err != nil {
		return err
	}
	b.envs, b.refs = append(b.envs, env), append(b.refs, ref)
	return nil
}

func (b *batch) last() eth.L2BlockRef { return b.refs[len(b.refs)-1] }

// prepare takes the source's block after head (env, or the source's error fetching it) through verify; head is
// the local unsafe head or the last block verified before it, which may still be on its way into the engine.
func (r *Replicator) prepare(ctx context.Context, head eth.L2BlockRef, env *eth.ExecutionPayloadEnvelope, err error) (*eth.ExecutionPayloadEnvelope, eth.L2BlockRef, error) {
	if errors.Is(err, ethereum.NotFound) {
		return nil, eth.L2BlockRef{}, fmt.Errorf("%w: source has no block %d yet", errWait, head.Number+1)
	} else if err != nil {
		return nil, eth.L2BlockRef{}, fmt.Errorf("%w: block %d: %w", errSource, head.Number+1, err)
	}
	// Re-read the safe head and L1 view for every block: derivation moves on while we catch up.
	status := r.status.SyncStatus()
	if status.UnsafeL2.Number > head.Number {
		// Gossip (or derivation) got beyond what we verified; the next round starts from the new head. (Our own
		// insertions never get there: the insert stage is at most at head.)
		return nil, eth.L2BlockRef{}, fmt.Errorf("%w: unsafe head moved to %s", errStale, status.UnsafeL2.ID())
	}
	ref, err := r.verify.Check(ctx, env, head, status.SafeL2, status.HeadL1)
	if err != nil {
		return nil, eth.L2BlockRef{}, err
	}
	return env, ref, nil
}

// insertStage inserts the verified batches it is handed, in order, one at a time, on a goroutine of its own. The
// engine controller refuses a batch that does not extend the unsafe head, so a race with derivation or gossip for a
// height stays an errStale, and nothing at or below the safe head is ever touched.
type insertStage struct {
	r       *Replicator
	ctx     context.Context
	cancel  context.CancelFunc
	srcHead eth.BlockID
	batches chan *batch   // unbuffered: a send succeeds when the stage is idle
	failed  chan struct{} // closed when an insertion failed; no batch is taken after it
	done    chan struct{} // closed when the goroutine returns
	onFail  func()        // stops fetching for a round that cannot go on

	// Written by the stage's goroutine, read after done.
	inserted int
	err      error
}

func (r *Replicator) startInserting(ctx context.Context, srcHead eth.BlockID, onFail func()) *insertStage {
	ctx, cancel := context.WithCancel(ctx)
	s := &insertStage{r: r, ctx: ctx, cancel: cancel, srcHead: srcHead, batches: make(chan *batch),
		failed: make(chan struct{}), done: make(chan struct{}), onFail: onFail}
	go s.run()
	return s
}

func (s *insertStage) run() {
	defer close(s.done)
	idleFrom := s.r.clock.Now()
	for b := range s.batches {
		s.r.metrics.RecordInsert(insertStepIdle, s.r.clock.Now().Sub(idleFrom))
		n, err := s.r.insertBatch(s.ctx, b, s.srcHead)
		s.inserted += n
		if err != nil {
			s.err = err
			close(s.failed)
			s.onFail()
			return
		}
		if n > 0 {
			// op-node's loop takes its turn before the next batch (watcher.waitLoop): its sync status, derivation
			// and L1 signals keep up through a catch-up. Bounded: a loop that does not get to it in time (EL sync
			// emits no forkchoice event) costs one wait, not the replication.
			start := s.r.clock.Now()
			s.r.watch.waitLoop(s.ctx, b.refs[n-1].ID(), loopTurnTimeout)
			s.r.metrics.RecordInsert(insertStepLoopTurn, s.r.clock.Now().Sub(start))
		}
		idleFrom = s.r.clock.Now()
	}
}

// The steps of inserting a batch, as labels of insert_seconds.
const (
	insertStepEngine   = "engine"    // ProcessPayloads: the batch's NewPayloads and its forkchoice update
	insertStepLoopTurn = "loop_turn" // the wait for op-node's loop after the batch (watcher.waitLoop)
	insertStepIdle     = "idle"      // the wait for the batch: fetching and verifying did not keep the engine busy
)

// loopTurnTimeout bounds the insert stage's wait for op-node's loop after a batch. The loop handles a batch's events
// in well under a millisecond when nothing else is queued; it is a bound, not a pace.
const loopTurnTimeout = time.Second

// send hands a batch (if it holds a block) to the stage once it is idle; the batch is dropped if an insertion failed.
func (s *insertStage) send(b *batch) {
	if len(b.envs) == 0 {
		return
	}
	select {
	case s.batches <- b:
	case <-s.failed:
	}
}

// finish ends the stage once the batches handed over are inserted, and returns how many blocks it inserted and why
// it stopped. After a disagreement further down the chain (verr) the batch in the engine stops at its next block
// boundary: the halt rewinds the unsafe chain anyway.
func (s *insertStage) finish(verr error) (int, error) {
	var d *Disagreement
	if errors.As(verr, &d) {
		s.cancel()
	}
	close(s.batches)
	<-s.done
	s.cancel()
	return s.inserted, s.err
}

// insertBatch inserts verified blocks, unless equivocation evidence arrived while they were fetched. The insertion
// is cut short between blocks by a halt or an operator request (ctx), never inside an engine call: op-node owns
// its outcome. What was inserted is recorded whatever the error. It runs on the insert stage's goroutine.
func (r *Replicator) insertBatch(ctx context.Context, b *batch, srcHead eth.BlockID) (int, error) {
	if ctx.Err() != nil {
		return 0, nil // interrupted before the batch: nothing of it is inserted
	}
	if ev := r.evidence.TakePending(); ev != nil {
		return 0, equivocation(ev)
	}
	start := r.clock.Now()
	n, err := r.insert.Insert(ctx, b.envs, b.refs)
	now := r.clock.Now()
	r.metrics.RecordInsert(insertStepEngine, now.Sub(start))
	for i, ref := range b.refs[:n] {
		r.arrivals.Add(ref.Hash, r.provenance(ref, now))
		r.metrics.RecordReplicated(ref.Number)
		r.log.Debug("Replicated block", "block", ref, "origin", ref.L1Origin, "txs", len(b.envs[i].ExecutionPayload.Transactions))
	}
	if n > 0 {
		last := b.refs[n-1]
		r.board.publish(func(s *snapshot) { s.lastReplicated, s.lastReplicatedAt = last, now })
		r.metrics.RecordHeadLag(lag(srcHead.Number, last.Number))
	}
	if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		return n, nil // interrupted between blocks: the loop serves the request
	}
	return n, err
}

// blockServer is a source that tells which of its sources served a block (source.Multi).
type blockServer interface {
	ServedBy(hash common.Hash) string
}

// provenance says where a block just replicated came from: the relay or gossip that delivered its signed
// envelope, else the source that served it.
func (r *Replicator) provenance(ref eth.L2BlockRef, now time.Time) arrival {
	if r.store != nil {
		if held := r.store.ByHash(ref.Hash); held != nil {
			return arrival{source: held.Source, signed: true, at: held.Arrived}
		}
	}
	if m, ok := r.source.(blockServer); ok {
		if name := m.ServedBy(ref.Hash); name != "" {
			return arrival{source: name, at: now}
		}
	}
	return arrival{source: r.source.Name(), at: now}
}
