package plugin

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

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
)

func startRelay(t *testing.T, cfg driverhook.RelayConfig) (*relayServer, *envelopeStore) {
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
	if cfg.RateLimit == 0 {
		cfg.RateLimit = 1000
	}
	require.NoError(t, cfg.Check())
	store := newEnvelopeStore(cfg.Window)
	r, err := newRelayServer(testlog.Logger(t, log.LevelInfo), cfg, store, NoopMetrics{})
	require.NoError(t, err)
	require.NoError(t, r.Start())
	t.Cleanup(func() { require.NoError(t, r.Stop(context.Background())) })
	return r, store
}

func (r *relayServer) wsURL() string { return "ws://" + r.Addr().String() }

func subscribe(t *testing.T, r *relayServer, from uint64) (chan *opsigner.SignedExecutionPayloadEnvelope, *rpc.ClientSubscription, error) {
	t.Helper()
	c, err := rpc.Dial(r.wsURL())
	require.NoError(t, err)
	t.Cleanup(c.Close)
	ch := make(chan *opsigner.SignedExecutionPayloadEnvelope, 100)
	sub, err := c.Subscribe(context.Background(), "relay", ch, "envelopes", hexutil.Uint64(from))
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
	blocks := buildChain(t, testRollupConfig(), 6, 0, 0)
	r, store := startRelay(t, driverhook.RelayConfig{MaxSubscribers: 4, MaxSubscribersPerIP: 4, SendQueue: 16})
	for _, b := range blocks[:4] {
		store.Add(signed(b), "gossip", time.Now())
	}
	ch, sub, err := subscribe(t, r, 3)
	require.NoError(t, err)
	defer sub.Unsubscribe()
	for _, want := range blocks[2:4] { // replay from 3
		got := receive(t, ch)
		require.Equal(t, want.ref.Hash, got.Envelope.ExecutionPayload.BlockHash)
		require.Equal(t, eth.Bytes65{1}, got.Signature)
	}
	store.Add(signed(blocks[4]), "gossip", time.Now())
	require.Equal(t, blocks[4].ref.Hash, receive(t, ch).Envelope.ExecutionPayload.BlockHash, "then live")

	c, err := rpc.Dial("http://" + r.Addr().String())
	require.NoError(t, err)
	defer c.Close()
	var byNumber *opsigner.SignedExecutionPayloadEnvelope
	require.NoError(t, c.Call(&byNumber, "relay_envelopeByNumber", hexutil.Uint64(2)))
	require.Equal(t, blocks[1].ref.Hash, byNumber.Envelope.ExecutionPayload.BlockHash, "get by number over HTTP, for gaps")
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
	cfg := testRollupConfig()
	const sendQueue = 4
	r, store := startRelay(t, driverhook.RelayConfig{MaxSubscribers: 2, MaxSubscribersPerIP: 2, SendQueue: sendQueue})

	// Block n's state root (and so its hash) is n: the store holds a block once, by hash, and offers it once.
	parent := eth.L2BlockRef{Hash: testGenesis.Hash, L1Origin: cfg.Genesis.L1, Time: cfg.Genesis.L2Time}
	next := func(extra []byte) *opsigner.SignedExecutionPayloadEnvelope {
		var root common.Hash
		binary.BigEndian.PutUint64(root[:], parent.Number+1)
		b := makeBlock(t, cfg, parent, l1Block(parent.L1Origin.Number, 0), parent.SequenceNumber+1, root)
		if extra != nil {
			b.env.ExecutionPayload.Transactions = append(b.env.ExecutionPayload.Transactions, extra)
		}
		parent = b.ref
		return signed(b)
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
	ch, sub, err := subscribe(t, r, parent.Number)
	require.NoError(t, err)
	defer sub.Unsubscribe()
	require.Equal(t, parent.Hash, receive(t, ch).Envelope.ExecutionPayload.BlockHash)
}

func TestRelayMessageSizeLimit(t *testing.T) {
	blocks := buildChain(t, testRollupConfig(), 2, 0, 0)
	small, err := json.Marshal(signed(blocks[1]))
	require.NoError(t, err)
	r, store := startRelay(t, driverhook.RelayConfig{MaxSubscribers: 1, MaxSubscribersPerIP: 1, SendQueue: 4,
		MaxMessageSize: len(small)})
	big := *blocks[0].env.ExecutionPayload
	big.Transactions = append(big.Transactions, make([]byte, 4096))
	store.Add(&opsigner.SignedExecutionPayloadEnvelope{Envelope: &eth.ExecutionPayloadEnvelope{ExecutionPayload: &big}}, "gossip", time.Now())
	store.Add(signed(blocks[1]), "gossip", time.Now())
	ch, sub, err := subscribe(t, r, 0)
	require.NoError(t, err)
	defer sub.Unsubscribe()
	require.Equal(t, blocks[1].ref.Hash, receive(t, ch).Envelope.ExecutionPayload.BlockHash, fmt.Sprintf("block 1 (over %d bytes) is skipped", len(small)))

	// Asked for by number, it is refused too.
	_, err = (&RelayAPI{r: r}).EnvelopeByNumber(1)
	require.ErrorIs(t, err, ErrRelayTooLarge)
	got, err := (&RelayAPI{r: r}).EnvelopeByNumber(2)
	require.NoError(t, err)
	require.Equal(t, blocks[1].ref.Hash, got.Envelope.ExecutionPayload.BlockHash)
}

// A relay-only service (a sequencer or a P2P sentry) holds what gossip accepted and relays it; it replicates
// nothing, serves no replicator_* RPC and lets gossip through untouched.
func TestRelayOnlyService(t *testing.T) {
	blocks := buildChain(t, testRollupConfig(), 2, 0, 0)
	cfg := driverhook.CLIConfig{Relay: driverhook.RelayConfig{Enabled: true, Addr: "127.0.0.1", Port: 0, Window: 8,
		MaxConnsPerClient: 4, RateLimit: 100,
		MaxSubscribers: 1, MaxSubscribersPerIP: 1, SendQueue: 4, MaxMessageSize: 1 << 20}}
	svc, err := NewService(cfg, driverhook.Deps{Log: testlog.Logger(t, log.LevelInfo), Rollup: testRollupConfig()}, NoopMetrics{})
	require.NoError(t, err)
	require.Nil(t, svc.rep)
	require.Empty(t, svc.APIs(true))
	next := &countingReceiver{}
	svc.GateGossip(next).OnUnsafeL2Payload(context.Background(), blocks[0].env)
	require.Equal(t, 1, next.n)

	require.NoError(t, svc.Start(context.Background()))
	defer func() { require.NoError(t, svc.Stop(context.Background())) }()
	svc.OnSignedUnsafeL2Payload(context.Background(), signed(blocks[0]))
	ch, sub, err := subscribe(t, svc.relay, 0)
	require.NoError(t, err)
	defer sub.Unsubscribe()
	require.Equal(t, blocks[0].ref.Hash, receive(t, ch).Envelope.ExecutionPayload.BlockHash)
}

// A replicator with P2P but no relay still holds the signed blocks gossip delivers, so that two validly signed
// blocks at one height halt it.
func TestGossipEquivocationWithoutRelay(t *testing.T) {
	cfg := driverhook.CLIConfig{Enabled: true, Sources: []string{"http://127.0.0.1:1"}, L2RPC: "http://127.0.0.1:1", PollInterval: time.Second,
		RequestTimeout: time.Second, ReadTimeout: time.Second, HaltPolicy: driverhook.HaltManual}
	svc, err := NewService(cfg, driverhook.Deps{Log: testlog.Logger(t, log.LevelInfo), Rollup: testRollupConfig()}, NoopMetrics{})
	require.NoError(t, err)
	defer func() { require.NoError(t, svc.Stop(context.Background())) }()
	require.NotNil(t, svc.store)
	a, b := signedChain(t, 1, 2, 0), signedChain(t, 1, 2, 5)
	svc.OnSignedUnsafeL2Payload(context.Background(), a[1])
	svc.OnSignedUnsafeL2Payload(context.Background(), b[1])
	require.Len(t, svc.rep.evidence.all(), 1)
}
