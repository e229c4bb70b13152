// Package api is the replicator's and the relay's RPC contract: the wire types, the method names, the servers of
// the replicator namespace (over a Backend) and a typed Client for both namespaces, which the e2e tests, the demo
// and the benchmarks use as operators would. It imports nothing of the replicator.
//
//	types.go   the wire types: Status, SourceHealth, BlockStatus, Evidence; halt State and Reason
//	api.go     the replicator namespace's methods, served over a Backend (public, and admin-only)
//	client.go  Client (replicator_*) and RelayClient (relay_*)
package api

import (
	"context"

	"github.com/ethereum/go-ethereum/rpc"
)

// Namespaces and methods. The replicator namespace is served on op-node's RPC (halt and resume only with
// --rpc.enable-admin); the relay namespace on the relay's own listener (--replicator.relay.*).
const (
	ReplicatorNamespace = "replicator"
	RelayNamespace      = "relay"

	MethodStatus               = "replicator_status"
	MethodBlockStatus          = "replicator_blockStatus"
	MethodEquivocationEvidence = "replicator_equivocationEvidence"
	MethodHalt                 = "replicator_halt"
	MethodResume               = "replicator_resume"

	// MethodRelaySubscribe with RelayEnvelopes and a height: what the relay holds from that height on, then every
	// new block.
	MethodRelaySubscribe        = "relay_subscribe"
	RelayEnvelopes              = "envelopes"
	MethodRelayEnvelopeByNumber = "relay_envelopeByNumber"
	// MethodRelayEnvelopesByRange with a height and a count: the blocks held at consecutive heights from it.
	MethodRelayEnvelopesByRange = "relay_envelopesByRange"
	MethodRelayHead             = "relay_head"
)

// Backend is what the replicator namespace reads and asks of the replicator.
type Backend interface {
	Status(ctx context.Context) (*Status, error)
	BlockStatus(ctx context.Context, id rpc.BlockNumberOrHash) (*BlockStatus, error)
	EquivocationEvidence() []*Evidence
	// Halt rewinds the unsafe head to the safe head and halts with ReasonOperator; Resume ends a halt.
	Halt(ctx context.Context, detail string) error
	Resume(ctx context.Context) error
}

// APIs returns the replicator namespace over b: the reads for everyone, halt and resume only when admin is true.
func APIs(b Backend, admin bool) []rpc.API {
	apis := []rpc.API{{Namespace: ReplicatorNamespace, Service: &publicAPI{b: b}}}
	if admin {
		apis = append(apis, rpc.API{Namespace: ReplicatorNamespace, Service: &adminAPI{b: b}})
	}
	return apis
}

// publicAPI is the replicator namespace served to everyone.
type publicAPI struct{ b Backend }

// Status reports the replicator's state and the chain heads it works with.
func (a *publicAPI) Status(ctx context.Context) (*Status, error) { return a.b.Status(ctx) }

// BlockStatus reports a local block's safety label and its L1 origin's standing on our L1 view (sub-finality).
func (a *publicAPI) BlockStatus(ctx context.Context, id rpc.BlockNumberOrHash) (*BlockStatus, error) {
	return a.b.BlockStatus(ctx, id)
}

// EquivocationEvidence returns the equivocations seen: pairs of different blocks at one height, both validly signed
// by the sequencer.
func (a *publicAPI) EquivocationEvidence(context.Context) []*Evidence {
	return a.b.EquivocationEvidence()
}

// adminAPI holds the methods that change state; op-node serves them only with --rpc.enable-admin.
type adminAPI struct{ b Backend }

// Halt rewinds the unsafe head to the safe head and halts, with reason "operator" and the detail given, if any.
func (a *adminAPI) Halt(ctx context.Context, detail *string) error {
	var d string
	if detail != nil {
		d = *detail
	}
	return a.b.Halt(ctx, d)
}

// Resume ends a halt, whatever the halt policy.
func (a *adminAPI) Resume(ctx context.Context) error { return a.b.Resume(ctx) }
