package relay

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/log"
	"github.com/stretchr/testify/require"

	"github.com/ethereum-optimism/optimism/op-service/clock"
	opsigner "github.com/ethereum-optimism/optimism/op-service/signer"

	"github.com/op-replicator/op-replicator/driverhook"
	"github.com/op-replicator/op-replicator/plugin/internal/testkit"
	"github.com/op-replicator/op-replicator/plugin/internal/wsdial"
)

// BenchmarkHop measures one hop of a relay tree in one process, without a devnet's other processes on the cores
// (the tree bench in e2e has them): one op is one block, added to an upstream relay's store and waited for at a
// subscriber of a downstream relay. The downstream follows the upstream as a relaying replicator does: the relay
// client's subscription (read once, decoded, signature checked, held) in a store its own relay serves (encoded once,
// written). The subscriber reads each message whole, without decoding it. Reported per block:
//   - hop-p50-ms, hop-p99-ms: from the upstream's store taking the block to the subscriber having read it (the
//     upstream's write, the hop and the subscriber's read);
//   - at-relay-p50-ms, at-relay-p99-ms: the downstream relay's own relay_forward_seconds, from its read of the
//     block to its write to the subscriber;
//   - cpu-µs/block: this process' CPU time, every part of the hop included.
//
// Weights as BenchmarkReceive's: light (60 transactions, a 16 KB message), 10x (470, 115 KB) and 1 MB (8,000,
// 2 MB). Each relay holds 16 blocks (--replicator.relay.window), or RELAY_HOP_WINDOW. Run with e.g.
//
//	GOWORK=$PWD/build/go.work go test -run '^$' -bench BenchmarkHop -benchtime 300x ./plugin/relay/
func BenchmarkHop(b *testing.B) {
	for _, w := range []struct {
		name      string
		txs, size int
	}{{"light", 60, 120}, {"10x", 470, 118}, {"1MB", 8000, 128}} {
		b.Run(w.name, func(b *testing.B) { benchHop(b, w.txs, w.size) })
	}
}

