package plugin

import (
	"context"
	"errors"

	"github.com/ethereum/go-ethereum/rpc"

	"github.com/op-replicator/op-replicator/plugin/api"
)

// The replicator namespace (package api) reads the replicator through api.Backend, which Service implements.
var _ api.Backend = (*Service)(nil)

// errNotReplicating: the replicator namespace is served only with --replicator.enabled.
var errNotReplicating = errors.New("replicator is not enabled")

// Status reports the replicator's state and the chain heads it works with.
func (s *Service) Status(_ context.Context) (*api.Status, error) {
	r := s.rep
	if r == nil {
		return nil, errNotReplicating
	}
	h := r.halt.Status()
	snap := r.snapshot()
	sync := r.status.SyncStatus()
	st := &api.Status{
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
		RewindError:    snap.rewindErr,
		StateFileError: snap.stateErr,
		L2RPCError:     snap.l2RPCErr,
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
func (s *Service) BlockStatus(ctx context.Context, id rpc.BlockNumberOrHash) (*api.BlockStatus, error) {
	if s.rep == nil {
		return nil, errNotReplicating
	}
	return s.rep.blockStatus(ctx, id)
}

// EquivocationEvidence returns the equivocations seen: pairs of different blocks at one height, both validly signed
// by the sequencer.
func (s *Service) EquivocationEvidence() []*api.Evidence { return s.evidence.All() }

// Halt rewinds the unsafe head to the safe head and halts, with reason "operator" and the detail given, if any.
func (s *Service) Halt(ctx context.Context, detail string) error {
	return s.request(ctx, request{halt: true, detail: detail})
}

// Resume ends a halt, whatever the halt policy.
func (s *Service) Resume(ctx context.Context) error { return s.request(ctx, request{}) }
