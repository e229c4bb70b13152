package relay

import (
	"context"
	"errors"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ethereum-optimism/optimism/op-service/clock"
	opsigner "github.com/ethereum-optimism/optimism/op-service/signer"
	"github.com/ethereum-optimism/optimism/op-service/testlog"
	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/log"
	"github.com/op-replicator/op-replicator/driverhook"
	"github.com/op-replicator/op-replicator/plugin/internal/testkit"
	"github.com/stretchr/testify/require"
)

func TestRelaySource(t *testing.T) {
	signers := &testkit.Signers{Current: testkit.Addr(1)}
	upstream, upstreamStore := startRelay(t, driverhook.RelayConfig{MaxSubscribers: 4, MaxSubscribersPerIP: 4, SendQueue: 64})
	good := signedChain(t, 1, 5, 0)
	for _, s := range good[:3] {
		upstreamStore.Add(s, "gossip", time.Now())
	}
	forged := signedChain(t, 2, 5, 0) // same blocks, another key

	store := newTestStore(64)
	evidence := NewEvidenceLog()
	counts := &countingMetrics{}
	src := newTestClient(t, testlog.Logger(t, log.LevelDebug), upstream.wsURL(), signers, store,
		evidence, time.Second, time.Second, counts)
	ctx := context.Background()

	require.Eventually(t, func() bool { h, err := src.Head(); return err == nil && h.Number == 3 }, 5*time.Second, 10*time.Millisecond,
		"replayed blocks are received and verified")
	env, err := src.Envelope(ctx, 2)
	require.NoError(t, err)
	require.Equal(t, good[1].Envelope.ExecutionPayload.BlockHash, env.Hash())

	upstreamStore.Add(forged[3], "gossip", time.Now()) // the upstream relay passes on a block not signed by the sequencer
	upstreamStore.Add(good[4], "gossip", time.Now())
	require.Eventually(t, func() bool { h, err := src.Head(); return err == nil && h.Number == 5 }, 5*time.Second, 10*time.Millisecond)
	require.Empty(t, store.ByNumber(4), "the forged block is refused")
	require.Positive(t, counts.badSignature.Load())

	// A gap (block 4 never arrived validly) is asked for by number; the relay still only has the forged one.
	_, err = src.Envelope(ctx, 4)
	require.ErrorIs(t, err, ErrBadSignature)
	upstreamStore.Add(good[3], "gossip", time.Now()) // the same block hash: the upstream keeps its forged copy
	_, err = src.Envelope(ctx, 4)
	require.Error(t, err)

	// Another validly signed block at a held height is equivocation evidence.
	other := signedChain(t, 1, 5, 7)
	_, err = src.accept(other[1], src.clock.Now())
	require.NoError(t, err)
	evs := evidence.All()
	require.Len(t, evs, 1)
	require.Equal(t, uint64(2), evs[0].Number)
	require.NoError(t, VerifySigned(testRollup, signers, evs[0].First))
	require.NoError(t, VerifySigned(testRollup, signers, evs[0].Second))
	require.NotEqual(t, evs[0].First.Envelope.ExecutionPayload.BlockHash, evs[0].Second.Envelope.ExecutionPayload.BlockHash)

	// The latest arrived block at a height is the sequencer's current one (after an unsafe reorg): it is followed.
	env, err = src.Envelope(ctx, 2)
	require.NoError(t, err)
	require.Equal(t, other[1].Envelope.ExecutionPayload.BlockHash, env.Hash())
}

// A relay source drops signed blocks at or below the safe head (replays of settled history): never held, never
// evidence, counted. It subscribes from above the safe head, and answers for the safe head itself with ours.
func TestRelaySourceDropsReplays(t *testing.T) {
	signers := &testkit.Signers{Current: testkit.Addr(1)}
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
	store := NewStore(64, lgr, status, counts)
	evidence := NewEvidenceLog()
	src := newTestClient(t, lgr, upstream.wsURL(), signers, store, evidence, time.Second,
		time.Second, counts)
	ctx := context.Background()

	require.Eventually(t, func() bool { h, err := src.Head(); return err == nil && h.Number == 6 }, 5*time.Second, 10*time.Millisecond)
	require.Zero(t, counts.replays.Load(), "the subscription starts above the safe head")
	require.Empty(t, store.ByNumber(3))
	require.Empty(t, evidence.All())

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
			held, err := src.accept(tc.block, src.clock.Now())
			if tc.replay {
				require.ErrorIs(t, err, ErrReplay)
				require.Nil(t, held)
				require.Nil(t, store.ByHash(tc.block.Envelope.ExecutionPayload.BlockHash), "not held")
				require.Equal(t, replays+1, counts.replays.Load(), "counted")
			} else {
				require.NoError(t, err)
				require.Equal(t, replays, counts.replays.Load())
			}
			require.Len(t, evidence.All(), tc.evidence)
		})
	}

	_, err := src.Envelope(ctx, 2)
	require.ErrorIs(t, err, ethereum.NotFound, "settled heights are not asked of the relay")
	env, err := src.Envelope(ctx, 5)
	require.NoError(t, err)
	require.Equal(t, orphans[4].Envelope.ExecutionPayload.BlockHash, env.Hash(), "above it, the latest arrived")
}

