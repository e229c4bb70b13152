// Package plugin is the sequencer replicator: it follows the sequencer's not-yet-batched blocks from an external
// source, inserts them at the tip of the local engine as unsafe only, and on any disagreement rewinds the unsafe
// head to the safe head and halts. The pipeline, one file a stage:
//
//	source.go   the sequencer's execution-engine RPC (polling, plus newHeads over ws)
//	source_relay.go, sources.go  another node's relay as a source; several sources at once
//	prefetch.go blocks fetched ahead, in order, while catching up
//	verify.go   checks before insertion: next block, above safe, L1 origin canonical on our L1 view
//	derivation.go  the block must be what derivation would build from L1 (batch rules, payload attributes)
//	insert.go   insertion through op-node's engine controller; the engine's VALID proves hash and state root
//	watch.go    op-node's own events: resets, derivation replacing unsafe blocks, derivation idle
//	halt.go     the running/halted state machine and halt reasons
//	rewind.go   a halt's rewind of this node's op-geth (debug_setHead over --replicator.l2.rpc)
//	state.go    the state file: a halt, its evidence and the last replicated block across restarts
//	replicator.go  the loop that runs the pipeline and owns every engine write
//	service.go  lifecycle and the gossip gate; api.go the replicator_* RPC; metrics.go the metrics
//	subfinality.go  replicator_blockStatus: a block's L1 origin on our L1 view
//	envelopes.go, relay.go, relay_limits.go  sequencer-signed blocks held and served to downstream nodes, and the
//	            relay's per-client limits
//	signature.go, equivocation.go  the sequencer's signature on a block; two signed blocks at one height
package plugin

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/log"
	"github.com/ethereum/go-ethereum/rpc"
	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/ethereum-optimism/optimism/op-service/eth"
	"github.com/ethereum-optimism/optimism/op-service/retry"
	opsigner "github.com/ethereum-optimism/optimism/op-service/signer"

	"github.com/op-replicator/op-replicator/driverhook"
	"github.com/op-replicator/op-replicator/plugin/api"
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
type Service struct {
	log   log.Logger
	rep   *Replicator    // nil unless --replicator.enabled
	store *envelopeStore // verified signed blocks, from gossip and relay sources
	relay *relayServer
	// rewinder rewinds this node's op-geth at a halt (with the replicator).
	rewinder *engineRewinder
	// evidence holds equivocations seen by gossip or relay sources.
	evidence *evidenceLog

	mu      sync.Mutex
	cancel  context.CancelFunc
	done    chan struct{}
	started bool
	stopped bool
}

var _ driverhook.Service = (*Service)(nil)

// NewService builds the enabled parts, and registers the replicator's watcher on op-node's event system.
func NewService(cfg driverhook.CLIConfig, deps driverhook.Deps, m Metrics) (*Service, error) {
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	s := &Service{log: deps.Log, evidence: &evidenceLog{}}
	// Signed blocks are held whenever something delivers them (gossip, relay sources), so that equivocation
	// is caught from any source, and for the relay to serve.
	if cfg.Enabled || cfg.Relay.Enabled {
		window := cfg.Relay.Window
		if window <= 0 {
			window = driverhook.DefaultRelayWindow
		}
		s.store = newEnvelopeStore(window).dropSettled(deps.Log, deps.Status, m)
	}
	if cfg.Relay.Enabled {
		relay, err := newRelayServer(deps.Log, cfg.Relay, s.store, m)
		if err != nil {
			return nil, err
		}
		s.relay = relay
	}
	if cfg.Enabled {
		if err := checkDerivationDeps(deps); err != nil {
			return nil, err
		}
		var srcs []Source
		for _, url := range cfg.Sources {
			if driverhook.IsRelaySource(url) {
				srcs = append(srcs, newRelaySource(deps.Log, url, deps.Rollup, deps.Signers, s.store, s.evidence.record,
					cfg.RequestTimeout, cfg.ReadTimeout, m))
				continue
			}
			src, err := newRPCSource(deps.Log, url, deps.Rollup, cfg.RequestTimeout, m)
			if err != nil {
				for _, s := range srcs {
					s.Close()
				}
				return nil, err
			}
			srcs = append(srcs, src)
		}
		s.rep = newReplicator(cfg, deps, newMultiSource(srcs, m, time.Now), m)
		s.rep.evidence, s.rep.store = s.evidence, s.store
		// Evidence wakes the loop, and cuts a round waiting on a slow source short.
		s.evidence.wake = func() { s.rep.watch.poke(); s.rep.interruptRound(0) }
		if err := s.initHaltSafety(cfg, deps); err != nil {
			s.rep.source.Close()
			return nil, err
		}
	}
	return s, nil
}

