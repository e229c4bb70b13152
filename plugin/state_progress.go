package plugin

import (
	"context"
	"fmt"

	"github.com/ethereum/go-ethereum/log"
)

// progressWriter writes progress (the last replicated block) to the state file on a goroutine of its own: a write
// is two fsyncs, slow on a disk the engine is writing to, and the loop must not hold up the pipeline for it (the
// engine would sit idle meanwhile). Halts, resumes and evidence are
// still written by the loop itself, before it acts on them; snapshot numbers keep an older progress write from
// replacing them (stateFile.saveInOrder).
type progressWriter struct {
	file    *stateFile
	log     log.Logger
	metrics Metricer
	pending chan numberedState // the newest snapshot not yet written; capacity 1
	done    chan struct{}
}

type numberedState struct {
	seq uint64
	st  *persistedState
}

func startProgressWriter(file *stateFile, lgr log.Logger, m Metricer) *progressWriter {
	w := &progressWriter{file: file, log: lgr, metrics: m, pending: make(chan numberedState, 1), done: make(chan struct{})}
	go w.run()
	return w
}

func (w *progressWriter) run() {
	defer close(w.done)
	for s := range w.pending {
		if err := w.file.saveInOrder(s.seq, s.st); err != nil {
			err = fmt.Errorf("%w: %w", errState, err)
			w.metrics.RecordError(errorKind(err))
			w.log.Error("Could not write the replicator's progress to the state file", "err", err)
		}
	}
}

// write hands a snapshot over, replacing one still waiting (which it is newer than). It does not wait. Only the
// loop goroutine calls it.
func (w *progressWriter) write(seq uint64, st *persistedState) {
	select {
	case <-w.pending: // superseded
	default:
	}
	w.pending <- numberedState{seq: seq, st: st}
}

// Stop waits for the snapshot waiting, if any, to be written, or for ctx. Only the loop goroutine calls it, once.
func (w *progressWriter) Stop(ctx context.Context) error {
	close(w.pending)
	select {
	case <-w.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("progress still being written to the state file: %w", ctx.Err())
	}
}
