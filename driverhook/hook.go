// Package driverhook is the narrow contract between op-node and the sequencer replicator.
//
// The patched op-node imports only this package: it reads the replicator's flags (CLIFlags,
// ReadCLIConfig, Check, in op-alt-da's idiom), hands the replicator the op-node parts it may use
// (Deps, each an interface that op-node's own types satisfy), and drives the Service it gets back.
// The replicator itself (package plugin) registers its constructor here from an init function;
// nothing heavy lives in this package, and it must not import op-node/config, op-node/flags or
// op-node/node, which import it.
package driverhook

import (
	"context"
	"errors"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/log"
	"github.com/ethereum/go-ethereum/params"
	"github.com/ethereum/go-ethereum/rpc"
	"github.com/prometheus/client_golang/prometheus"

	optypes "github.com/ethereum-optimism/optimism/op-core/types"
	"github.com/ethereum-optimism/optimism/op-node/rollup"
	"github.com/ethereum-optimism/optimism/op-service/eth"
	"github.com/ethereum-optimism/optimism/op-service/event"
	opsigner "github.com/ethereum-optimism/optimism/op-service/signer"
)

// Engine is the part of op-node's engine controller (*engine.EngineController) the replicator drives.
// Every method takes the controller's lock: the replicator never touches unlocked head state.
type Engine interface {
	// ProcessPayloads inserts payloads at the tip as unsafe, each on the one before it, the first on the unsafe head,
	// with one forkchoice update to the last inserted. It refuses a payload whose parent is not the unsafe head
	// (engine.ErrStaleBuild), requires the engine to report each VALID (engine.ErrPayloadInvalid), and refuses all
	// while unsafe input is held (engine.ErrUnsafeInputHeld). It stops at the first stale or failing payload, or when
	// ctx is done between payloads, keeping those before it, and returns how many it inserted; with all inserted,
	// an error if the forkchoice update to the last failed.
	ProcessPayloads(ctx context.Context, envelopes []*eth.ExecutionPayloadEnvelope, refs []eth.L2BlockRef) (int, error)
	// HoldUnsafeInput stops (true) or restarts taking unsafe payloads from outside derivation (gossip,
	// admin_postUnsafePayload, payloads already queued): while held, only derivation moves the unsafe head.
	HoldUnsafeInput(hold bool)
	// RewindUnsafeToSafe holds unsafe input, drops every queued unsafe payload, calls rewindEngine under the
	// controller lock to rewind the execution engine's own chain to the safe head (a forkchoice update to an
	// ancestor does not move op-geth's head), and resets op-node's unsafe head to the safe head. If rewindEngine
	// fails, op-node's heads are not reset (they stay on the chain the engine holds) and input stays held. It returns
	// the unsafe head and rewindEngine's error. Like op-node's own resets (the reset also resets the derivation
	// pipeline and the attributes handler), it must be called on op-node's event loop, i.e. from an event handler
	// (OnEvent of a deriver registered on Deps.Events): the plugin's loopRewinder does.
	RewindUnsafeToSafe(ctx context.Context, rewindEngine func(ctx context.Context, safe eth.L2BlockRef) error) (eth.L2BlockRef, error)
	// IsEngineInitialELSyncing reports whether the engine is still in its initial execution-layer sync.
	IsEngineInitialELSyncing() bool
}

// SyncStatus gives an atomic snapshot of op-node's view of the L1 and L2 heads (the driver's status tracker).
type SyncStatus interface {
	SyncStatus() *eth.SyncStatus
}

// L1Chain is op-node's own L1 view (the driver's L1 tracker): the canonical L1 block at a height, and what
// derivation reads of an L1 block to build payload attributes (its header, and its receipts for deposits and
// SystemConfig updates).
type L1Chain interface {
	L1BlockRefByNumber(ctx context.Context, num uint64) (eth.L1BlockRef, error)
	InfoByHash(ctx context.Context, hash common.Hash) (eth.BlockInfo, error)
	FetchReceipts(ctx context.Context, blockHash common.Hash) (eth.BlockInfo, optypes.Receipts, error)
}

