package e2e

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/op-replicator/op-replicator/e2e/devnet"
	"github.com/op-replicator/op-replicator/e2e/dsl"
)

const (
	// relayMemoryBound is the most resident memory the relay's op-node may hold under the hostile client, stated in
	// the README (Relay). Measured on the devnet (seven runs): 47-60 MiB before the attack, peaks of 54-67 MiB during it; the
	// bound is the highest peak with half again as much headroom.
	relayMemoryBound = 100 << 20
	// maxDownstreamLag is how many blocks a well-behaved downstream replicator may be behind its relay while the
	// relay is under attack.
	maxDownstreamLag = 2
	// attackWindow is how long the hostile client attacks: longer than the relay's 30 s read-header timeout, so
	// that bare connections the flood holds are closed by the relay and opened again at least once.
	attackWindow = 45 * time.Second
	// lagSamplePeriod is how often the downstream's lag is sampled during the attack.
	lagSamplePeriod = 100 * time.Millisecond
	// relayGoroutineBound is how many more goroutines than before the attack the relay's op-node may run under it,
	// stated in the README (Relay): the client holds at most relayMaxConnsPerClient connections, each serving at most
	// 16 calls at once (the pipelining workers' included) besides its own reader, writer and keep-alive. Measured:
	// 69 before the attack, a peak of 105 during it.
	relayGoroutineBound = relayMaxConnsPerClient * (16 + 3)
	// relayMaxConnsPerClient is the relay's default --replicator.relay.max-conns-per-client.
	relayMaxConnsPerClient = 16
)

// hostileAttack is the attack of TestRelayWithstandsHostileClient (and the soak's): 1,000-call batches, a
// connection flood, subscribers that never read and 10,000 calls pipelined on a websocket without reading the
// answers, all from 127.0.0.2, a client of its own to the relay.
var hostileAttack = devnet.HostileConfig{
	LocalIP:          "127.0.0.2",
	BatchWorkers:     2,
	BatchSize:        1000,
	FloodWorkers:     2,
	MaxHeldConns:     4096,
	StuckSubscribers: 4,
	PipelineWorkers:  2,
	PipelineCalls:    10_000,
}

