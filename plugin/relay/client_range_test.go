package relay

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ethereum-optimism/optimism/op-service/testlog"
	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/log"
	"github.com/ethereum/go-ethereum/rpc"
	"github.com/stretchr/testify/require"

	"github.com/op-replicator/op-replicator/driverhook"
	"github.com/op-replicator/op-replicator/plugin/api"
	"github.com/op-replicator/op-replicator/plugin/internal/testkit"
)

// relay_envelopesByRange answers the latest block at consecutive heights from the one asked, ending before the first
// height not held, after MaxRange blocks, and before the message size limit; a first block above the limit is
// refused, as by number.
func TestRelayServesRanges(t *testing.T) {
	r, store := startRelay(t, driverhook.RelayConfig{MaxSubscribers: 4, MaxSubscribersPerIP: 4, SendQueue: 16})
	chain := signedChain(t, 1, MaxRange+20, 0)
	for _, s := range chain {
		_, _, _, err := store.Add(s, "gossip", time.Now())
		require.NoError(t, err)
	}
	other := signedChain(t, 1, 3, 1)[2] // another block at height 3, arrived last
	_, _, _, err := store.Add(other, "gossip", time.Now())
	require.NoError(t, err)
	client := relayClient(t, r)
	heights := func(msgs []json.RawMessage) (hashes []string) {
		for _, m := range msgs {
			signed, err := DecodeEnvelope(m)
			require.NoError(t, err)
			hashes = append(hashes, signed.Envelope.ExecutionPayload.BlockHash.Hex())
		}
		return hashes
	}
	hex := func(ss ...int) (out []string) {
		for _, i := range ss {
			out = append(out, chain[i-1].Envelope.ExecutionPayload.BlockHash.Hex())
		}
		return out
	}

	got, err := client.EnvelopesByRangeRaw(context.Background(), 2, 3)
	require.NoError(t, err)
	require.Equal(t, []string{hex(2)[0], other.Envelope.ExecutionPayload.BlockHash.Hex(), hex(4)[0]}, heights(got),
		"consecutive heights, the latest arrived at each")

	got, err = client.EnvelopesByRangeRaw(context.Background(), 1, 1000)
	require.NoError(t, err)
	require.Len(t, got, MaxRange, "at most MaxRange blocks")

	got, err = client.EnvelopesByRangeRaw(context.Background(), MaxRange+18, 10)
	require.NoError(t, err)
	require.Equal(t, hex(MaxRange+18, MaxRange+19, MaxRange+20), heights(got), "ends before the first height not held")

	got, err = client.EnvelopesByRangeRaw(context.Background(), MaxRange+21, 10)
	require.NoError(t, err)
	require.Empty(t, got, "nothing held at the first height")

	// A relay whose message size limit holds two blocks and a half.
	one, err := store.Latest(10).JSON()
	require.NoError(t, err)
	small, _ := startRelayOn(t, driverhook.RelayConfig{MaxSubscribers: 4, MaxSubscribersPerIP: 4, SendQueue: 16,
		MaxMessageSize: 2*len(one) + len(one)/2}, store, NoopMetrics{})
	got, err = relayClient(t, small).EnvelopesByRangeRaw(context.Background(), 10, 10)
	require.NoError(t, err)
	require.Equal(t, hex(10, 11), heights(got), "ends before the message size limit")
	tiny, _ := startRelayOn(t, driverhook.RelayConfig{MaxSubscribers: 4, MaxSubscribersPerIP: 4, SendQueue: 16,
		MaxMessageSize: len(one) / 2}, store, NoopMetrics{})
	_, err = relayClient(t, tiny).EnvelopesByRangeRaw(context.Background(), 10, 10)
	require.ErrorContains(t, err, "the limit is", "a first block above the limit is refused")
}

// requestCounts counts a relay client's requests by method.
type requestCounts struct {
	countingMetrics
	mu sync.Mutex
	n  map[string]int
}

func (c *requestCounts) RecordSourceRequest(method string, _ time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = make(map[string]int)
	}
	c.n[method]++
}

func (c *requestCounts) count(method string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[method]
}

// askInOrder asks the client for blocks from..to as the replicator's prefetcher does: in order, with
// source.MaxInFlight (16) asks at once, and returns what each got.
func askInOrder(c *Client, from, to uint64) (map[uint64]*Held, map[uint64]error) {
	var mu sync.Mutex
	got, errs := make(map[uint64]*Held), make(map[uint64]error)
	slots := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for n := from; n <= to; n++ {
		slots <- struct{}{}
		wg.Add(1)
		go func(n uint64) {
			defer wg.Done()
			defer func() { <-slots }()
			held, err := c.Envelope(context.Background(), n)
			mu.Lock()
			defer mu.Unlock()
			got[n], errs[n] = held, err
		}(n)
	}
	wg.Wait()
	return got, errs
}

