package plugin

import (
	"context"
	"testing"
	"time"

	"github.com/ethereum-optimism/optimism/op-service/clock"

	"github.com/ethereum/go-ethereum/log"
	"github.com/ethereum/go-ethereum/rpc"
	"github.com/stretchr/testify/require"

	"github.com/ethereum-optimism/optimism/op-service/eth"
	opsigner "github.com/ethereum-optimism/optimism/op-service/signer"
	"github.com/ethereum-optimism/optimism/op-service/testlog"

	"github.com/op-replicator/op-replicator/driverhook"
	"github.com/op-replicator/op-replicator/plugin/api"
	"github.com/op-replicator/op-replicator/plugin/internal/testkit"
	"github.com/op-replicator/op-replicator/plugin/relay"
)

// A relay-only service (a sequencer or a P2P sentry) holds what gossip accepted and relays it; it replicates
// nothing, serves no replicator_* RPC and lets gossip through untouched.
func TestRelayOnlyService(t *testing.T) {
	blocks := testkit.BuildChain(t, testkit.RollupConfig(), 2, 0, 0)
	cfg := driverhook.CLIConfig{Relay: driverhook.RelayConfig{Enabled: true, Addr: "127.0.0.1", Port: 0, Window: 8,
		MaxConnsPerClient: 4, MaxConns: 8, RateLimit: 100,
		MaxSubscribers: 1, MaxSubscribersPerIP: 1, SendQueue: 4, MaxMessageSize: 1 << 20}}
	svc, err := NewService(cfg, driverhook.Deps{Log: testlog.Logger(t, log.LevelInfo), Rollup: testkit.RollupConfig()}, NoopMetrics{})
	require.NoError(t, err)
	require.Nil(t, svc.rep)
	require.Empty(t, svc.APIs(true))
	next := &countingReceiver{}
	svc.GateGossip(next).OnUnsafeL2Payload(context.Background(), blocks[0].Env)
	require.Equal(t, 1, next.n)

	require.NoError(t, svc.Start(context.Background()))
	defer func() { require.NoError(t, svc.Stop(context.Background())) }()
	svc.OnSignedUnsafeL2Payload(context.Background(), &opsigner.SignedExecutionPayloadEnvelope{Envelope: blocks[0].Env, Signature: eth.Bytes65{1}})
	conn, err := rpc.Dial("ws://" + svc.relay.Addr().String())
	require.NoError(t, err)
	defer conn.Close()
	ch := make(chan *opsigner.SignedExecutionPayloadEnvelope, 1)
	sub, err := api.NewRelayClient(conn).SubscribeEnvelopes(context.Background(), 0, ch)
	require.NoError(t, err)
	defer sub.Unsubscribe()
	select {
	case got := <-ch:
		require.Equal(t, blocks[0].Ref.Hash, got.Envelope.ExecutionPayload.BlockHash)
	case <-time.After(5 * time.Second):
		t.Fatal("no envelope relayed")
	}
}

// A replicator with P2P but no relay still holds the signed blocks gossip delivers, so that two validly signed
// blocks at one height halt it.
func TestGossipEquivocationWithoutRelay(t *testing.T) {
	cfg := driverhook.CLIConfig{Enabled: true, Sources: []string{"http://127.0.0.1:1"}, L2RPC: "http://127.0.0.1:2", PollInterval: time.Second,
		RequestTimeout: time.Second, ReadTimeout: time.Second, HaltPolicy: driverhook.HaltManual}
	svc, err := NewService(cfg, driverhook.Deps{Log: testlog.Logger(t, log.LevelInfo), Rollup: testkit.RollupConfig()}, NoopMetrics{})
	require.NoError(t, err)
	defer func() { require.NoError(t, svc.Stop(context.Background())) }()
	require.NotNil(t, svc.store)
	svc.clock = clock.NewDeterministicClock(time.Unix(1000, 0)) // the test chain's time: its blocks are not history
	a, b := signedChain(t, 1, 2, 0), signedChain(t, 1, 2, 5)
	svc.OnSignedUnsafeL2Payload(context.Background(), a[1])
	svc.OnSignedUnsafeL2Payload(context.Background(), b[1])
	require.Len(t, svc.rep.evidence.All(), 1)
}

// With --replicator.relay.window.dir, Start opens the window on disk and Stop closes it: older blocks are spilled
// and served from disk, and the database is released at Stop (another store can open the directory).
func TestRelayServiceWindowOnDisk(t *testing.T) {
	blocks := testkit.BuildChain(t, testkit.RollupConfig(), 3, 0, 0)
	dir := t.TempDir()
	cfg := driverhook.CLIConfig{Relay: driverhook.RelayConfig{Enabled: true, Addr: "127.0.0.1", Port: 0, Window: 8,
		WindowDir: dir, WindowMemory: 1, MaxConnsPerClient: 4, MaxConns: 8, RateLimit: 100,
		MaxSubscribers: 1, MaxSubscribersPerIP: 1, SendQueue: 4, MaxMessageSize: 1 << 20}}
	svc, err := NewService(cfg, driverhook.Deps{Log: testlog.Logger(t, log.LevelInfo), Rollup: testkit.RollupConfig()}, NoopMetrics{})
	require.NoError(t, err)
	require.NoError(t, svc.Start(context.Background()))
	for _, b := range blocks {
		svc.OnSignedUnsafeL2Payload(context.Background(), &opsigner.SignedExecutionPayloadEnvelope{Envelope: b.Env, Signature: eth.Bytes65{1}})
	}
	require.True(t, svc.store.Latest(1).Spilled())
	require.False(t, svc.store.Latest(3).Spilled(), "the newest height stays in memory")
	conn, err := rpc.Dial("ws://" + svc.relay.Addr().String())
	require.NoError(t, err)
	got, err := api.NewRelayClient(conn).EnvelopeByNumber(context.Background(), 1)
	require.NoError(t, err)
	require.Equal(t, blocks[0].Ref.Hash, got.Envelope.ExecutionPayload.BlockHash, "served from disk")
	conn.Close()

	require.NoError(t, svc.Stop(context.Background()))
	_, err = svc.store.Latest(1).JSON()
	require.ErrorIs(t, err, relay.ErrNotHeld, "closed at Stop")
	other := relay.NewStore(8, log.Root(), nil, relay.NoopMetrics{})
	require.NoError(t, other.SpillTo(dir, 1), "the database was released")
	require.NoError(t, other.Close())
}
