package plugin

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/log"
	"github.com/stretchr/testify/require"

	"github.com/ethereum-optimism/optimism/op-service/eth"
	opsigner "github.com/ethereum-optimism/optimism/op-service/signer"
	"github.com/ethereum-optimism/optimism/op-service/testlog"

	"github.com/op-replicator/op-replicator/driverhook"
	"github.com/op-replicator/op-replicator/plugin/api"
)

func TestMultiSourceFailover(t *testing.T) {
	blocks := buildChain(t, testRollupConfig(), 6, 0, 0)
	down, up := newFakeSource(blocks), newFakeSource(blocks)
	down.set(blocks, 6, errors.New("connection refused"))
	up.set(blocks, 5, nil)
	m := newMultiSource([]Source{down, up}, NoopMetrics{}, time.Now)
	defer m.Close()
	ctx := context.Background()

	head, err := m.Head(ctx)
	require.NoError(t, err, "one source failing is not a failure")
	require.Equal(t, blocks[4].ref.ID(), head)
	env, err := m.Payload(ctx, 3)
	require.NoError(t, err)
	require.Equal(t, blocks[2].ref.Hash, env.ExecutionPayload.BlockHash)
	_, err = m.Payload(ctx, 6)
	require.ErrorIs(t, err, ethereum.NotFound, "the healthy source does not have it and the other one failed")

	// No source was healthy yet when Head asked: it returned with the first answer, and the failing source's went on
	// in the background. Counted once it is recorded (with the failure at block 6).
	require.Eventually(t, func() bool { return m.Health()[0].Errors == 2 }, 5*time.Second, time.Millisecond)
	calls := down.calls
	_, err = m.Payload(ctx, 4)
	require.NoError(t, err)
	require.Equal(t, calls, down.calls, "a failing source is asked after the healthy ones")

	health := m.Health()
	require.Len(t, health, 2)
	require.Positive(t, health[0].Errors)
	require.Contains(t, health[0].LastError, "connection refused")
	require.Equal(t, blocks[4].ref.ID(), health[1].Head)
	require.NotNil(t, health[1].LastOK)

	up.set(blocks, 5, errors.New("down too"))
	_, err = m.Head(ctx)
	require.Error(t, err)
}

// signedChain returns n blocks with valid header hashes, each signed by key (not a linked chain: relays do not
// check linkage, the replicator's verifier does).
func signedChain(t *testing.T, key byte, n int, variant byte) []*opsigner.SignedExecutionPayloadEnvelope {
	cfg := testRollupConfig()
	beacon := common.Hash{0xbe}
	var out []*opsigner.SignedExecutionPayloadEnvelope
	for _, b := range buildChain(t, cfg, uint64(n), variant, 1) {
		p := *b.env.ExecutionPayload
		out = append(out, signBlock(t, cfg, testKey(key), &eth.ExecutionPayloadEnvelope{ExecutionPayload: &p, ParentBeaconBlockRoot: &beacon}))
	}
	return out
}