// A block the relay serves by number below the heights held (we are far behind) is handed on without holding it.
func TestRelaySourceFarBehind(t *testing.T) {
	signers := &testkit.Signers{Current: testkit.Addr(1)}
	upstream, upstreamStore := startRelay(t, driverhook.RelayConfig{MaxSubscribers: 4, MaxSubscribersPerIP: 4, SendQueue: 64})
	good := signedChain(t, 1, 6, 0)
	for _, s := range good {
		upstreamStore.Add(s, "gossip", time.Now())
	}
	store := newTestStore(2)
	src := newTestClient(t, testlog.Logger(t, log.LevelInfo), upstream.wsURL(), signers, store,
		NewEvidenceLog(), time.Second, time.Second, NoopMetrics{})
	ctx := context.Background()
	require.Eventually(t, func() bool { h, err := src.Head(); return err == nil && h.Number == 6 }, 5*time.Second, 10*time.Millisecond)
	require.Empty(t, store.ByNumber(1))
	env, err := src.Envelope(ctx, 1)
	require.NoError(t, err)
	require.Equal(t, good[0].Envelope.ExecutionPayload.BlockHash, env.Hash())
	require.Empty(t, store.ByNumber(1), "not held: it would evict a higher height")
	require.Equal(t, uint64(6), store.Head())
}

// A client far behind a relay subscribes only from the heights its store can hold: a replay deeper than its window
// would be verified and held only to be evicted by the replay's later blocks, and verified again when fetched.
func TestRelaySourceSubscribesWithinWindow(t *testing.T) {
	signers := &testkit.Signers{Current: testkit.Addr(1)}
	upstream, upstreamStore := startRelay(t, driverhook.RelayConfig{MaxSubscribers: 4, MaxSubscribersPerIP: 4, SendQueue: 64})
	good := signedChain(t, 1, 20, 0)
	for _, s := range good {
		upstreamStore.Add(s, "gossip", time.Now())
	}
	store := newTestStore(4)
	added := &addedHeights{}
	require.Empty(t, store.Subscribe(0, added))
	src := newTestClient(t, testlog.Logger(t, log.LevelInfo), upstream.wsURL(), signers, store,
		NewEvidenceLog(), time.Second, time.Second, NoopMetrics{})
	require.Eventually(t, func() bool { h, err := src.Head(); return err == nil && h.Number == 20 }, 5*time.Second, 10*time.Millisecond)
	require.Equal(t, []uint64{17, 18, 19, 20}, added.heights(), "only the window's heights are replayed and held")

	// Below them, blocks are asked for by number, verified once and handed on.
	env, err := src.Envelope(context.Background(), 3)
	require.NoError(t, err)
	require.Equal(t, good[2].Envelope.ExecutionPayload.BlockHash, env.Hash())
	require.Equal(t, []uint64{17, 18, 19, 20}, added.heights())
}

// addedHeights is a store listener that records the height of every block added.
type addedHeights struct {
	mu sync.Mutex
	ns []uint64
}

func (a *addedHeights) Offer(h *Held) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.ns = append(a.ns, h.Number())
}

func (a *addedHeights) heights() []uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.ns)
}

