package relay

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/log"
	"github.com/ethereum/go-ethereum/rpc"
	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"

	"github.com/ethereum-optimism/optimism/op-service/eth"
	opsigner "github.com/ethereum-optimism/optimism/op-service/signer"
	"github.com/ethereum-optimism/optimism/op-service/testlog"

	"github.com/op-replicator/op-replicator/driverhook"
	"github.com/op-replicator/op-replicator/plugin/api"
)

func startRelay(t *testing.T, cfg driverhook.RelayConfig) (*Server, *Store) {
	t.Helper()
	return startRelayMetered(t, cfg, NoopMetrics{})
}

// startRelayMetered starts a relay as startRelay does, recording on m.
func startRelayMetered(t *testing.T, cfg driverhook.RelayConfig, m Metricer) (*Server, *Store) {
	t.Helper()
	return startRelayOn(t, cfg, nil, m)
}

// startRelayOn starts a relay as startRelayMetered does, serving store (nil: a new store of the window's heights).
func startRelayOn(t *testing.T, cfg driverhook.RelayConfig, store *Store, m Metricer) (*Server, *Store) {
	t.Helper()
	cfg.Enabled, cfg.Addr, cfg.Port = true, "127.0.0.1", 0
	if cfg.Window == 0 {
		cfg.Window = 1024
	}
	if cfg.MaxMessageSize == 0 {
		cfg.MaxMessageSize = 10 << 20
	}
	if cfg.MaxConnsPerClient == 0 {
		cfg.MaxConnsPerClient = 16
	}
	if cfg.MaxConns == 0 {
		cfg.MaxConns = max(cfg.MaxSubscribers, cfg.MaxConnsPerClient, 64)
	}
	if cfg.RateLimit == 0 {
		cfg.RateLimit = 1000
	}
	require.NoError(t, cfg.Check())
	if store == nil {
		store = newTestStore(cfg.Window)
	}
	r, err := NewServer(testlog.Logger(t, log.LevelInfo), cfg, store, m)
	require.NoError(t, err)
	require.NoError(t, r.Start(context.Background()))
	t.Cleanup(func() { require.NoError(t, r.Stop(context.Background())) })
	return r, store
}

func (r *Server) wsURL() string { return "ws://" + r.Addr().String() }

// relayClient is a client of r, as downstream nodes and operators call it.
func relayClient(t *testing.T, r *Server) *api.RelayClient {
	t.Helper()
	c, err := rpc.Dial(r.wsURL())
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return api.NewRelayClient(c)
}

func subscribe(t *testing.T, r *Server, from uint64) (chan *opsigner.SignedExecutionPayloadEnvelope, ethereum.Subscription, error) {
	t.Helper()
	ch := make(chan *opsigner.SignedExecutionPayloadEnvelope, 100)
	sub, err := relayClient(t, r).SubscribeEnvelopes(context.Background(), from, ch)
	return ch, sub, err
}

func receive(t *testing.T, ch chan *opsigner.SignedExecutionPayloadEnvelope) *opsigner.SignedExecutionPayloadEnvelope {
	t.Helper()
	select {
	case e := <-ch:
		return e
	case <-time.After(5 * time.Second):
		t.Fatal("no envelope relayed")
		return nil
	}
}

func TestRelayReplaysThenStreams(t *testing.T) {
	blocks := buildChain(6, 0, 0)
	r, store := startRelay(t, driverhook.RelayConfig{MaxSubscribers: 4, MaxSubscribersPerIP: 4, SendQueue: 16})
	for _, b := range blocks[:4] {
		store.Add(signed(b), "gossip", time.Now())
	}
	ch, sub, err := subscribe(t, r, 3)
	require.NoError(t, err)
	defer sub.Unsubscribe()
	for _, want := range blocks[2:4] { // replay from 3
		got := receive(t, ch)
		require.Equal(t, want.ExecutionPayload.BlockHash, got.Envelope.ExecutionPayload.BlockHash)
		require.Equal(t, eth.Bytes65{1}, got.Signature)
	}
	store.Add(signed(blocks[4]), "gossip", time.Now())
	require.Equal(t, blocks[4].ExecutionPayload.BlockHash, receive(t, ch).Envelope.ExecutionPayload.BlockHash, "then live")

	c, err := rpc.Dial("http://" + r.Addr().String())
	require.NoError(t, err)
	defer c.Close()
	var byNumber *opsigner.SignedExecutionPayloadEnvelope
	require.NoError(t, c.Call(&byNumber, "relay_envelopeByNumber", hexutil.Uint64(2)))
	require.Equal(t, blocks[1].ExecutionPayload.BlockHash, byNumber.Envelope.ExecutionPayload.BlockHash, "get by number over HTTP, for gaps")
	require.NoError(t, c.Call(&byNumber, "relay_envelopeByNumber", hexutil.Uint64(99)))
	require.Nil(t, byNumber)
	var head hexutil.Uint64
	require.NoError(t, c.Call(&head, "relay_head"))
	require.Equal(t, hexutil.Uint64(5), head)
}