// L2Chain is the local execution engine, read-only (op-node's *sources.EngineClient).
type L2Chain interface {
	L2BlockRefByLabel(ctx context.Context, label eth.BlockLabel) (eth.L2BlockRef, error)
	L2BlockRefByNumber(ctx context.Context, num uint64) (eth.L2BlockRef, error)
	L2BlockRefByHash(ctx context.Context, hash common.Hash) (eth.L2BlockRef, error)
	InfoByNumber(ctx context.Context, num uint64) (eth.BlockInfo, error)
	// InfoByLabel reads a labelled block's header only.
	InfoByLabel(ctx context.Context, label eth.BlockLabel) (eth.BlockInfo, error)
	// SystemConfigByL2Hash reads the SystemConfig a block's L1-info deposit carries.
	SystemConfigByL2Hash(ctx context.Context, hash common.Hash) (eth.SystemConfig, error)
}

// DependencySet is the interop dependency set op-node was configured with (derive.DependencySet).
type DependencySet interface {
	Chains() []eth.ChainID
}

// Signers is op-node's runtime config: the unsafe-block signer from the SystemConfig on L1, and the previous one
// while its grace period after a rotation lasts (zero otherwise). ConfirmCurrentSigner ends the grace period
// once a block signed by the current signer is verified, as op-node's gossip does.
type Signers interface {
	P2PSequencerAddress() common.Address
	PreviousP2PSequencerAddress() common.Address
	ConfirmCurrentSigner()
}

// UnsafePayloadReceiver is where op-node hands unsafe payloads that arrive by P2P gossip.
type UnsafePayloadReceiver interface {
	OnUnsafeL2Payload(ctx context.Context, envelope *eth.ExecutionPayloadEnvelope)
}

// Deps are the op-node parts handed to the replicator.
type Deps struct {
	Log      log.Logger
	Rollup   *rollup.Config
	Engine   Engine
	Status   SyncStatus
	L1       L1Chain
	L2       L2Chain
	Signers  Signers
	Events   event.Registry       // to observe op-node's events (resets, derivation progress)
	Registry *prometheus.Registry // op-node's metrics registry
	// L1ChainConfig and DependencySet are what op-node's own attributes builder is built with.
	L1ChainConfig *params.ChainConfig
	DependencySet DependencySet
	// L1ConfDepth is the verifier's L1 confirmation depth (--verifier.l1-confs): derivation that is idle this
	// close to the L1 head has caught up.
	L1ConfDepth uint64
}

// Service is the replicator as op-node drives it.
type Service interface {
	// Start starts replicating; Stop stops it and waits for its goroutines. Both are called once.
	Start(ctx context.Context) error
	Stop(ctx context.Context) error
	// APIs lists the RPC namespaces to serve on op-node's RPC server; the methods that change state
	// are listed only when admin is true (--rpc.enable-admin).
	APIs(admin bool) []rpc.API
	// GateGossip wraps the receiver of gossiped unsafe payloads, so that they are dropped while halted.
	GateGossip(next UnsafePayloadReceiver) UnsafePayloadReceiver
	// OnSignedUnsafeL2Payload takes every block P2P gossip accepted, with the sequencer's signature.
	OnSignedUnsafeL2Payload(ctx context.Context, signed *opsigner.SignedExecutionPayloadEnvelope)
}

// Factory builds the replicator service.
type Factory func(cfg CLIConfig, deps Deps) (Service, error)

var factory Factory

// Register installs the replicator implementation. The plugin calls it from an init function.
func Register(f Factory) { factory = f }

// ErrNotLinked is returned when the replicator is enabled but no implementation is linked into the binary.
var ErrNotLinked = errors.New("--replicator.enabled: this op-node binary was built without the replicator plugin")

// New builds the replicator service, or returns nil when neither replication nor the relay is enabled.
func New(cfg CLIConfig, deps Deps) (Service, error) {
	if !cfg.Enabled && !cfg.Relay.Enabled {
		return nil, nil
	}
	if factory == nil {
		return nil, ErrNotLinked
	}
	return factory(cfg, deps)
}

// GateGossip is svc.GateGossip(next), or next itself when there is no service.
func GateGossip(svc Service, next UnsafePayloadReceiver) UnsafePayloadReceiver {
	if svc == nil {
		return next
	}
	return svc.GateGossip(next)
}
