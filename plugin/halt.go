package plugin

import (
	"fmt"
	"sync"
	"time"

	"github.com/op-replicator/op-replicator/driverhook"
)

// State is the replicator's state as reported by replicator_status.
type State string

const (
	// StateRunning: blocks from the source are verified and inserted as unsafe.
	StateRunning State = "running"
	// StateHalted: the unsafe head was rewound to the safe head and nothing is replicated (nor taken from
	// gossip) until the halt policy resumes the replicator. The node is a plain L1 verifier meanwhile.
	StateHalted State = "halted"
)

// Reason says why the replicator halted. Logs, metrics labels and replicator_status use the same words.
type Reason string

const (
	// ReasonHeadMismatch: the local unsafe head is not the source's block at that height, or the source's next
	// block does not build on it (the sequencer's chain and ours disagree).
	ReasonHeadMismatch Reason = "head-mismatch"
	// ReasonInvalidPayload: the local engine executed the source's block and found it INVALID.
	ReasonInvalidPayload Reason = "invalid-payload"
	// ReasonExecutionMismatch: after insertion, the local block hash or state root differs from the source's. The
	// engine's VALID already proves they match (see inserter), so no halt has this reason any more; it stays listed
	// so that metrics labels, dashboards and alerts that name it keep working.
	ReasonExecutionMismatch Reason = "execution-mismatch"
	// ReasonL1OriginMismatch: the block's L1 origin is not the block our own L1 view has at that height, or is
	// neither the parent's origin nor its successor.
	ReasonL1OriginMismatch Reason = "l1-origin-mismatch"
	// ReasonAttributesMismatch: the block is not what derivation would build on its parent from its L1 origin
	// (timestamp, prev-randao, deposits, L1-info fields, gas limit, fee recipient, sequencer drift, ...).
	ReasonAttributesMismatch Reason = "attributes-mismatch"
	// ReasonL1OriginReorged: an L1 reorg removed the L1 origin of an unsafe block we hold.
	ReasonL1OriginReorged Reason = "l1-origin-reorged"
	// ReasonUnsafeReorg: op-node itself replaced or dropped replicated unsafe blocks (derivation from L1
	// contradicted them, or the engine was reset below them).
	ReasonUnsafeReorg Reason = "unsafe-reorg"
	// ReasonEquivocation: two different blocks at one height, both validly signed by the sequencer (from any
	// sources); both are kept as evidence (replicator_equivocationEvidence).
	ReasonEquivocation Reason = "equivocation"
	// ReasonOperator: an operator called replicator_halt.
	ReasonOperator Reason = "operator"
)

// Reasons lists every halt reason (for metrics, so each label exists from the start).
var Reasons = []Reason{ReasonHeadMismatch, ReasonInvalidPayload, ReasonExecutionMismatch, ReasonL1OriginMismatch,
	ReasonAttributesMismatch, ReasonL1OriginReorged, ReasonUnsafeReorg, ReasonEquivocation, ReasonOperator}

// Disagreement is an error that halts the replicator: the source and our chain (or our L1 view) disagree.
type Disagreement struct {
	Reason Reason
	Detail string
}

func (d *Disagreement) Error() string { return fmt.Sprintf("%s: %s", d.Reason, d.Detail) }

func disagree(reason Reason, format string, args ...any) *Disagreement {
	return &Disagreement{Reason: reason, Detail: fmt.Sprintf(format, args...)}
}

// haltState is the one place that knows whether the replicator runs or is halted, why, and when it resumes.
// It is safe for concurrent use: the replication loop, the RPC API and the gossip gate all read it.
type haltState struct {
	mu       sync.RWMutex
	policy   driverhook.HaltPolicy
	duration time.Duration

	state    State
	reason   Reason
	detail   string
	since    time.Time
	resumeAt time.Time // end of a timed halt; zero otherwise
}

func newHaltState(policy driverhook.HaltPolicy, duration time.Duration, now time.Time) *haltState {
	return &haltState{policy: policy, duration: duration, state: StateRunning, since: now}
}

// HaltStatus is a snapshot of the state machine.
type HaltStatus struct {
	State  State
	Reason Reason
	Detail string
	Since  time.Time
	// ResumeAt is when a timed halt ends (zero otherwise).
	ResumeAt time.Time
}

func (h *haltState) Status() HaltStatus {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return HaltStatus{State: h.state, Reason: h.reason, Detail: h.detail, Since: h.since, ResumeAt: h.resumeAt}
}

// Restore takes the state a previous run left (the state file). A halt keeps its reason, detail and start; under
// the timed policy it ends at its original resumeAt (or, if it began under another policy, the configured duration
// after it began).
func (h *haltState) Restore(st HaltStatus) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.state, h.reason, h.detail, h.since, h.resumeAt = st.State, st.Reason, st.Detail, st.Since, time.Time{}
	if st.State == StateHalted && h.policy == driverhook.HaltTimed {
		h.resumeAt = st.ResumeAt
		if h.resumeAt.IsZero() {
			h.resumeAt = st.Since.Add(h.duration)
		}
	}
}

func (h *haltState) Halted() bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.state == StateHalted
}

// Halt moves to halted. It returns false if already halted (the first reason is kept).
func (h *haltState) Halt(reason Reason, detail string, now time.Time) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.state == StateHalted {
		return false
	}
	h.state, h.reason, h.detail, h.since = StateHalted, reason, detail, now
	if h.policy == driverhook.HaltTimed {
		h.resumeAt = now.Add(h.duration)
	}
	return true
}

// Resume moves to running. It returns false if not halted.
func (h *haltState) Resume(now time.Time) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.state != StateHalted {
		return false
	}
	h.state, h.reason, h.detail, h.since, h.resumeAt = StateRunning, "", "", now, time.Time{}
	return true
}

// ShouldResume applies the halt policy: timed halts end after the configured duration, until-synced halts once
// derivation has caught up (synced is evaluated by the caller), manual halts only by Resume.
func (h *haltState) ShouldResume(now time.Time, synced func(haltedAt time.Time) bool) bool {
	h.mu.RLock()
	state, policy, since, resumeAt := h.state, h.policy, h.since, h.resumeAt
	h.mu.RUnlock()
	if state != StateHalted {
		return false
	}
	switch policy {
	case driverhook.HaltTimed:
		return !now.Before(resumeAt)
	case driverhook.HaltUntilSynced:
		return synced(since)
	default:
		return false
	}
}

// IfRunning calls f while holding the state (read-locked) if running, and reports whether it did.
func (h *haltState) IfRunning(f func()) bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if h.state != StateRunning {
		return false
	}
	f()
	return true
}