func TestRelaySubscriberLimits(t *testing.T) {
	r, _ := startRelay(t, driverhook.RelayConfig{MaxSubscribers: 3, MaxSubscribersPerIP: 2, SendQueue: 16})
	for range 2 {
		_, _, err := subscribe(t, r, 0)
		require.NoError(t, err)
	}
	_, _, err := subscribe(t, r, 0)
	require.ErrorContains(t, err, ErrRelayFullForIP.Error())

	r.cfg.MaxSubscribersPerIP = 3 // the total limit applies across addresses
	_, _, err = subscribe(t, r, 0)
	require.NoError(t, err)
	_, _, err = subscribe(t, r, 0)
	require.ErrorContains(t, err, ErrRelayFull.Error())
}

// A subscriber that stops reading is dropped once its send queue is full; the relay frees its slot and keeps
// serving the others.
func TestRelayDropsSlowSubscriber(t *testing.T) {
	const sendQueue = 4
	r, store := startRelay(t, driverhook.RelayConfig{MaxSubscribers: 2, MaxSubscribersPerIP: 2, SendQueue: sendQueue})

	// Block n's state root (and so its hash) is n: the store holds a block once, by hash, and offers it once.
	n, last := uint64(0), common.Hash{}
	next := func(extra []byte) *opsigner.SignedExecutionPayloadEnvelope {
		n++
		var root common.Hash
		binary.BigEndian.PutUint64(root[:], n)
		env := &eth.ExecutionPayloadEnvelope{ExecutionPayload: &eth.ExecutionPayload{BlockNumber: eth.Uint64Quantity(n),
			StateRoot: eth.Bytes32(root), Transactions: []eth.Data{}}}
		if extra != nil {
			env.ExecutionPayload.Transactions = append(env.ExecutionPayload.Transactions, extra)
		}
		env.ExecutionPayload.BlockHash, _ = env.CheckBlockHash()
		last = env.ExecutionPayload.BlockHash
		return signed(env)
	}
	first := next(nil)
	_, _, _, err := store.Add(first, "gossip", time.Now())
	require.NoError(t, err)

	conn, _, err := websocket.DefaultDialer.Dial(r.wsURL(), http.Header{})
	require.NoError(t, err)
	defer conn.Close()
	req := `{"jsonrpc":"2.0","id":1,"method":"relay_subscribe","params":["envelopes","0x0"]}`
	require.NoError(t, conn.WriteMessage(websocket.TextMessage, []byte(req)))
	// The subscriber reads its subscription's ID, then the replayed block: the subscription holds a slot and is
	// live (what the relay sends now goes to the connection)...
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(5*time.Second)))
	var resp struct {
		Result string          `json:"result"`
		Error  json.RawMessage `json:"error"`
	}
	require.NoError(t, conn.ReadJSON(&resp))
	require.Empty(t, resp.Error)
	require.NotEmpty(t, resp.Result)
	var note struct {
		Params struct {
			Result opsigner.SignedExecutionPayloadEnvelope `json:"result"`
		} `json:"params"`
	}
	require.NoError(t, conn.ReadJSON(&note))
	require.Equal(t, first.Envelope.ExecutionPayload.BlockHash, note.Params.Result.Envelope.ExecutionPayload.BlockHash)
	r.mu.Lock()
	require.Equal(t, 1, r.total)
	r.mu.Unlock()
	// ...and never reads again.

	// Big blocks, added in bursts of more than the relay can take from the queue meanwhile (one being sent, a queue
	// full): the queue overflows while the relay is still writing into the socket buffers, not stuck on them.
	fat := make([]byte, 256<<10)
	var addErr error // the condition runs on another goroutine, where require must not fail the test
	require.Eventually(t, func() bool {
		burst := make([]*opsigner.SignedExecutionPayloadEnvelope, 0, sendQueue+2)
		for range sendQueue + 2 {
			burst = append(burst, next(fat))
		}
		for _, b := range burst {
			if _, added, _, err := store.Add(b, "gossip", time.Now()); err != nil || !added {
				addErr = fmt.Errorf("block %s not held (err %v)", b.ID(), err)
				return true
			}
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.total == 0
	}, 20*time.Second, time.Millisecond, "the stuck subscriber was not dropped")
	require.NoError(t, addErr)

	// The slot is free again and a well-behaved subscriber is served.
	ch, sub, err := subscribe(t, r, n)
	require.NoError(t, err)
	defer sub.Unsubscribe()
	require.Equal(t, last, receive(t, ch).Envelope.ExecutionPayload.BlockHash)
}