func TestRelaySource(t *testing.T) {
	cfg := testRollupConfig()
	signers := &fakeSigners{current: crypto.PubkeyToAddress(testKey(1).PublicKey)}
	upstream, upstreamStore := startRelay(t, driverhook.RelayConfig{MaxSubscribers: 4, MaxSubscribersPerIP: 4, SendQueue: 64})
	good := signedChain(t, 1, 5, 0)
	for _, s := range good[:3] {
		upstreamStore.Add(s, "gossip", time.Now())
	}
	forged := signedChain(t, 2, 5, 0) // same blocks, another key

	store := newEnvelopeStore(64)
	evidence := &evidenceLog{}
	counts := &countingMetrics{}
	src := newRelaySource(testlog.Logger(t, log.LevelDebug), driverhook.RelayScheme+upstream.wsURL(), cfg, signers, store,
		evidence.record, time.Second, time.Second, counts)
	defer src.Close()
	ctx := context.Background()

	require.Eventually(t, func() bool { h, err := src.Head(ctx); return err == nil && h.Number == 3 }, 5*time.Second, 10*time.Millisecond,
		"replayed blocks are received and verified")
	env, err := src.Payload(ctx, 2)
	require.NoError(t, err)
	require.Equal(t, good[1].Envelope.ExecutionPayload.BlockHash, env.ExecutionPayload.BlockHash)

	upstreamStore.Add(forged[3], "gossip", time.Now()) // the upstream relay passes on a block not signed by the sequencer
	upstreamStore.Add(good[4], "gossip", time.Now())
	require.Eventually(t, func() bool { h, err := src.Head(ctx); return err == nil && h.Number == 5 }, 5*time.Second, 10*time.Millisecond)
	require.Empty(t, store.ByNumber(4), "the forged block is refused")
	require.Positive(t, counts.badSignature.Load())

	// A gap (block 4 never arrived validly) is asked for by number; the relay still only has the forged one.
	_, err = src.Payload(ctx, 4)
	require.ErrorIs(t, err, errBadSignature)
	upstreamStore.Add(good[3], "gossip", time.Now()) // the same block hash: the upstream keeps its forged copy
	_, err = src.Payload(ctx, 4)
	require.Error(t, err)

	// Another validly signed block at a held height is equivocation evidence.
	other := signedChain(t, 1, 5, 7)
	_, err = src.accept(other[1])
	require.NoError(t, err)
	evs := evidence.all()
	require.Len(t, evs, 1)
	require.Equal(t, uint64(2), evs[0].Number)
	require.NoError(t, verifySigned(cfg, signers, evs[0].First))
	require.NoError(t, verifySigned(cfg, signers, evs[0].Second))
	require.NotEqual(t, evs[0].First.Envelope.ExecutionPayload.BlockHash, evs[0].Second.Envelope.ExecutionPayload.BlockHash)

	// The latest arrived block at a height is the sequencer's current one (after an unsafe reorg): it is followed.
	env, err = src.Payload(ctx, 2)
	require.NoError(t, err)
	require.Equal(t, other[1].Envelope.ExecutionPayload.BlockHash, env.ExecutionPayload.BlockHash)
}

// A relay source drops signed blocks at or below the safe head (replays of settled history): never held, never
// evidence, counted. It subscribes from above the safe head, and answers for the safe head itself with ours.
func TestRelaySourceDropsReplays(t *testing.T) {
	cfg := testRollupConfig()
	signers := &fakeSigners{current: crypto.PubkeyToAddress(testKey(1).PublicKey)}
	upstream, upstreamStore := startRelay(t, driverhook.RelayConfig{MaxSubscribers: 4, MaxSubscribersPerIP: 4, SendQueue: 64})
	good, orphans := signedChain(t, 1, 6, 0), signedChain(t, 1, 6, 5)
	for _, s := range good {
		upstreamStore.Add(s, "gossip", time.Now())
	}
	for _, s := range orphans[:3] { // an old unsafe reorg the sequencer really signed, long since settled
		upstreamStore.Add(s, "gossip", time.Now())
	}

	status, counts := &safeStatus{}, &replayMetrics{}
	status.safe.Store(3)
	lgr := testlog.Logger(t, log.LevelDebug)
	store := newEnvelopeStore(64).dropSettled(lgr, status, counts)
	evidence := &evidenceLog{}
	src := newRelaySource(lgr, driverhook.RelayScheme+upstream.wsURL(), cfg, signers, store, evidence.record, time.Second,
		time.Second, counts)
	defer src.Close()
	ctx := context.Background()

	require.Eventually(t, func() bool { h, err := src.Head(ctx); return err == nil && h.Number == 6 }, 5*time.Second, 10*time.Millisecond)
	require.Zero(t, counts.replays.Load(), "the subscription starts above the safe head")
	require.Empty(t, store.ByNumber(3))
	require.Empty(t, evidence.all())

	for _, tc := range []struct {
		name     string
		block    *opsigner.SignedExecutionPayloadEnvelope
		replay   bool
		evidence int
	}{
		{name: "below the safe head", block: good[1], replay: true},
		{name: "the other of the old pair", block: orphans[1], replay: true},
		{name: "at the safe head", block: good[2], replay: true},
		{name: "the other at the safe head", block: orphans[2], replay: true},
		{name: "a pair above the safe head is evidence", block: orphans[4], evidence: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			replays := counts.replays.Load()
			held, err := src.accept(tc.block)
			if tc.replay {
				require.ErrorIs(t, err, errReplay)
				require.Nil(t, held)
				require.Nil(t, store.ByHash(tc.block.Envelope.ExecutionPayload.BlockHash), "not held")
				require.Equal(t, replays+1, counts.replays.Load(), "counted")
			} else {
				require.NoError(t, err)
				require.Equal(t, replays, counts.replays.Load())
			}
			require.Len(t, evidence.all(), tc.evidence)
		})
	}

	_, err := src.Payload(ctx, 2)
	require.ErrorIs(t, err, ethereum.NotFound, "settled heights are not asked of the relay")
	env, err := src.Payload(ctx, 5)
	require.NoError(t, err)
	require.Equal(t, orphans[4].Envelope.ExecutionPayload.BlockHash, env.ExecutionPayload.BlockHash, "above it, the latest arrived")
}

