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

// errNotRunning: operators' requests need the running loop.
var errNotRunning = errors.New("replicator is not running")

// Status reports the replicator's state and the chain heads it works with.
func (s *Service) Status(_ context.Context) (*api.Status, error) {
	if s.rep == nil {
		return nil, errNotReplicating
	}
	return s.rep.Status(), nil
}

// BlockStatus reports a local block's safety label and its L1 origin's standing on our L1 view (sub-finality).
func (s *Service) BlockStatus(ctx context.Context, id rpc.BlockNumberOrHash) (*api.BlockStatus, error) {
	if s.rep == nil {
		return nil, errNotReplicating
	}
	return s.rep.BlockStatus(ctx, id)
}

// EquivocationEvidence returns the equivocations seen: pairs of different blocks at one height, both validly signed
// by the sequencer.
func (s *Service) EquivocationEvidence() []*api.Evidence { return s.evidence.All() }

// Halt rewinds the unsafe head to the safe head and halts, with reason "operator" and the detail given, if any.
func (s *Service) Halt(ctx context.Context, detail string) error {
	if !s.running() {
		return errNotRunning
	}
	return s.rep.Halt(ctx, detail)
}

// Resume ends a halt, whatever the halt policy.
func (s *Service) Resume(ctx context.Context) error {
	if !s.running() {
		return errNotRunning
	}
	return s.rep.Resume(ctx)
}
