// Package plugin is the sequencer replicator: it follows the sequencer's not-yet-batched blocks from an external
// source, inserts them at the tip of the local engine as unsafe only, and on any disagreement rewinds the unsafe
// head to the safe head and halts. The pipeline, one file a stage:
//
//	source.go   the sequencer's execution-engine RPC (polling, plus newHeads over ws)
//	verify.go   checks before insertion: next block, above safe, L1 origin canonical on our L1 view
//	insert.go   insertion through op-node's engine controller; local execution must match the sequencer's
//	watch.go    op-node's own events: resets, derivation replacing unsafe blocks, derivation idle
//	halt.go     the running/halted state machine and halt reasons
//	replicator.go  the loop that runs the pipeline and owns every engine write
//	service.go  lifecycle and the gossip gate; api.go the replicator_* RPC; metrics.go the metrics
package plugin

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/rpc"
	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/ethereum-optimism/optimism/op-service/eth"
	"github.com/ethereum-optimism/optimism/op-service/retry"

	"github.com/op-replicator/op-replicator/driverhook"
)

// arrivalsWindow is how many recently replicated blocks replicator_blockStatus knows the source and arrival of.
const arrivalsWindow = 4096

func init() {
	driverhook.Register(func(cfg driverhook.CLIConfig, deps driverhook.Deps) (driverhook.Service, error) {
		return NewService(cfg, deps, NewMetrics(deps.Registry))
	})
}

// Service is the replicator as op-node drives it (driverhook.Service).
type Service struct {
	rep *Replicator

	mu      sync.Mutex
	cancel  context.CancelFunc
	done    chan struct{}
	started bool
	stopped bool
}

var _ driverhook.Service = (*Service)(nil)

// NewService builds the replicator and registers its watcher on op-node's event system.
func NewService(cfg driverhook.CLIConfig, deps driverhook.Deps, m Metrics) (*Service, error) {
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	src, err := newRPCSource(deps.Log, cfg.Source, deps.Rollup, cfg.RequestTimeout, m)
	if err != nil {
		return nil, err
	}
	return newService(cfg, deps, src, m), nil
}

func newService(cfg driverhook.CLIConfig, deps driverhook.Deps, src Source, m Metrics) *Service {
	now := time.Now
	arrivals, _ := lru.New[common.Hash, arrival](arrivalsWindow) // only fails for a non-positive size
	rep := &Replicator{
		log:      deps.Log,
		cfg:      cfg,
		source:   src,
		verify:   &verifier{rollup: deps.Rollup, l1: deps.L1},
		insert:   &inserter{engine: deps.Engine, l2: deps.L2},
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
	}
	if deps.Events != nil {
		deps.Events.Register("replicator-watch", rep.watch)
	}
	return &Service{rep: rep}
}

func (s *Service) Start(_ context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return errors.New("replicator already started")
	}
	s.started = true
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

// Stop stops the loop, waits for it, and closes the source. It is idempotent.
func (s *Service) Stop(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return nil
	}
	s.stopped = true
	if s.started {
		s.cancel()
		select {
		case <-s.done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s.rep.source.Close()
	return nil
}

func (s *Service) APIs(admin bool) []rpc.API {
	apis := []rpc.API{{Namespace: "replicator", Service: &API{s: s}}}
	if admin {
		apis = append(apis, rpc.API{Namespace: "replicator", Service: &AdminAPI{s: s}})
	}
	return apis
}

// GateGossip drops gossiped unsafe payloads while halted. The halt state's read lock is held while a payload is
// handed on, so a halt waits for in-flight payloads and the rewind that follows drops them from op-node's queue.
func (s *Service) GateGossip(next driverhook.UnsafePayloadReceiver) driverhook.UnsafePayloadReceiver {
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
	running := s.started && !s.stopped
	s.mu.Unlock()
	if !running {
		return errors.New("replicator is not running")
	}
	req.done = make(chan error, 1)
	select {
	case s.rep.requests <- req:
	case <-ctx.Done():
		return ctx.Err()
	case <-s.done:
		return errors.New("replicator stopped")
	}
	select {
	case err := <-req.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}
