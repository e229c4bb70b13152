package plugin

import (
	"github.com/ethereum/go-ethereum/common"
	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/ethereum-optimism/optimism/op-service/clock"
	"github.com/ethereum-optimism/optimism/op-service/retry"

	"github.com/op-replicator/op-replicator/driverhook"
	"github.com/op-replicator/op-replicator/plugin/api"
	"github.com/op-replicator/op-replicator/plugin/relay"
	"github.com/op-replicator/op-replicator/plugin/source"
)

// Construction of a Replicator: its components wired to op-node's parts, and the state a previous run left.

// arrivalsWindow is how many recently replicated blocks replicator_blockStatus knows the source and arrival of.
const arrivalsWindow = 4096

// components are the parts of a Replicator that are not op-node's.
type components struct {
	source   source.Source
	store    *relay.Store       // verified signed blocks; nil in tests that need none
	evidence *relay.EvidenceLog // equivocations seen
	rewinder rewinder           // rewinds op-geth's own chain at a halt; nil in tests that need none
	state    *stateFile         // nil without --replicator.state.path
}

// newReplicator wires a replicator: its watcher on op-node's events, the evidence log waking its loop, and the
// state a previous run left in the state file, if any.
func newReplicator(cfg driverhook.CLIConfig, deps driverhook.Deps, parts components, m Metricer, clk clock.Clock) (*Replicator, error) {
	arrivals, _ := lru.New[common.Hash, arrival](arrivalsWindow) // only fails for a non-positive size
	board := &statusBoard{}
	watch := newWatcher(clk)
	backoff := retry.Exponential()
	halt := &halter{
		haltState: newHaltState(cfg.HaltPolicy, cfg.HaltDuration, clk.Now()),
		log:       deps.Log,
		engine:    deps.Engine,
		onLoop:    newLoopRewinder(deps.Engine, deps.Events),
		l2:        deps.L2,
		status:    deps.Status,
		watch:     watch,
		metrics:   m,
		clock:     clk,
		backoff:   backoff,
		board:     board,
		rewinder:  parts.rewinder,
		genesis:   deps.Rollup.Genesis.L2,
	}
	rep := &Replicator{
		log:     deps.Log,
		cfg:     cfg,
		source:  parts.source,
		verify:  newVerifier(deps),
		insert:  &inserter{engine: deps.Engine},
		watch:   watch,
		halt:    halt,
		mail:    newMailbox(),
		board:   board,
		engine:  deps.Engine,
		l2:      deps.L2,
		status:  deps.Status,
		confs:   deps.L1ConfDepth,
		metrics: m,
		clock:   clk,
		backoff: backoff,
		persist: &persister{file: parts.state, halt: halt.haltState, evidence: parts.evidence, board: board,
			log: deps.Log, metrics: m, clock: clk},
		arrivals: arrivals,
		evidence: parts.evidence,
		store:    parts.store,
	}
	if deps.Events != nil {
		deps.Events.Register("replicator-watch", rep.watch)
		rep.watch.onLoop = true
	}
	// Evidence wakes the loop, and cuts a round waiting on a slow source short.
	rep.evidence.OnRecord(func() { rep.watch.poke(); rep.mail.interrupt(0) })
	st, err := rep.persist.load()
	if err != nil {
		return nil, err
	}
	if st != nil {
		rep.restore(st)
		h := rep.halt.Status()
		deps.Log.Info("Replicator state restored", "file", rep.persist.file.path, "state", h.State, "reason", h.Reason,
			"since", h.Since, "evidence", len(st.Evidence))
	}
	return rep, nil
}

// restore takes the state a previous run left in the state file.
func (r *Replicator) restore(st *persistedState) {
	r.evidence.Restore(st.Evidence)
	r.persist.restored(st)
	if st.LastReplicated != nil {
		r.board.publish(func(s *snapshot) { s.lastReplicated = *st.LastReplicated })
		r.restored = true
	}
	if st.State == api.StateHalted { // running, it is running since this start
		h := HaltStatus{State: st.State, Reason: st.Reason, Detail: st.Detail, Since: st.Since}
		if st.ResumeAt != nil {
			h.ResumeAt = *st.ResumeAt
		}
		// Nothing from outside derivation until the halt ends.
		r.halt.restoreHalted(h)
		r.metrics.RecordState(api.StateHalted)
	}
}
