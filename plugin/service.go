package plugin

import (
	"context"
	"errors"
	"sync"

	"github.com/ethereum/go-ethereum/log"
	"github.com/ethereum/go-ethereum/rpc"

	"github.com/ethereum-optimism/optimism/op-service/clock"
	opsigner "github.com/ethereum-optimism/optimism/op-service/signer"

	"github.com/op-replicator/op-replicator/driverhook"
	"github.com/op-replicator/op-replicator/plugin/api"
	"github.com/op-replicator/op-replicator/plugin/relay"
	"github.com/op-replicator/op-replicator/plugin/source"
)

func init() {
	driverhook.Register(func(cfg driverhook.CLIConfig, deps driverhook.Deps) (driverhook.Service, error) {
		return NewService(cfg, deps, NewMetrics(deps.Registry))
	})
}

// Service is what op-node drives (driverhook.Service): the replicator, the relay, or both. Either may be off: a
// sequencer or a P2P sentry runs only the relay, a replicator without --replicator.relay.enabled only replicates.
// As op-conductor's services: NewService builds every part and starts nothing; Start starts every goroutine;
// Stop stops and closes everything, whatever its context says.
type Service struct {
	log   log.Logger
	clock clock.Clock
	rep   *Replicator   // nil unless --replicator.enabled
	store *relay.Store  // verified signed blocks, from gossip and relay sources
	relay *relay.Server // nil unless --replicator.relay.enabled
	// evidence holds equivocations seen by gossip or relay sources.
	evidence *relay.EvidenceLog
	// rewinder is the replicator's connection to this node's op-geth (--replicator.l2.rpc), which Stop closes.
	rewinder *engineRewinder
	// windowDir and windowMemory are the store's window on disk (--replicator.relay.window.dir), opened by Start
	// and closed by Stop.
	windowDir    string
	windowMemory int

	mu      sync.Mutex
	started bool
	stopped bool
}

var _ driverhook.Service = (*Service)(nil)

// NewService builds the enabled parts, and registers the replicator's watcher on op-node's event system. A halt kept
// in the state file is restored now, before op-node starts taking unsafe blocks.
func NewService(cfg driverhook.CLIConfig, deps driverhook.Deps, m Metricer) (*Service, error) {
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	s := &Service{log: deps.Log, clock: clock.SystemClock, evidence: relay.NewEvidenceLog(),
		windowDir: cfg.Relay.WindowDir, windowMemory: cfg.Relay.WindowMemory}
	// Signed blocks are held whenever something delivers them (gossip, relay sources), so that equivocation
	// is caught from any source, and for the relay to serve.
	window := cfg.Relay.Window
	if window <= 0 {
		window = driverhook.DefaultRelayWindow
	}
	s.store = relay.NewStore(window, deps.Log, deps.Status, m)
	s.store.JudgeOrigins(deps.Rollup)
	if cfg.Relay.Enabled {
		srv, err := relay.NewServer(deps.Log, cfg.Relay, s.store, m)
		if err != nil {
			return nil, err
		}
		s.relay = srv
	}
	if !cfg.Enabled {
		return s, nil
	}
	if err := checkDerivationDeps(deps); err != nil {
		return nil, err
	}
	rewinder, err := newEngineRewinder(cfg.L2RPC, cfg.RequestTimeout)
	if err != nil {
		return nil, err
	}
	src, err := source.New(cfg, deps, s.store, s.evidence, m, s.clock)
	if err != nil {
		rewinder.Close()
		return nil, err
	}
	if cfg.RequireSignature && cfg.UnsignedSources() == len(cfg.Sources) {
		deps.Log.Warn("--" + driverhook.RequireSignatureFlagName + " without a relay source: only blocks this node's P2P " +
			"gossip accepted can be inserted (with P2P off, nothing is)")
	}
	parts := components{source: src, store: s.store, evidence: s.evidence, rewinder: rewinder}
	if cfg.StatePath != "" {
		parts.state = &stateFile{path: cfg.StatePath}
	} else {
		deps.Log.Warn("No --" + driverhook.StatePathFlagName + ": a halt, and the equivocation evidence, do not survive a restart")
	}
	s.rep, err = newReplicator(cfg, deps, parts, m, s.clock)
	if err != nil {
		_ = parts.source.Stop(context.Background()) // started nothing: nothing to wait for
		rewinder.Close()
		return nil, err
	}
	s.rewinder = rewinder
	return s, nil
}

// Start opens the window on disk (if any), starts the relay's listener and, with the replicator, checks
// --replicator.l2.rpc and starts the sources and the loop.
func (s *Service) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return errors.New("replicator already started")
	}
	s.started = true
	if s.windowDir != "" && s.store != nil {
		if err := s.store.SpillTo(s.windowDir, s.windowMemory); err != nil {
			return err
		}
	}
	if s.relay != nil {
		if err := s.relay.Start(ctx); err != nil {
			return err
		}
	}
	if s.rep == nil {
		return nil
	}
	return s.rep.Start(ctx)
}

// Stop stops the loop and the sources, closes the rewinder's connection, stops the relay and closes the window on
// disk: all of them, whatever
// ctx says. ctx bounds the waits (for the loop to finish its engine call, for the relay's connections to close
// gracefully); an error of each is joined into the result. It is idempotent.
func (s *Service) Stop(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return nil
	}
	s.stopped = true
	var result error
	if s.rep != nil {
		result = errors.Join(result, s.rep.Stop(ctx))
		if s.rewinder != nil {
			s.rewinder.Close()
		}
	}
	if s.relay != nil {
		result = errors.Join(result, s.relay.Stop(ctx))
	}
	// Last: the relay's subscribers and the replicator's sources read spilled blocks until they stop.
	if s.store != nil {
		result = errors.Join(result, s.store.Close())
	}
	return result
}

func (s *Service) APIs(admin bool) []rpc.API {
	if s.rep == nil {
		return nil
	}
	return api.APIs(s, admin)
}

// OnSignedUnsafeL2Payload holds a block P2P gossip accepted (gossip verified its signature) for the relay. A block
// the store refuses (at or below the safe head, a full height, below the window; logged and counted there) is not
// held and never evidence.
func (s *Service) OnSignedUnsafeL2Payload(_ context.Context, signed *opsigner.SignedExecutionPayloadEnvelope) {
	if s.store == nil {
		return
	}
	held, added, conflicts, err := s.store.Add(signed, "gossip", s.clock.Now())
	if err != nil {
		return
	}
	if added {
		s.log.Debug("Holding signed block", "block", signed.ID())
	}
	for _, c := range conflicts {
		s.evidence.Record(c, held)
	}
}

// GateGossip drops gossiped unsafe payloads while the replicator is halted (gossipGate, halter.go).
func (s *Service) GateGossip(next driverhook.UnsafePayloadReceiver) driverhook.UnsafePayloadReceiver {
	if s.rep == nil {
		return next
	}
	return s.rep.GateGossip(next)
}

// running is whether the replicator's loop may take requests: a replicator, started, and not stopped.
func (s *Service) running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rep != nil && s.started && !s.stopped
}
