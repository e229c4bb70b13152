package plugin

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/log"
	"github.com/ethereum/go-ethereum/rpc"
	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/ethereum-optimism/optimism/op-service/clock"
	"github.com/ethereum-optimism/optimism/op-service/eth"
	"github.com/ethereum-optimism/optimism/op-service/retry"
	opsigner "github.com/ethereum-optimism/optimism/op-service/signer"

	"github.com/op-replicator/op-replicator/driverhook"
	"github.com/op-replicator/op-replicator/plugin/api"
	"github.com/op-replicator/op-replicator/plugin/relay"
)

// arrivalsWindow is how many recently replicated blocks replicator_blockStatus knows the source and arrival of.
const arrivalsWindow = 4096

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
	// rewinder rewinds this node's op-geth at a halt (with the replicator).
	rewinder *engineRewinder

	mu      sync.Mutex
	cancel  context.CancelFunc
	done    chan struct{}
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
	s := &Service{log: deps.Log, clock: clock.SystemClock, evidence: relay.NewEvidenceLog()}
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
	srcs, err := newSources(cfg, deps, s.store, s.evidence, m, s.clock)
	if err != nil {
		rewinder.Close()
		return nil, err
	}
	if cfg.RequireSignature && cfg.UnsignedSources() == len(cfg.Sources) {
		deps.Log.Warn("--" + driverhook.RequireSignatureFlagName + " without a relay source: only blocks this node's P2P " +
			"gossip accepted can be inserted (with P2P off, nothing is)")
	}
	src := newMultiSource(srcs, m, s.clock).withTrust(deps.Log, trust{store: s.store, requireSignature: cfg.RequireSignature,
		quorum: cfg.Quorum})
	parts := components{source: src, store: s.store, evidence: s.evidence, rewinder: rewinder}
	if cfg.StatePath != "" {
		parts.state = &stateFile{path: cfg.StatePath}
	} else {
		deps.Log.Warn("No --" + driverhook.StatePathFlagName + ": a halt, and the equivocation evidence, do not survive a restart")
	}
	s.rep, err = newReplicator(cfg, deps, parts, m, s.clock)
	if err != nil {
		parts.source.Close()
		rewinder.Close()
		return nil, err
	}
	s.rewinder = rewinder
	return s, nil
}

// components are the parts of a Replicator that are not op-node's.
type components struct {
	source   Source
	store    *relay.Store       // verified signed blocks; nil in tests that need none
	evidence *relay.EvidenceLog // equivocations seen
	rewinder rewinder           // rewinds op-geth's own chain at a halt; nil in tests that need none
	state    *stateFile         // nil without --replicator.state.path
}

// newReplicator wires a replicator: its watcher on op-node's events, the evidence log waking its loop, and the
// state a previous run left in the state file, if any.
func newReplicator(cfg driverhook.CLIConfig, deps driverhook.Deps, parts components, m Metricer, clk clock.Clock) (*Replicator, error) {
	arrivals, _ := lru.New[common.Hash, arrival](arrivalsWindow) // only fails for a non-positive size
	rep := &Replicator{
		log:      deps.Log,
		cfg:      cfg,
		source:   parts.source,
		verify:   newVerifier(deps),
		insert:   &inserter{engine: deps.Engine},
		watch:    newWatcher(clk),
		halt:     newHaltState(cfg.HaltPolicy, cfg.HaltDuration, clk.Now()),
		engine:   deps.Engine,
		l2:       deps.L2,
		status:   deps.Status,
		confs:    deps.L1ConfDepth,
		metrics:  m,
		clock:    clk,
		backoff:  retry.Exponential(),
		requests: make(chan request),
		arrivals: arrivals,
		evidence: parts.evidence,
		store:    parts.store,
		rewinder: parts.rewinder,
		state:    parts.state,
		genesis:  deps.Rollup.Genesis.L2,
	}
	if deps.Events != nil {
		deps.Events.Register("replicator-watch", rep.watch)
	}
	// Evidence wakes the loop, and cuts a round waiting on a slow source short.
	rep.evidence.OnRecord(func() { rep.watch.poke(); rep.interruptRound(0) })
	if rep.state != nil {
		st, err := rep.state.load()
		if err != nil {
			return nil, err
		}
		if st != nil {
			rep.restore(st)
			h := rep.halt.Status()
			deps.Log.Info("Replicator state restored", "file", rep.state.path, "state", h.State, "reason", h.Reason,
				"since", h.Since, "evidence", len(st.Evidence))
		}
	}
	return rep, nil
}