// A follower far behind its relay fetches the blocks below what its subscription replays by range: many blocks a
// call (each call takes one token of the relay's per-client rate, which paced one-block-a-call catch-ups at ~55
// blocks/s), each verified once. A block in a range that is not the sequencer's is refused, and only it.
func TestRelaySourceFetchesBelowWindowByRange(t *testing.T) {
	signers := &testkit.Signers{Current: testkit.Addr(1)}
	upstream, upstreamStore := startRelay(t, driverhook.RelayConfig{MaxSubscribers: 4, MaxSubscribersPerIP: 4, SendQueue: 128})
	good := signedChain(t, 1, 100, 0)
	forged := signedChain(t, 2, 100, 0)[39] // block 40, signed by another key
	for i, s := range good {
		if i == 39 {
			s = forged
		}
		_, _, _, err := upstreamStore.Add(s, "gossip", time.Now())
		require.NoError(t, err)
	}
	store := newTestStore(4)
	added := &addedHeights{}
	require.Empty(t, store.Subscribe(0, added))
	m := &requestCounts{}
	src := newTestClient(t, testlog.Logger(t, log.LevelInfo), upstream.wsURL(), signers, store, NewEvidenceLog(),
		5*time.Second, 5*time.Second, m)
	require.Eventually(t, func() bool { h, err := src.Head(); return err == nil && h.Number == 100 }, 5*time.Second, 10*time.Millisecond)

	got, errs := askInOrder(src, 1, 96)
	for n := uint64(1); n <= 96; n++ {
		if n == 40 {
			require.ErrorIs(t, errs[n], ErrBadSignature, "the forged block is refused")
			continue
		}
		require.NoError(t, errs[n], "block %d", n)
		require.Equal(t, good[n-1].Envelope.ExecutionPayload.BlockHash, got[n].Hash(), "block %d", n)
	}
	// Refused where a range met it (the range ends there), and again when asked for itself: no other block is.
	require.Contains(t, []int64{1, 2}, m.badSignature.Load(), "only the forged block is refused")
	require.Zero(t, m.count("relay_envelope"), "no block is asked for alone")
	ranges := m.count("relay_envelopes")
	t.Logf("%d range calls", ranges)
	require.LessOrEqual(t, ranges, 96/8, "96 blocks in at most 12 calls, not one a block (%d calls)", ranges)
	require.Equal(t, []uint64{97, 98, 99, 100}, added.heights(), "blocks below the window are not held")

	// Nothing is kept once asked for: asked again, a block is fetched again.
	src.rangeMu.Lock()
	require.Empty(t, src.ahead)
	src.rangeMu.Unlock()
}

// oldRelayAPI is a relay from before relay_envelopesByRange.
type oldRelayAPI struct{ a *relayAPI }

func (o oldRelayAPI) Envelopes(ctx context.Context, from hexutil.Uint64) (*rpc.Subscription, error) {
	return o.a.Envelopes(ctx, from)
}
func (o oldRelayAPI) EnvelopeByNumber(n hexutil.Uint64) (json.RawMessage, error) {
	return o.a.EnvelopeByNumber(n)
}
func (o oldRelayAPI) Head() hexutil.Uint64 { return o.a.Head() }

// A follower of a relay that does not serve ranges fetches one block a call, as before.
func TestRelaySourceFetchesByNumberFromAnOlderRelay(t *testing.T) {
	signers := &testkit.Signers{Current: testkit.Addr(1)}
	r, upstreamStore := startRelay(t, driverhook.RelayConfig{MaxSubscribers: 4, MaxSubscribersPerIP: 4, SendQueue: 64})
	good := signedChain(t, 1, 20, 0)
	for _, s := range good {
		_, _, _, err := upstreamStore.Add(s, "gossip", time.Now())
		require.NoError(t, err)
	}
	old := rpc.NewServer()
	require.NoError(t, old.RegisterName(api.RelayNamespace, oldRelayAPI{&relayAPI{r: r}}))
	srv := httptest.NewServer(old.WebsocketHandler(nil))
	t.Cleanup(srv.Close)
	t.Cleanup(old.Stop)

	m := &requestCounts{}
	src := newTestClient(t, testlog.Logger(t, log.LevelInfo), "ws"+strings.TrimPrefix(srv.URL, "http"), signers,
		newTestStore(4), NewEvidenceLog(), 5*time.Second, 5*time.Second, m)
	require.Eventually(t, func() bool { h, err := src.Head(); return err == nil && h.Number == 20 }, 5*time.Second, 10*time.Millisecond)
	got, errs := askInOrder(src, 1, 16)
	for n := uint64(1); n <= 16; n++ {
		require.NoError(t, errs[n], "block %d", n)
		require.Equal(t, good[n-1].Envelope.ExecutionPayload.BlockHash, got[n].Hash(), "block %d", n)
	}
	require.LessOrEqual(t, m.count("relay_envelopes"), 16, "asked for a range until it was not served")
	require.True(t, src.noRange.Load())
	before := m.count("relay_envelopes")
	_, err := src.Envelope(context.Background(), 1)
	require.NoError(t, err)
	require.Equal(t, before, m.count("relay_envelopes"), "not asked again on this connection")
	_, err = src.Envelope(context.Background(), 21)
	require.ErrorIs(t, err, ethereum.NotFound)
}