func benchHop(b *testing.B, txs, size int) {
	blocks := make([]*opsigner.SignedExecutionPayloadEnvelope, b.N+1) // the first connects the hop, not measured
	hashes := make([][]byte, len(blocks))
	for i := range blocks {
		blocks[i] = sign(b, testkit.Key(1), opaqueBlock(b, uint64(i+1), txs, size))
		hashes[i] = []byte(blocks[i].Envelope.ExecutionPayload.BlockHash.Hex())
	}
	ctx := context.Background()
	quiet := log.NewLogger(log.DiscardHandler())
	// A window of 16 by default: the blocks a hop holds, not all b.N of them (1 MB blocks would take gigabytes).
	// RELAY_HOP_WINDOW sets another, to measure what holding more costs.
	window := 16
	if w := os.Getenv("RELAY_HOP_WINDOW"); w != "" {
		var err error
		window, err = strconv.Atoi(w)
		require.NoError(b, err, "RELAY_HOP_WINDOW")
	}
	cfg := driverhook.RelayConfig{Enabled: true, Addr: "127.0.0.1", Window: window,
		MaxSubscribers: 16, MaxSubscribersPerIP: 16, SendQueue: driverhook.DefaultRelaySendQueue,
		MaxMessageSize: driverhook.DefaultRelayMaxMessageSize, MaxConnsPerClient: 16, MaxConns: 16, RateLimit: 100_000}
	require.NoError(b, cfg.Check())
	serve := func(store *Store, m Metricer) *Server {
		r, err := NewServer(quiet, cfg, store, m)
		require.NoError(b, err)
		require.NoError(b, r.Start(ctx))
		b.Cleanup(func() { require.NoError(b, r.Stop(ctx)) })
		return r
	}
	upstreamStore := newTestStore(cfg.Window)
	upstream := serve(upstreamStore, NoopMetrics{})
	store := newTestStore(cfg.Window)
	client := NewClient(quiet, ClientConfig{Name: "upstream", URL: upstream.wsURL(), Rollup: testRollup,
		Signers: &testkit.Signers{Current: testkit.Addr(1)}, Timeout: 5 * time.Second, ReadTimeout: time.Minute},
		store, NewEvidenceLog(), NoopMetrics{}, clock.SystemClock)
	require.NoError(b, client.Start(ctx))
	b.Cleanup(func() { require.NoError(b, client.Stop(ctx)) })
	fwd := &forwards{}
	downstream := serve(store, fwd)

	dialer, err := wsdial.New(downstream.wsURL(), subscriptionReadLimit)
	require.NoError(b, err)
	sub, err := subscribeRelay(ctx, dialer, 1, 5*time.Second, time.Minute, time.Now)
	require.NoError(b, err)
	b.Cleanup(sub.Close)
	// next waits for block i at the subscriber: the time it was read.
	next := func(i int) time.Time {
		msg, err := sub.read(time.Now().Add(time.Minute))
		require.NoError(b, err)
		at := time.Now()
		require.True(b, bytes.Contains(msg, hashes[i]), "block %d arrives next", i+1)
		return at
	}
	// The first block connects the hop: the client's subscription may still be being made.
	_, _, _, err = upstreamStore.Add(blocks[0], "gossip", time.Now())
	require.NoError(b, err)
	next(0)
	require.Eventually(b, func() bool { return len(fwd.all()) == 1 }, 5*time.Second, time.Millisecond)
	fwd.reset()

	hops := make([]time.Duration, 0, b.N)
	cpu0 := processCPU(b)
	b.ResetTimer()
	for i := 1; i <= b.N; i++ {
		added := time.Now()
		_, ok, _, err := upstreamStore.Add(blocks[i], "gossip", added)
		require.NoError(b, err)
		require.True(b, ok)
		hops = append(hops, next(i).Sub(added))
	}
	b.StopTimer()
	b.ReportMetric(float64((processCPU(b)-cpu0).Microseconds())/float64(b.N), "cpu-µs/block")
	b.ReportMetric(pct(hops, 50), "hop-p50-ms")
	b.ReportMetric(pct(hops, 99), "hop-p99-ms")
	// The forward is recorded after the write, which the subscriber may have read first.
	require.Eventually(b, func() bool { return len(fwd.all()) == b.N }, 5*time.Second, time.Millisecond)
	b.ReportMetric(pct(fwd.all(), 50), "at-relay-p50-ms")
	b.ReportMetric(pct(fwd.all(), 99), "at-relay-p99-ms")
}

// BenchmarkPrepareResult measures what a relay does once per block it relays, before its first write: the block's
// JSON as the relay writes it (marshalSigned, field by field: "fields"); as json.Marshal writes it, the same bytes,
// which the relay used until marshalSigned ("marshal"); and, as the relay did before it took json.Marshal's output
// as it is (marshaledResult), that JSON encoded once more as a json.RawMessage ("re-encoded": newEncodedResult, a
// pass that compacts and HTML-escapes what is compact and escaped already). Weights as BenchmarkHop's. Run with e.g.
//
//	GOWORK=$PWD/build/go.work go test -run '^$' -bench BenchmarkPrepareResult -count 3 ./plugin/relay/
func BenchmarkPrepareResult(b *testing.B) {
	for _, w := range []struct {
		name      string
		txs, size int
	}{{"light", 60, 120}, {"10x", 470, 118}, {"1MB", 8000, 128}} {
		s := sign(b, testkit.Key(1), opaqueBlock(b, 1, w.txs, w.size))
		b.Run(w.name+"/fields", func(b *testing.B) {
			for range b.N {
				msg, err := marshalSigned(s)
				if err != nil {
					b.Fatal(err)
				}
				_ = marshaledResult(msg)
			}
		})
		b.Run(w.name+"/marshal", func(b *testing.B) {
			for range b.N {
				msg, err := json.Marshal(s)
				if err != nil {
					b.Fatal(err)
				}
				_ = marshaledResult(msg)
			}
		})
		b.Run(w.name+"/re-encoded", func(b *testing.B) {
			for range b.N {
				msg, err := json.Marshal(s)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := newEncodedResult(msg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
