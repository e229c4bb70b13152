package plugin

import (
	"context"
	"time"

	"github.com/ethereum/go-ethereum/rpc"

	"github.com/ethereum-optimism/optimism/op-service/eth"
)

// Status is the result of replicator_status.
type Status struct {
	State      State     `json:"state"`
	HaltReason Reason    `json:"haltReason,omitempty"`
	HaltDetail string    `json:"haltDetail,omitempty"`
	Since      time.Time `json:"since"`
	// ResumeAt is when a timed halt ends.
	ResumeAt   *time.Time `json:"resumeAt,omitempty"`
	HaltPolicy string     `json:"haltPolicy"`

	Source           string      `json:"source"`
	SourceHead       eth.BlockID `json:"sourceHead"`
	LastReplicated   eth.BlockID `json:"lastReplicated"`
	LastReplicatedAt *time.Time  `json:"lastReplicatedAt,omitempty"`

	Unsafe    eth.L2BlockRef `json:"unsafe"`
	Safe      eth.L2BlockRef `json:"safe"`
	Finalized eth.L2BlockRef `json:"finalized"`
	// Lag is the number of blocks between the source's head and our unsafe head.
	Lag uint64 `json:"lag"`
	// Sources is each source's health: its head, last success, errors.
	Sources []SourceHealth `json:"sources"`
}

// API is the replicator namespace served to everyone.
type API struct{ s *Service }

// Status reports the replicator's state and the chain heads it works with.
func (a *API) Status(_ context.Context) (*Status, error) {
	r := a.s.rep
	h := r.halt.Status()
	snap := r.snapshot()
	sync := r.status.SyncStatus()
	st := &Status{
		State:          h.State,
		HaltReason:     h.Reason,
		HaltDetail:     h.Detail,
		Since:          h.Since,
		HaltPolicy:     string(r.cfg.HaltPolicy),
		Source:         r.source.Name(),
		SourceHead:     snap.sourceHead,
		LastReplicated: snap.lastReplicated.ID(),
		Unsafe:         sync.UnsafeL2,
		Safe:           sync.SafeL2,
		Finalized:      sync.FinalizedL2,
		Lag:            lag(snap.sourceHead.Number, sync.UnsafeL2.Number),
	}
	if m, ok := r.source.(*multiSource); ok {
		st.Sources = m.Health()
		for i := range st.Sources {
			st.Sources[i].Lag = lag(st.Sources[i].Head.Number, sync.UnsafeL2.Number)
		}
	}
	if !h.ResumeAt.IsZero() {
		st.ResumeAt = &h.ResumeAt
	}
	if !snap.lastReplicatedAt.IsZero() {
		st.LastReplicatedAt = &snap.lastReplicatedAt
	}
	return st, nil
}

// BlockStatus reports a local block's safety label and its L1 origin's standing on our L1 view (sub-finality).
func (a *API) BlockStatus(ctx context.Context, id rpc.BlockNumberOrHash) (*BlockStatus, error) {
	return a.s.rep.blockStatus(ctx, id)
}

// EquivocationEvidence returns the equivocations seen: pairs of different blocks at one height, both validly signed
// by the sequencer.
func (a *API) EquivocationEvidence(_ context.Context) []*Evidence {
	return a.s.rep.evidence.all()
}

// AdminAPI holds the methods that change state; op-node serves them only with --rpc.enable-admin.
type AdminAPI struct{ s *Service }

// Halt rewinds the unsafe head to the safe head and halts, with reason "operator" and the detail given, if any.
func (a *AdminAPI) Halt(ctx context.Context, detail *string) error {
	req := request{halt: true}
	if detail != nil {
		req.detail = *detail
	}
	return a.s.request(ctx, req)
}

// Resume ends a halt, whatever the halt policy.
func (a *AdminAPI) Resume(ctx context.Context) error {
	return a.s.request(ctx, request{})
}