// TestRelayWithstandsHostileClient has a hostile client attack a relay (a replicator relaying the sequencer's
// blocks) with 1,000-call batches, a connection flood and subscribers that never read, while a well-behaved
// downstream replicator follows the same relay. Throughout the attack the relay's op-node stays under
// relayMemoryBound of resident memory, the downstream is never more than maxDownstreamLag blocks behind the
// relay, and the relay refuses the hostile client (without its limits the test fails).
func TestRelayWithstandsHostileClient(t *testing.T) {
	seqRelay := dsl.FreePort(t)
	sys := dsl.Start(t, devnet.Config{SequencerArgs: dsl.RelayArgs(seqRelay)})
	seq := sys.Sequencer.EL
	sys.StartTxLoad(seq)
	// A relay holds and serves signed blocks only: it follows the sequencer's relay (a sentry's gossip would do too).
	relayPort := sys.FreePort()
	relay := sys.AddReplicator("relay", devnet.WithMetrics(),
		devnet.WithSource(dsl.RelaySource(seqRelay)), devnet.WithNodeArgs(dsl.RelayArgs(relayPort)...))
	down := sys.AddReplicator("downstream", devnet.WithSource(dsl.RelaySource(relayPort)))
	down.WaitReplicating(seq, 5)
	down.WaitReachesHead(seq)
	before, err := relay.OpNode.Resources()
	require.NoError(t, err)
	t.Logf("relay op-node before the attack: RSS %s, %d fds", mib(before.RSS), before.FDs)

	hostile, err := devnet.StartHostileClient(t.Context(), "http://127.0.0.1:"+strconv.Itoa(relayPort), hostileAttack)
	require.NoError(t, err)
	t.Cleanup(hostile.Stop)
	goroutinesBefore := relay.Metric(dsl.MetricGoroutines)
	var (
		peak           devnet.Resources
		peakGoroutines float64
		maxLag         uint64
		samples        int
	)
	end := time.Now().Add(attackWindow)
	ticker := time.NewTicker(lagSamplePeriod)
	defer ticker.Stop()
	for time.Now().Before(end) {
		require.NoError(t, sys.Net.Err(), "devnet fault")
		res, err := relay.OpNode.Resources()
		require.NoError(t, err)
		peak.RSS, peak.FDs = max(peak.RSS, res.RSS), max(peak.FDs, res.FDs)
		require.LessOrEqual(t, res.RSS, uint64(relayMemoryBound), "the relay's op-node holds %s under attack", mib(res.RSS))
		goroutines := relay.Metric(dsl.MetricGoroutines)
		peakGoroutines = max(peakGoroutines, goroutines)
		require.LessOrEqual(t, goroutines, goroutinesBefore+relayGoroutineBound,
			"the relay's op-node runs %v goroutines under attack (%v before)", goroutines, goroutinesBefore)
		lag, err := blocksBehind(t.Context(), down.EL.EL, relay.EL.EL)
		require.NoError(t, err)
		require.LessOrEqual(t, lag, uint64(maxDownstreamLag), "the downstream replicator is %d blocks behind its relay under attack", lag)
		maxLag = max(maxLag, lag)
		samples++
		select {
		case <-t.Context().Done():
			t.Fatal("test context ended during the attack")
		case <-ticker.C:
		}
	}
	stats := hostile.Stats()
	after, err := relay.OpNode.Resources()
	require.NoError(t, err)
	hostile.Stop()
	t.Logf("hostile client: %s", stats)
	t.Logf("relay op-node over %d samples: RSS peak %s (VmHWM %s), fds peak %d, goroutines %v before, peak %v; downstream lag max %d blocks",
		samples, mib(peak.RSS), mib(after.PeakRSS), peak.FDs, goroutinesBefore, peakGoroutines, maxLag)

	// VmHWM catches a peak between two samples.
	require.LessOrEqual(t, after.PeakRSS, uint64(relayMemoryBound), "the relay's op-node peaked at %s", mib(after.PeakRSS))
	// The connection limit holds at the socket: the flood's connections beyond the client's slots are closed at once
	// instead of holding a file descriptor each until the read-header timeout.
	require.LessOrEqual(t, peak.FDs, before.FDs+2*relayMaxConnsPerClient,
		"the relay's open file descriptors grew from %d to %d: more than the client's %d connection slots and the node's own",
		before.FDs, peak.FDs, relayMaxConnsPerClient)
	// The attack was refused, by each limit: without them the test fails here.
	require.Zero(t, stats.Served, "calls of 1,000-call batches were answered")
	require.NotZero(t, stats.TooMany, "no request was refused with HTTP 429")
	require.NotZero(t, stats.Subscribed, "the stuck subscribers never subscribed: the attack did not happen")
	require.NotZero(t, stats.PipelinedCalls, "no call was pipelined: the attack did not happen")
	metrics := relay.Metrics()
	for _, limit := range []string{dsl.RelayLimitRate, dsl.RelayLimitConnsPerClient, dsl.RelayLimitCallRate} {
		v, err := metrics.Value(dsl.MetricRelayRefused, "limit", limit)
		require.NoError(t, err, "nothing refused by %s", limit)
		require.NotZero(t, v, "nothing refused by %s", limit)
		t.Logf("relay refused %v by %s", v, limit)
	}

	// The downstream replicator is on the sequencer's chain and replicating.
	down.RequireRunning()
	head := down.WaitReachesHead(seq)
	down.EL.RequireSameBlocks(seq, head.Number-min(head.Number-1, 60), head.Number)
}

// blocksBehind returns how many blocks follower's latest block is below ref's (0 if it is not below). follower is
// read first, so that a block arriving between the two reads can only make the lag look larger.
func blocksBehind(ctx context.Context, follower, ref *devnet.EL) (uint64, error) {
	f, err := follower.BlockNumber(ctx)
	if err != nil {
		return 0, err
	}
	r, err := ref.BlockNumber(ctx)
	if err != nil {
		return 0, err
	}
	return r - min(r, f), nil
}

// mib formats a number of bytes in MiB.
func mib(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
