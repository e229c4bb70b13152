//go:build soak

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ethereum/go-ethereum/rpc"

	"github.com/ethereum-optimism/optimism/op-service/eth"

	"github.com/op-replicator/op-replicator/e2e/devnet"
	"github.com/op-replicator/op-replicator/e2e/dsl"
	"github.com/op-replicator/op-replicator/plugin/api"
)

// the replicator has halted on one; the halt is held for soakHaltHeld (the checks watch op-geth meanwhile), and
// ended by the recovery that follows every fault.
func (s *soak) tamperSource() {
	head := s.seq.NumberAt(rpc.LatestBlockNumber)
	s.proxy.TamperFrom(head + 2)
	defer s.proxy.StopTampering()
	s.waitFor("the replicator to halt on a tampered block", func(ctx context.Context) (bool, error) {
		st, err := s.rep.API.Status(ctx)
		return err == nil && st.State == api.StateHalted, err
	})
	s.sys.Hold(soakHaltHeld)
}

// streamHostile has the hostile relay stream the sequencer's new blocks, changed by misbehave, until it has sent
// three; then it is silent again, and the replicator must have refused every block it sent
// (errors_total{kind="bad-signature"}).
func (s *soak) streamHostile(what string, misbehave func(f *fakeRelay)) {
	// No series before the first refusal.
	before, _ := s.rep.MetricValue(s.t.Context(), dsl.MetricErrors, "kind", dsl.ErrorKindBadSignature)
	sent := s.hostile.blocksSent()
	s.hostile.set(func(f *fakeRelay) {
		misbehave(f)
		f.silent = false
	})
	s.waitFor("the hostile relay to send three "+what+" blocks", func(context.Context) (bool, error) {
		return s.hostile.blocksSent() >= sent+3, nil
	})
	s.hostile.set(func(f *fakeRelay) { f.key, f.alter, f.silent = s.forger, nil, true })
	sent = s.hostile.blocksSent() - sent
	s.waitFor(fmt.Sprintf("the replicator to refuse the %d %s blocks", sent, what),
		s.rep.MetricIs(dsl.AtLeast(before+float64(sent)), dsl.MetricErrors, "kind", dsl.ErrorKindBadSignature))
	s.addTraffic(fmt.Sprintf("hostile relay, %s: %d blocks sent, all refused", what, sent))
}

// replayHistory has the hostile relay replay history the sequencer really signed, below the replicator's safe head:
// a pair of different blocks at one height (as an old unsafe reorg would have left) and replayedBlocks others. They
// must be dropped as replays, never taken as equivocation evidence.
func (s *soak) replayHistory() {
	ctx := s.t.Context()
	s.waitFor("the replicator to subscribe to the hostile relay", func(context.Context) (bool, error) {
		return s.hostile.subscribers() > 0, nil
	})
	safe := s.rep.EL.IDAt(rpc.SafeBlockNumber)
	require.Greater(s.t, safe.Number, uint64(soakGapContext), "the replicator's safe head is too low to replay below it")
	top := safe.Number - 20 // well below the safe head, which only moves up
	s.hostile.set(func(f *fakeRelay) { f.key = s.sys.Net.Keys.SequencerP2P })
	genuine, err := s.hostile.signed(ctx, top)
	require.NoError(s.t, err)
	msgs := []any{genuine, oldVariant(s.t, s.hostile, top, 0)}
	for i := range replayedBlocks {
		msgs = append(msgs, oldVariant(s.t, s.hostile, 1+uint64(i)%top, i+1))
	}
	s.hostile.set(func(f *fakeRelay) { f.key = s.forger })

	before, _ := s.rep.MetricValue(ctx, dsl.MetricReplaysDropped)
	require.Positive(s.t, s.hostile.push(msgs...), "the hostile relay lost its subscriber")
	s.waitFor("the replays to be dropped", s.rep.MetricIs(dsl.AtLeast(before+float64(len(msgs))), dsl.MetricReplaysDropped))
	evidence := s.rep.EquivocationEvidence()
	s.count(invHaltsExpected)
	if len(evidence) > 0 {
		first, _ := json.Marshal(evidence[0])
		s.violate(invHaltsExpected, fmt.Sprintf("replayed history was taken as equivocation evidence: %s", first))
	}
	s.addTraffic(fmt.Sprintf("hostile relay, replayed: %d signed blocks at or below height %d (safe head %d), a conflicting pair among them", len(msgs), top, safe.Number))
}

// pushOversized has the hostile relay send a block larger than a replicator reads of one websocket message. The
// replicator drops the connection (nothing is parsed) and subscribes again.
func (s *soak) pushOversized() {
	if s.oversized == nil {
		s.oversized, s.oversizedSize = s.buildOversized()
	}
	s.waitFor("the replicator to subscribe to the hostile relay", func(context.Context) (bool, error) {
		return s.hostile.subscribers() > 0, nil
	})
	require.Positive(s.t, s.hostile.push(s.oversized), "the hostile relay lost its subscriber")
	s.waitFor("the replicator to drop its connection to the hostile relay", func(context.Context) (bool, error) {
		return s.hostile.subscribers() == 0, nil
	})
	s.waitFor("the replicator to subscribe to the hostile relay again", func(context.Context) (bool, error) {
		return s.hostile.subscribers() > 0, nil
	})
	s.addTraffic(fmt.Sprintf("hostile relay, oversized: one block of %.1f MiB", float64(s.oversizedSize)/(1<<20)))
}

// buildOversized returns the sequencer's latest block with a junk transaction of oversizedPadding bytes, its hash
// recomputed, signed with the forger's key, and the size of its JSON.
func (s *soak) buildOversized() (any, int) {
	ctx := s.t.Context()
	head := s.seq.NumberAt(rpc.LatestBlockNumber)
	env, err := s.hostile.l2.PayloadByNumber(ctx, head)
	require.NoError(s.t, err)
	junk := make(eth.Data, oversizedPadding)
	for i := range junk {
		junk[i] = byte(i)
	}
	env.ExecutionPayload.Transactions = append(env.ExecutionPayload.Transactions, junk)
	env.ExecutionPayload.BlockHash, _ = env.CheckBlockHash()
	signed, err := s.hostile.sign(ctx, env)
	require.NoError(s.t, err)
	msg, err := json.Marshal(signed)
	require.NoError(s.t, err)
	return json.RawMessage(msg), len(msg)
}

// attackSentry runs the hostile client of TestRelayWithstandsHostileClient against the sentry's relay, which the
// downstream replicator follows, for 20 s.
func (s *soak) attackSentry() {
	const window = 20 * time.Second
	ctx := s.t.Context()
	h, err := devnet.StartHostileClient(ctx, "http://127.0.0.1:"+strconv.Itoa(s.sentryPort), hostileAttack)
	require.NoError(s.t, err)
	defer h.Stop()
	var maxLag uint64
	end := time.Now().Add(window)
	for time.Now().Before(end) {
		s.sys.Hold(lagSamplePeriod)
		if lag, err := blocksBehind(ctx, s.down.EL.EL, s.seq.EL); err == nil {
			maxLag = max(maxLag, lag)
		}
	}
	st := h.Stats()
	s.addTraffic(fmt.Sprintf("hostile client, %s: %s; downstream at most %d blocks behind the sequencer meanwhile", window, st, maxLag))
	require.NotZero(s.t, st.TooMany, "the sentry's relay refused nothing with HTTP 429")
}

func (s *soak) addTraffic(line string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.traffic = append(s.traffic, line)
}
