//go:build soak

package e2e

import (
	"context"
	"fmt"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ethereum/go-ethereum/rpc"

	"github.com/ethereum-optimism/optimism/op-service/eth"

	"github.com/op-replicator/op-replicator/e2e/devnet"
	"github.com/op-replicator/op-replicator/e2e/dsl"
	"github.com/op-replicator/op-replicator/plugin/api"
)

// schedule is one cycle of faults. Each is injected, ended, and recovered from before the next.
func (s *soak) schedule() []*soakFault {
	return []*soakFault{
		{name: "source down (15 s)", target: s.rep.Node, inject: func() {
			s.proxy.SetFailure(devnet.FailDown)
			s.sys.Hold(15 * time.Second)
			s.proxy.SetFailure(devnet.FailNone)
		}},
		{name: "source stalled (8 s a request, for 12 s)", target: s.rep.Node, inject: func() {
			s.proxy.SetDelay(8 * time.Second) // beyond the 5 s request timeout
			s.sys.Hold(12 * time.Second)
			s.proxy.SetDelay(0)
		}},
		{name: "source tampered", target: s.rep.Node, expectHalt: api.ReasonInvalidPayload, inject: s.tamperSource},
		{name: "op-geth restart (down 5 s)", target: s.rep.Node, inject: func() {
			require.NoError(s.t, s.rep.OpGeth.Stop())
			s.sys.Hold(soakDowntime)
			s.rep.StartAgain() // op-geth only: the op-node runs on
		}},
		{name: "op-node SIGKILL (down 5 s)", target: s.down.Node, inject: func() {
			require.NoError(s.t, s.down.OpNode.Kill())
			s.sys.Hold(soakDowntime)
			s.down.StartAgain()
		}},
		{name: "relay churn (sentry's op-node down 5 s)", target: s.sentry, inject: func() {
			require.NoError(s.t, s.sentry.OpNode.Stop())
			s.sys.Hold(soakDowntime)
			s.sentry.StartAgain()
		}},
		{name: "hostile relay: forged blocks", target: s.rep.Node, inject: func() {
			s.streamHostile("forged", func(f *fakeRelay) { f.key = s.forger })
		}},
		{name: "hostile relay: altered blocks", target: s.rep.Node, inject: func() {
			s.streamHostile("altered", func(f *fakeRelay) {
				f.key = s.sys.Net.Keys.SequencerP2P
				f.alter = func(env *eth.ExecutionPayloadEnvelope) { env.ExecutionPayload.GasLimit-- }
			})
		}},
		{name: "hostile relay: replayed history", target: s.rep.Node, inject: s.replayHistory},
		{name: "hostile relay: oversized block", target: s.rep.Node, inject: s.pushOversized},
		{name: "hostile client (20 s)", target: s.sentry, inject: s.attackSentry},
	}
}

// run injects the schedule's faults in turn until duration has passed, and at least the whole schedule once.
func (s *soak) run(duration time.Duration) {
	faults := s.schedule()
	for cycle := 0; ; cycle++ {
		for _, f := range faults {
			if cycle > 0 && time.Since(s.started) >= duration {
				return
			}
			s.inject(f)
			s.sys.Hold(soakQuiet)
		}
		if time.Since(s.started) >= duration {
			return
		}
	}
}

// inject runs one fault, then recovers from it: every halted replicator is resumed (the halt recorded, expected or
// not), every replicator must reach the sequencer's head again, and its chain must be the sequencer's, parent by
// parent, from soakGapContext blocks before the fault to that head.
func (s *soak) inject(f *soakFault) {
	s.t.Helper()
	before := make(map[*dsl.Replicator]uint64)
	for _, n := range s.replicators() {
		before[n] = n.EL.NumberAt(rpc.LatestBlockNumber)
	}
	s.mu.Lock()
	s.fault = f
	s.mu.Unlock()
	s.t.Logf("fault: %s (%s)", f.name, f.target.Name)
	start := time.Now()
	f.inject()
	took := time.Since(start)

	recoverStart := time.Now()
	for _, n := range s.replicators() {
		s.recoverNode(f, n, before[n])
	}
	recovered := time.Since(recoverStart)

	s.mu.Lock()
	defer s.mu.Unlock()
	s.fault = nil
	fs := s.injected[f.name]
	if fs == nil {
		fs = &faultStats{target: f.target.Name}
		s.injected[f.name] = fs
	}
	fs.count++
	fs.longest = max(fs.longest, took)
	fs.slowestRecov = max(fs.slowestRecov, recovered)
}

// recoverNode resumes n if it is halted, waits until it has replicated the sequencer's head, and checks the chain
// from soakGapContext blocks before before (its head when the fault began) to there.
func (s *soak) recoverNode(f *soakFault, n *dsl.Replicator, before uint64) {
	s.t.Helper()
	ctx := s.t.Context()
	var st *api.Status
	s.sys.WaitFor(soakRecoveryTimeout, n.Name+"'s replicator_status", func(ctx context.Context) (bool, error) {
		var err error
		st, err = n.API.Status(ctx)
		return err == nil, err
	})
	if st.State == api.StateHalted {
		s.recordHalt(n, st, f)
		n.Resume()
	}
	target := s.seq.IDAt(rpc.LatestBlockNumber)
	if err := s.sys.Net.WaitFor(ctx, soakRecoveryTimeout, fmt.Sprintf("%s to replicate up to block %d after %s", n.Name, target.Number, f.name),
		func(ctx context.Context) (bool, error) {
			// Replicated, not only derived: derivation may have got there first after a long fault, but the
			// replicator must be replicating the sequencer's new blocks again.
			st, err := n.API.Status(ctx)
			if err != nil || st.State != api.StateRunning || st.LastReplicated.Number < target.Number {
				return false, err
			}
			got, err := n.EL.BlockID(ctx, rpc.BlockNumber(target.Number))
			return err == nil && got == target, nil
		}); err != nil {
		s.violate(invNoGap, fmt.Sprintf("%s did not recover from %s: %v", n.Name, f.name, err))
		s.t.FailNow() // what follows would only fail on this again
	}
	from := before - min(before, soakGapContext)
	s.count(invNoGap)
	if err := s.checkNoGap(ctx, n, max(from, 1), target.Number); err != nil {
		s.violate(invNoGap, fmt.Sprintf("%s after %s: %v", n.Name, f.name, err))
	}
}

// waitFor is System.WaitFor with soakEffectTimeout, failing the soak if the condition never holds: a fault that
// has no effect means the soak no longer tests what it says.
func (s *soak) waitFor(what string, cond func(ctx context.Context) (bool, error)) {
	s.t.Helper()
	s.sys.WaitFor(soakEffectTimeout, what, cond)
}
