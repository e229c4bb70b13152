package plugin

import (
	"slices"
	"sync"

	"github.com/op-replicator/op-replicator/plugin/api"
)

func equivocation(ev *api.Evidence) *Disagreement {
	return disagree(api.ReasonEquivocation, "the sequencer signed blocks %s (from %s) and %s (from %s) at height %d",
		ev.First.Envelope.ExecutionPayload.BlockHash, ev.FirstSource, ev.Second.Envelope.ExecutionPayload.BlockHash,
		ev.SecondSource, ev.Number)
}

// maxEvidence bounds how many equivocations are kept.
const maxEvidence = 16

// evidenceLog keeps the equivocations seen (the first maxEvidence); each new one halts the replicator once.
type evidenceLog struct {
	mu       sync.Mutex
	evidence []*api.Evidence
	pending  *api.Evidence // the latest one not acted upon yet
	wake     func()
}

// record is called when a verified block conflicts with one held at its height.
func (l *evidenceLog) record(held, conflicting *heldEnvelope) {
	ev := &api.Evidence{Number: held.number(), First: held.Signed, Second: conflicting.Signed,
		FirstSource: held.Source, SecondSource: conflicting.Source}
	l.mu.Lock()
	if len(l.evidence) < maxEvidence {
		l.evidence = append(l.evidence, ev)
	}
	l.pending = ev
	l.mu.Unlock()
	if l.wake != nil {
		l.wake()
	}
}

// takePending returns the latest evidence not acted upon yet, once.
func (l *evidenceLog) takePending() *api.Evidence {
	l.mu.Lock()
	defer l.mu.Unlock()
	ev := l.pending
	l.pending = nil
	return ev
}

// all returns the evidence kept.
func (l *evidenceLog) all() []*api.Evidence {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.evidence)
}