// initHaltSafety sets up what makes a halt hold: the rewinder of this node's op-geth (checked at Start), and the
// state file, whose halt is restored now, before op-node starts taking unsafe blocks.
func (s *Service) initHaltSafety(cfg driverhook.CLIConfig, deps driverhook.Deps) error {
	rewinder, err := newEngineRewinder(cfg.L2RPC, cfg.RequestTimeout)
	if err != nil {
		return err
	}
	s.rep.rewinder, s.rewinder = rewinder, rewinder
	if cfg.StatePath == "" {
		deps.Log.Warn("No --" + driverhook.StatePathFlagName + ": a halt, and the equivocation evidence, do not survive a restart")
		return nil
	}
	s.rep.state = &stateFile{path: cfg.StatePath}
	st, err := s.rep.state.load()
	if err != nil {
		rewinder.Close()
		return err
	}
	if st != nil {
		s.rep.restore(st)
		h := s.rep.halt.Status()
		deps.Log.Info("Replicator state restored", "file", cfg.StatePath, "state", h.State, "reason", h.Reason,
			"since", h.Since, "evidence", len(st.Evidence))
	}
	return nil
}

func newReplicator(cfg driverhook.CLIConfig, deps driverhook.Deps, src Source, m Metrics) *Replicator {
	now := time.Now
	arrivals, _ := lru.New[common.Hash, arrival](arrivalsWindow) // only fails for a non-positive size
	rep := &Replicator{
		log:      deps.Log,
		cfg:      cfg,
		source:   src,
		verify:   newVerifier(deps),
		insert:   &inserter{engine: deps.Engine},
		watch:    newWatcher(now),
		halt:     newHaltState(cfg.HaltPolicy, cfg.HaltDuration, now()),
		engine:   deps.Engine,
		l2:       deps.L2,
		status:   deps.Status,
		confs:    deps.L1ConfDepth,
		metrics:  m,
		now:      now,
		backoff:  retry.Exponential(),
		requests: make(chan request),
		arrivals: arrivals,
		evidence: &evidenceLog{},
		genesis:  deps.Rollup.Genesis.L2,
	}
	if deps.Events != nil {
		deps.Events.Register("replicator-watch", rep.watch)
	}
	return rep
}

func (s *Service) Start(startCtx context.Context) error {
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
		if err := s.rewinder.Check(startCtx, s.rep.genesis); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel, s.done = cancel, make(chan struct{})
	s.rep.log.Info("Starting replicator", "source", s.rep.source.Name(), "poll_interval", s.rep.cfg.PollInterval,
		"halt_policy", s.rep.cfg.HaltPolicy)
	go func() {
		defer close(s.done)
		s.rep.run(ctx)
	}()
	return nil
}

// Stop stops the loop and waits for it, closes the source, and stops the relay. It is idempotent.
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
				return ctx.Err()
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
	held, added, conflicts, err := s.store.Add(signed, "gossip", time.Now())
	if err != nil {
		return
	}
	if added {
		s.log.Debug("Holding signed block", "block", signed.ID())
	}
	for _, c := range conflicts {
		s.evidence.record(c, held)
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
	case s.rep.requests <- req:
		s.rep.interruptRound(-1)
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