// The relay serves the latest arrived block at a height, by number and in a subscription's replay.
func TestRelayServesLatest(t *testing.T) {
	r, store := startRelay(t, driverhook.RelayConfig{MaxSubscribers: 4, MaxSubscribersPerIP: 4, SendQueue: 16})
	for _, e := range []*opsigner.SignedExecutionPayloadEnvelope{envelopeAt(1, 0), envelopeAt(2, 0), envelopeAt(2, 1), envelopeAt(3, 0)} {
		_, _, _, err := store.Add(e, "gossip", time.Now())
		require.NoError(t, err)
	}
	client := relayClient(t, r)
	latest, err := client.EnvelopeByNumber(context.Background(), 2)
	require.NoError(t, err)
	require.Equal(t, hashOf(envelopeAt(2, 1)), hashOf(latest))
	_, err = client.EnvelopeByNumber(context.Background(), 4)
	require.ErrorIs(t, err, ethereum.NotFound)

	ch, sub, err := subscribe(t, r, 2)
	require.NoError(t, err)
	defer sub.Unsubscribe()
	require.Equal(t, hashOf(envelopeAt(2, 1)), hashOf(receive(t, ch)), "the replay has the latest block at each height")
	require.Equal(t, hashOf(envelopeAt(3, 0)), hashOf(receive(t, ch)))
}

func TestRelaySourceReconnectsAfterSilence(t *testing.T) {
	signers := &testkit.Signers{Current: testkit.Addr(1)}
	upstream, upstreamStore := startRelay(t, driverhook.RelayConfig{MaxSubscribers: 4, MaxSubscribersPerIP: 4, SendQueue: 64})
	good := signedChain(t, 1, 3, 0)
	upstreamStore.Add(good[0], "gossip", time.Now())
	counts := &countingMetrics{}
	src := newTestClient(t, testlog.Logger(t, log.LevelInfo), upstream.wsURL(), signers,
		newTestStore(64), NewEvidenceLog(), time.Second, 200*time.Millisecond, counts)
	require.Eventually(t, func() bool { return counts.unavailable.Load() > 0 }, 5*time.Second, 10*time.Millisecond,
		"a silent relay is given up on")
	upstreamStore.Add(good[1], "gossip", time.Now())
	require.Eventually(t, func() bool { h, err := src.Head(); return err == nil && h.Number == 2 },
		5*time.Second, 10*time.Millisecond, "and reconnected to")
}

// newTestClient is a started client of the relay at url, closed at the end of the test.
func newTestClient(t *testing.T, lgr log.Logger, url string, signers Signers, store *Store, evidence *EvidenceLog,
	timeout, readTimeout time.Duration, m Metricer) *Client {
	c := NewClient(lgr, ClientConfig{Name: "relay+" + url, URL: url, Rollup: testRollup, Signers: signers, Timeout: timeout,
		ReadTimeout: readTimeout}, store, evidence, m, clock.SystemClock)
	require.NoError(t, c.Start(context.Background()))
	t.Cleanup(func() { require.NoError(t, c.Stop(context.Background())) })
	return c
}

// Before its first block the client has no head: while its first subscription attempt lasts that is no failure
// (ErrNoBlockYet: a node starting up asks before the relay could answer); once the attempt failed, it is
// (ErrUnavailable).
func TestClientHeadBeforeFirstBlock(t *testing.T) {
	// A relay that takes the connection and never answers: the first attempt lasts until its timeout.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { _ = conn.Close() })
		}
	}()
	c := NewClient(testlog.Logger(t, log.LevelDebug), ClientConfig{Name: "silent", URL: "ws://" + ln.Addr().String(),
		Rollup: testRollup, Signers: &testkit.Signers{Current: testkit.Addr(1)}, Timeout: time.Second,
		ReadTimeout: time.Second}, newTestStore(8), NewEvidenceLog(), NoopMetrics{}, clock.SystemClock)
	_, err = c.Head()
	require.ErrorIs(t, err, ErrNoBlockYet, "not started yet")
	require.NoError(t, c.Start(context.Background()))
	t.Cleanup(func() { require.NoError(t, c.Stop(context.Background())) })
	_, err = c.Head()
	require.ErrorIs(t, err, ErrNoBlockYet, "still dialing")
	_, err = c.Envelope(context.Background(), 1)
	require.ErrorIs(t, err, ErrNoBlockYet, "a block asked for while still dialing")
	require.Eventually(t, func() bool { _, err := c.Head(); return errors.Is(err, ErrUnavailable) }, 5*time.Second,
		10*time.Millisecond, "the first attempt failed")
	_, err = c.Head()
	require.NotErrorIs(t, err, ErrNoBlockYet)
	_, err = c.Envelope(context.Background(), 1)
	require.ErrorIs(t, err, ErrUnavailable, "a block asked for once the first attempt failed")
	require.NotErrorIs(t, err, ErrNoBlockYet)
}
