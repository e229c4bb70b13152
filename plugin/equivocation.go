package plugin

import (
	"slices"
	"sync"

	opsigner "github.com/ethereum-optimism/optimism/op-service/signer"
)

// Evidence is two different blocks at one height, both validly signed by the sequencer: a portable proof that
// the sequencer equivocated. Anyone can check both signatures against the unsafe-block signer on L1.
type Evidence struct {
	Number uint64                                   `json:"number"`
	First  *opsigner.SignedExecutionPayloadEnvelope `json:"first"`
	Second *opsigner.SignedExecutionPayloadEnvelope `json:"second"`
	// Sources say where each came from.
	FirstSource  string `json:"firstSource"`
	SecondSource string `json:"secondSource"`
}

func equivocation(ev *Evidence) *Disagreement {
	return disagree(ReasonEquivocation, "the sequencer signed blocks %s (from %s) and %s (from %s) at height %d",
		ev.First.Envelope.ExecutionPayload.BlockHash, ev.FirstSource, ev.Second.Envelope.ExecutionPayload.BlockHash,
		ev.SecondSource, ev.Number)
}

// maxEvidence bounds how many equivocations are kept.
const maxEvidence = 16

// evidenceLog keeps the equivocations seen (the first maxEvidence); each new one halts the replicator once.
type evidenceLog struct {
	mu       sync.Mutex
	evidence []*Evidence
	pending  *Evidence // the latest one not acted upon yet
	wake     func()
}

// record is called when a verified block conflicts with one held at its height.
func (l *evidenceLog) record(held, conflicting *heldEnvelope) {
	ev := &Evidence{Number: held.number(), First: held.Signed, Second: conflicting.Signed,
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
func (l *evidenceLog) takePending() *Evidence {
	l.mu.Lock()
	defer l.mu.Unlock()
	ev := l.pending
	l.pending = nil
	return ev
}

// all returns the evidence kept.
func (l *evidenceLog) all() []*Evidence {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.evidence)
}