// A block the relay serves by number below the heights held (we are far behind) is handed on without holding it.
func TestRelaySourceFarBehind(t *testing.T) {
	cfg := testRollupConfig()
	signers := &fakeSigners{current: crypto.PubkeyToAddress(testKey(1).PublicKey)}
	upstream, upstreamStore := startRelay(t, driverhook.RelayConfig{MaxSubscribers: 4, MaxSubscribersPerIP: 4, SendQueue: 64})
	good := signedChain(t, 1, 6, 0)
	for _, s := range good {
		upstreamStore.Add(s, "gossip", time.Now())
	}
	store := newEnvelopeStore(2)
	src := newRelaySource(testlog.Logger(t, log.LevelInfo), driverhook.RelayScheme+upstream.wsURL(), cfg, signers, store,
		(&evidenceLog{}).record, time.Second, time.Second, NoopMetrics{})
	defer src.Close()
	ctx := context.Background()
	require.Eventually(t, func() bool { h, err := src.Head(ctx); return err == nil && h.Number == 6 }, 5*time.Second, 10*time.Millisecond)
	require.Empty(t, store.ByNumber(1))
	env, err := src.Payload(ctx, 1)
	require.NoError(t, err)
	require.Equal(t, good[0].Envelope.ExecutionPayload.BlockHash, env.ExecutionPayload.BlockHash)
	require.Empty(t, store.ByNumber(1), "not held: it would evict a higher height")
	require.Equal(t, uint64(6), store.Head())
}

// The relay serves the latest arrived block at a height, by number and in a subscription's replay.
func TestRelayServesLatest(t *testing.T) {
	r, store := startRelay(t, driverhook.RelayConfig{MaxSubscribers: 4, MaxSubscribersPerIP: 4, SendQueue: 16})
	for _, e := range []*opsigner.SignedExecutionPayloadEnvelope{envelopeAt(1, 0), envelopeAt(2, 0), envelopeAt(2, 1), envelopeAt(3, 0)} {
		_, _, _, err := store.Add(e, "gossip", time.Now())
		require.NoError(t, err)
	}
	api := &RelayAPI{r: r}
	latest, err := api.EnvelopeByNumber(2)
	require.NoError(t, err)
	require.Equal(t, hashOf(envelopeAt(2, 1)), hashOf(latest))
	none, err := api.EnvelopeByNumber(4)
	require.NoError(t, err)
	require.Nil(t, none)

	ch, sub, err := subscribe(t, r, 2)
	require.NoError(t, err)
	defer sub.Unsubscribe()
	require.Equal(t, hashOf(envelopeAt(2, 1)), hashOf(receive(t, ch)), "the replay has the latest block at each height")
	require.Equal(t, hashOf(envelopeAt(3, 0)), hashOf(receive(t, ch)))
}

// Through gossip too: two signed blocks at a height at or below the safe head are a replay, dropped and counted,
// and never halt; above the safe head they halt with evidence.
func TestGossipReplayNeverHalts(t *testing.T) {
	for _, tc := range []struct {
		name   string
		height uint64
		halts  bool
	}{
		{name: "below the safe head", height: 2},
		{name: "at the safe head", height: 3},
		{name: "above the safe head", height: 4, halts: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, driverhook.HaltManual, buildChain(t, testRollupConfig(), 4, 0, 0))
			m := &replayMetrics{}
			h.svc.store, h.svc.evidence = newEnvelopeStore(16).dropSettled(h.rep.log, h.engine, m), h.rep.evidence
			h.rep.evidence.wake = h.rep.watch.poke
			h.round()
			h.engine.setSafe(3)
			a, b := signedChain(t, 1, 4, 0), signedChain(t, 1, 4, 5)
			h.svc.OnSignedUnsafeL2Payload(context.Background(), a[tc.height-1])
			h.svc.OnSignedUnsafeL2Payload(context.Background(), b[tc.height-1])
			h.round()
			evs := h.svc.EquivocationEvidence()
			if tc.halts {
				h.requireHalted(api.ReasonEquivocation)
				require.Len(t, evs, 1)
				require.Zero(t, m.replays.Load())
				return
			}
			h.requireRunning()
			require.Empty(t, evs)
			require.Equal(t, int64(2), m.replays.Load())
			require.Empty(t, h.svc.store.ByNumber(tc.height), "not held")
		})
	}
}