func TestRelayMessageSizeLimit(t *testing.T) {
	blocks := buildChain(2, 0, 0)
	small, err := json.Marshal(signed(blocks[1]))
	require.NoError(t, err)
	r, store := startRelay(t, driverhook.RelayConfig{MaxSubscribers: 1, MaxSubscribersPerIP: 1, SendQueue: 4,
		MaxMessageSize: len(small)})
	big := *blocks[0].ExecutionPayload
	big.Transactions = append(big.Transactions, make([]byte, 4096))
	store.Add(&opsigner.SignedExecutionPayloadEnvelope{Envelope: &eth.ExecutionPayloadEnvelope{ExecutionPayload: &big}}, "gossip", time.Now())
	store.Add(signed(blocks[1]), "gossip", time.Now())
	ch, sub, err := subscribe(t, r, 0)
	require.NoError(t, err)
	defer sub.Unsubscribe()
	require.Equal(t, blocks[1].ExecutionPayload.BlockHash, receive(t, ch).Envelope.ExecutionPayload.BlockHash, fmt.Sprintf("block 1 (over %d bytes) is skipped", len(small)))

	// Asked for by number, it is refused too.
	client := relayClient(t, r)
	_, err = client.EnvelopeByNumber(context.Background(), 1)
	require.ErrorContains(t, err, ErrRelayTooLarge.Error())
	got, err := client.EnvelopeByNumber(context.Background(), 2)
	require.NoError(t, err)
	require.Equal(t, blocks[1].ExecutionPayload.BlockHash, got.Envelope.ExecutionPayload.BlockHash)
}

// forwards records the relay's forward times (RecordRelayForward).
type forwards struct {
	NoopMetrics
	mu sync.Mutex
	d  []time.Duration
}

func (f *forwards) RecordRelayForward(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.d = append(f.d, d)
}

func (f *forwards) reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.d = nil
}

func (f *forwards) all() []time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.d)
}

// A block written to a live subscriber counts its time at the relay, from its arrival, once per subscriber; a new
// subscription's replay of the blocks held is not counted (they arrived before anyone asked).
func TestRelayForwardCountsLiveDeliveries(t *testing.T) {
	blocks := buildChain(3, 0, 0)
	m := &forwards{}
	r, store := startRelayMetered(t, driverhook.RelayConfig{MaxSubscribers: 4, MaxSubscribersPerIP: 4, SendQueue: 16}, m)
	for _, b := range blocks[:2] {
		store.Add(signed(b), "gossip", time.Now().Add(-time.Minute))
	}
	var chans []chan *opsigner.SignedExecutionPayloadEnvelope
	for range 2 {
		ch, sub, err := subscribe(t, r, 1)
		require.NoError(t, err)
		t.Cleanup(sub.Unsubscribe)
		for range 2 {
			receive(t, ch) // the replay
		}
		chans = append(chans, ch)
	}
	const held = 50 * time.Millisecond // as if it arrived that long ago
	store.Add(signed(blocks[2]), "gossip", time.Now().Add(-held))
	for _, ch := range chans {
		require.Equal(t, blocks[2].ExecutionPayload.BlockHash, receive(t, ch).Envelope.ExecutionPayload.BlockHash)
	}
	require.Eventually(t, func() bool { return len(m.all()) >= 2 }, 5*time.Second, time.Millisecond)
	got := m.all()
	require.Len(t, got, 2, "one per subscriber for the live block, none for the replays (held a minute)")
	for _, d := range got {
		require.GreaterOrEqual(t, d, held)
		require.Less(t, d, time.Minute, "the replay's blocks are not counted")
	}
}
