package relay

import (
	"slices"
	"sync"

	"github.com/op-replicator/op-replicator/plugin/api"
)

// maxEvidence bounds how many equivocations are kept.
const maxEvidence = 16

// EvidenceLog keeps the equivocations seen (the first maxEvidence); each new one halts the replicator once.
type EvidenceLog struct {
	mu       sync.Mutex
	evidence []*api.Evidence
	pending  *api.Evidence // the latest one not acted upon yet
	onRecord func()
}

// NewEvidenceLog returns an empty log.
func NewEvidenceLog() *EvidenceLog { return &EvidenceLog{} }

// OnRecord sets what is called after each new equivocation is recorded (the replicator wakes its loop).
func (l *EvidenceLog) OnRecord(f func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.onRecord = f
}

// Record is called when a verified block conflicts with one held at its height (the store's Add returns both).
// Both are in memory (the store's Add reads the conflicts it returns from disk); one that is not (a spilled block
// that cannot be read) is not held, so not evidence.
func (l *EvidenceLog) Record(held, conflicting *Held) {
	first, err := held.Signed()
	if err != nil {
		return
	}
	second, err := conflicting.Signed()
	if err != nil {
		return
	}
	ev := &api.Evidence{Number: held.Number(), First: first, Second: second,
		FirstSource: held.Source, SecondSource: conflicting.Source}
	l.mu.Lock()
	if len(l.evidence) < maxEvidence {
		l.evidence = append(l.evidence, ev)
	}
	l.pending = ev
	onRecord := l.onRecord
	l.mu.Unlock()
	if onRecord != nil {
		onRecord()
	}
}

// TakePending returns the latest evidence not acted upon yet, once.
func (l *EvidenceLog) TakePending() *api.Evidence {
	l.mu.Lock()
	defer l.mu.Unlock()
	ev := l.pending
	l.pending = nil
	return ev
}

// Requeue makes evidence taken with TakePending pending again, unless newer evidence is pending already.
func (l *EvidenceLog) Requeue(ev *api.Evidence) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.pending == nil {
		l.pending = ev
	}
}

// All returns the evidence kept.
func (l *EvidenceLog) All() []*api.Evidence {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.evidence)
}

// Restore takes the evidence kept from a previous run (the replicator's state file), as history: it does not halt
// again.
func (l *EvidenceLog) Restore(evidence []*api.Evidence) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.evidence = append(l.evidence[:0], evidence...)
}

// Count returns how many equivocations are kept.
func (l *EvidenceLog) Count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.evidence)
}
