package plugin

import (
	"fmt"
	"sync"
	"time"

	"github.com/op-replicator/op-replicator/driverhook"
	"github.com/op-replicator/op-replicator/plugin/api"
)

// Disagreement is an error that halts the replicator: the source and our chain (or our L1 view) disagree.
type Disagreement struct {
	Reason api.Reason
	Detail string
}

func (d *Disagreement) Error() string { return fmt.Sprintf("%s: %s", d.Reason, d.Detail) }

func disagree(reason api.Reason, format string, args ...any) *Disagreement {
	return &Disagreement{Reason: reason, Detail: fmt.Sprintf(format, args...)}
}

// equivocation is the halt the relay's equivocation evidence calls for: the sequencer signed two blocks at a height.
func equivocation(ev *api.Evidence) *Disagreement {
	return disagree(api.ReasonEquivocation, "the sequencer signed blocks %s (from %s) and %s (from %s) at height %d",
		ev.First.Envelope.ExecutionPayload.BlockHash, ev.FirstSource, ev.Second.Envelope.ExecutionPayload.BlockHash,
		ev.SecondSource, ev.Number)
}

// haltState is the one place that knows whether the replicator runs or is halted, why, and when it resumes.
// It is safe for concurrent use: the replication loop, the RPC API and the gossip gate all read it.
type haltState struct {
	mu       sync.RWMutex
	policy   driverhook.HaltPolicy
	duration time.Duration

	state    api.State
	reason   api.Reason
	detail   string
	since    time.Time
	resumeAt time.Time // end of a timed halt; zero otherwise
}

func newHaltState(policy driverhook.HaltPolicy, duration time.Duration, now time.Time) *haltState {
	return &haltState{policy: policy, duration: duration, state: api.StateRunning, since: now}
}

// HaltStatus is a snapshot of the state machine.
type HaltStatus struct {
	State  api.State
	Reason api.Reason
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
	if st.State == api.StateHalted && h.policy == driverhook.HaltTimed {
		h.resumeAt = st.ResumeAt
		if h.resumeAt.IsZero() {
			h.resumeAt = st.Since.Add(h.duration)
		}
	}
}

func (h *haltState) Halted() bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.state == api.StateHalted
}

// Halt moves to halted. It returns false if already halted (the first reason is kept).
func (h *haltState) Halt(reason api.Reason, detail string, now time.Time) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.state == api.StateHalted {
		return false
	}
	h.state, h.reason, h.detail, h.since = api.StateHalted, reason, detail, now
	if h.policy == driverhook.HaltTimed {
		h.resumeAt = now.Add(h.duration)
	}
	return true
}

// Resume moves to running. It returns false if not halted.
func (h *haltState) Resume(now time.Time) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.state != api.StateHalted {
		return false
	}
	h.state, h.reason, h.detail, h.since, h.resumeAt = api.StateRunning, "", "", now, time.Time{}
	return true
}

// ShouldResume applies the halt policy: timed halts end after the configured duration, until-synced halts once
// derivation has caught up (synced is evaluated by the caller), manual halts only by Resume.
func (h *haltState) ShouldResume(now time.Time, synced func(haltedAt time.Time) bool) bool {
	h.mu.RLock()
	state, policy, since, resumeAt := h.state, h.policy, h.since, h.resumeAt
	h.mu.RUnlock()
	if state != api.StateHalted {
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
	if h.state != api.StateRunning {
		return false
	}
	f()
	return true
}