// Start starts the relay's listener and, with the replicator, checks --replicator.l2.rpc and starts the sources and
// the loop.
func (s *Service) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return errors.New("replicator already started")
	}
	s.started = true
	if s.relay != nil {
		if err := s.relay.Start(); err != nil {
			return err
		}
	}
	if s.rep == nil {
		return nil
	}
	if s.rewinder != nil { // nil only in unit tests: NewService always builds it
		if err := s.rewinder.Check(ctx, s.rep.genesis, s.rep.l2); err != nil {
			return err
		}
	}
	s.rep.source.Start()
	loopCtx, cancel := context.WithCancel(context.Background())
	s.cancel, s.done = cancel, make(chan struct{})
	s.rep.log.Info("Starting replicator", "source", s.rep.source.Name(), "poll_interval", s.rep.cfg.PollInterval,
		"halt_policy", s.rep.cfg.HaltPolicy)
	go func() {
		defer close(s.done)
		s.rep.run(loopCtx)
	}()
	return nil
}

// Stop stops the loop, closes the sources and the rewinder's connection, and stops the relay: all of them, whatever
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
		if s.done != nil {
			s.cancel()
			select {
			case <-s.done:
			case <-ctx.Done():
				result = errors.Join(result, fmt.Errorf("replicator loop still running: %w", ctx.Err()))
			}
		}
		s.rep.source.Close()
		if s.rewinder != nil {
			s.rewinder.Close()
		}
	}
	if s.relay != nil {
		result = errors.Join(result, s.relay.Stop(ctx))
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

// GateGossip drops gossiped unsafe payloads while halted. The halt state's read lock is held while a payload is
// handed on, so a halt waits for in-flight payloads and the rewind that follows drops them from op-node's queue.
func (s *Service) GateGossip(next driverhook.UnsafePayloadReceiver) driverhook.UnsafePayloadReceiver {
	if s.rep == nil {
		return next
	}
	return gossipGate{next: next, rep: s.rep}
}

type gossipGate struct {
	next driverhook.UnsafePayloadReceiver
	rep  *Replicator
}

func (g gossipGate) OnUnsafeL2Payload(ctx context.Context, env *eth.ExecutionPayloadEnvelope) {
	if !g.rep.halt.IfRunning(func() { g.next.OnUnsafeL2Payload(ctx, env) }) {
		g.rep.metrics.RecordGossipDropped()
		g.rep.log.Debug("Replicator halted, dropping gossiped unsafe block", "block", env.ExecutionPayload.ID())
	}
}

// request hands an operator's halt or resume to the loop goroutine and waits for it.
func (s *Service) request(ctx context.Context, req request) error {
	s.mu.Lock()
	running := s.started && !s.stopped && s.done != nil
	s.mu.Unlock()
	if !running {
		return errors.New("replicator is not running")
	}
	req.done = make(chan error, 1)
	s.rep.interruptRound(1) // the round in progress, maybe waiting on a slow source, gives way
	select {
	case s.rep.requests <- req: // the loop counts it off (Replicator.serve)
	case <-ctx.Done():
		s.rep.interruptRound(-1)
		return ctx.Err()
	case <-s.done:
		s.rep.interruptRound(-1)
		return errors.New("replicator stopped")
	}
	select {
	case err := <-req.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}
