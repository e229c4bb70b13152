package plugin

import (
	"context"
	"fmt"
	"time"

	"github.com/ethereum/go-ethereum/log"

	"github.com/ethereum-optimism/optimism/op-service/clock"
	"github.com/ethereum-optimism/optimism/op-service/eth"

	"github.com/op-replicator/op-replicator/plugin/relay"
)

// persistEvery bounds how often progress alone (a new last replicated block) is written to the state file: a write
// is two fsyncs, a noticeable share of a following op-node's CPU if done often (docs/benchmarks-history.md). After a
// crash the file then names a replicated block up to persistEvery older than the last, which the restart check uses
// as well (it is in the chain below the newer ones). Halts, resumes and new evidence are written at once, and the
// loop writes its progress when it stops.
const persistEvery = 30 * time.Second

// persister keeps the replicator's state in the state file (state.go): the halt, the evidence and the last
// replicated block. Halts, resumes and evidence are written before the loop acts on them; progress is handed to the
// progress writer (state_progress.go) while the loop runs. Without --replicator.state.path (file nil) it writes
// nothing. It is the loop goroutine's: only the progress writer runs on a goroutine of its own.
type persister struct {
	file     *stateFile // nil without --replicator.state.path
	halt     *haltState
	evidence *relay.EvidenceLog
	board    *statusBoard
	log      log.Logger
	metrics  Metricer
	clock    clock.Clock

	// persistFailed: the last write of the state file failed; it is written again every round until it succeeds.
	persistFailed     bool
	persisted         eth.L2BlockRef  // lastReplicated as last written to the state file
	persistedEvidence int             // how much evidence was last written to the state file
	persistedAt       time.Time       // when the state file was last written
	stateSeq          uint64          // numbers the snapshots of the state taken for the state file
	progress          *progressWriter // writes progress while the loop runs; nil otherwise (progress is written at once)
}

// load reads what a previous run left in the state file: nil without one.
func (p *persister) load() (*persistedState, error) {
	if p.file == nil {
		return nil, nil
	}
	return p.file.load()
}

// restored takes note of what the state file held at start-up (load), so that it is not written again unchanged.
func (p *persister) restored(st *persistedState) {
	p.persistedEvidence = len(st.Evidence)
	if st.LastReplicated != nil {
		p.persisted = *st.LastReplicated
	}
}

// retry writes the state file again if its last write failed.
func (p *persister) retry() {
	if p.persistFailed {
		p.save()
	}
}

// save writes the state file (if configured) and returns once it is written. It is called by the loop goroutine
// only.
func (p *persister) save() {
	if p.file == nil {
		return
	}
	seq, st := p.stateSnapshot()
	if err := p.file.saveInOrder(seq, st); err != nil {
		err = fmt.Errorf("%w: %w", errState, err)
		p.persistFailed = true
		p.metrics.RecordError(errorKind(err))
		p.board.publish(func(s *snapshot) { s.stateErr = err.Error() })
		p.log.Error("Could not write the replicator state file: a restart now would not know this state; retrying every round",
			"err", err)
		return
	}
	if p.persistFailed {
		p.persistFailed = false
		p.board.publish(func(s *snapshot) { s.stateErr = "" })
		p.log.Info("Replicator state file written again", "state", st.State)
	}
	p.persisted, p.persistedEvidence, p.persistedAt = st.lastReplicated(), len(st.Evidence), p.clock.Now()
}

// stateSnapshot numbers and takes what the state file keeps.
func (p *persister) stateSnapshot() (uint64, *persistedState) {
	h := p.halt.Status()
	st := &persistedState{State: h.State, Reason: h.Reason, Detail: h.Detail, Since: h.Since, Evidence: p.evidence.All()}
	if !h.ResumeAt.IsZero() {
		st.ResumeAt = &h.ResumeAt
	}
	if last := p.board.lastReplicated(); last != (eth.L2BlockRef{}) {
		st.LastReplicated = &last
	}
	p.stateSeq++
	return p.stateSeq, st
}

// saveProgress writes the state file when the evidence changed, or when the last replicated block changed and
// the last write is persistEvery old (or now, with force). Progress alone is handed to the progress writer while
// the loop runs; evidence, and progress with force, are written before it returns.
func (p *persister) saveProgress(force bool) {
	if p.file == nil {
		return
	}
	evidence := p.evidence.Count() != p.persistedEvidence
	progress := p.board.lastReplicated() != p.persisted && (force || p.clock.Since(p.persistedAt) >= persistEvery)
	switch {
	case evidence || (progress && (force || p.progress == nil)):
		p.save()
	case progress:
		seq, st := p.stateSnapshot()
		p.progress.write(seq, st)
		p.persisted, p.persistedAt = st.lastReplicated(), p.clock.Now()
	}
}

// startProgress starts the progress writer, for the loop's lifetime.
func (p *persister) startProgress() {
	if p.file != nil {
		p.progress = startProgressWriter(p.file, p.log, p.metrics)
	}
}

// stopProgress waits for the progress writer's last write, however long it takes (what the loop writes next must
// come after it); progress is then written at once again.
func (p *persister) stopProgress() {
	if p.progress != nil {
		_ = p.progress.Stop(context.Background()) // no deadline: no error
		p.progress = nil
	}
}