func TestRelaySourceReconnectsAfterSilence(t *testing.T) {
	cfg := testRollupConfig()
	signers := &fakeSigners{current: crypto.PubkeyToAddress(testKey(1).PublicKey)}
	upstream, upstreamStore := startRelay(t, driverhook.RelayConfig{MaxSubscribers: 4, MaxSubscribersPerIP: 4, SendQueue: 64})
	good := signedChain(t, 1, 3, 0)
	upstreamStore.Add(good[0], "gossip", time.Now())
	counts := &countingMetrics{}
	src := newRelaySource(testlog.Logger(t, log.LevelInfo), driverhook.RelayScheme+upstream.wsURL(), cfg, signers,
		newEnvelopeStore(64), (&evidenceLog{}).record, time.Second, 200*time.Millisecond, counts)
	defer src.Close()
	require.Eventually(t, func() bool { return counts.source.Load() > 0 }, 5*time.Second, 10*time.Millisecond,
		"a silent relay is given up on")
	upstreamStore.Add(good[1], "gossip", time.Now())
	require.Eventually(t, func() bool { h, err := src.Head(context.Background()); return err == nil && h.Number == 2 },
		5*time.Second, 10*time.Millisecond, "and reconnected to")
}

func TestEquivocationHaltsWithEvidence(t *testing.T) {
	blocks := buildChain(t, testRollupConfig(), 4, 0, 0)
	h := newHarness(t, driverhook.HaltManual, blocks)
	h.svc.store, h.svc.evidence = newEnvelopeStore(16), h.rep.evidence
	h.rep.evidence.wake = h.rep.watch.poke
	h.round()
	a, b := signedChain(t, 1, 3, 0), signedChain(t, 1, 3, 5)
	h.svc.OnSignedUnsafeL2Payload(context.Background(), a[2])
	h.svc.OnSignedUnsafeL2Payload(context.Background(), b[2])
	h.round()
	h.requireHalted(api.ReasonEquivocation)
	evs := h.svc.EquivocationEvidence()
	require.Len(t, evs, 1)
	require.Equal(t, a[2], evs[0].First)
	require.Equal(t, b[2], evs[0].Second)

	done := make(chan error, 1)
	h.rep.handle(context.Background(), request{done: done})
	require.NoError(t, <-done)
	h.round()
	h.requireRunning() // evidence halts once; it stays available
	require.Len(t, h.svc.EquivocationEvidence(), 1)
}

// A disagreement found in the same round as equivocation evidence arrives (e.g. the source's block at our height
// is the other signed one) is reported as the equivocation that explains it.
func TestEquivocationExplainsDisagreement(t *testing.T) {
	cfg := testRollupConfig()
	h := newHarness(t, driverhook.HaltManual, buildChain(t, cfg, 4, 0, 0))
	h.engine.setChain(buildChain(t, cfg, 3, 1, 2)) // the source disagrees with our head
	a, b := signedChain(t, 1, 2, 0), signedChain(t, 1, 2, 5)
	store := newEnvelopeStore(8)
	held, _, _, _ := store.Add(a[1], "relay-a", time.Now())
	other, _, _, _ := store.Add(b[1], "relay-b", time.Now())
	h.rep.source = &hookSource{Source: h.source, onPayload: func() { h.rep.evidence.record(held, other) }}
	h.round()
	h.requireHalted(api.ReasonEquivocation)
}

// hookSource calls onPayload as it serves a block: something that happens while the block is fetched.
type hookSource struct {
	Source
	onPayload func()
}

func (s *hookSource) Payload(ctx context.Context, n uint64) (*eth.ExecutionPayloadEnvelope, error) {
	s.onPayload()
	return s.Source.Payload(ctx, n)
}

// A request the caller cancels (a round ending with blocks still fetched ahead) is no failure of the source, and
// is not passed on to the other sources.
func TestCancelledRequestIsNoSourceFailure(t *testing.T) {
	blocks := buildChain(t, testRollupConfig(), 4, 0, 0)
	a, b := newFakeSource(blocks), newFakeSource(blocks)
	a.slow = true
	m := newMultiSource([]Source{a, b}, NoopMetrics{}, time.Now)
	defer m.Close()
	ctx, cancel := context.WithCancel(context.Background())
	go cancel()
	_, err := m.Payload(ctx, 2)
	require.ErrorIs(t, err, context.Canceled)
	for _, h := range m.Health() {
		require.Zero(t, h.Errors, "%s counted a failure", h.Name)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	require.Zero(t, b.calls, "the request went on to the next source")
}
