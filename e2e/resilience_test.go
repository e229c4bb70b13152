package e2e

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ethereum/go-ethereum/rpc"

	"github.com/op-replicator/op-replicator/e2e/devnet"
)

// TestSourceDown takes a replicator's source away for a while, under transaction load. An unreachable source is
// not a disagreement: throughout the outage the replicator keeps running (no halt), its op-node stays up and its
// safe head advances by derivation. When the source is back, it catches up with the sequencer's head, and
// every block from the start of the outage on is the sequencer's (no gap, nothing else).
func TestSourceDown(t *testing.T) {
	d := devnet.Start(t, devnet.Config{})
	seq := d.Sequencer.EL
	proxy := newProxy(t, seq.HTTP)
	rep := addFollower(t, d, "replicator", devnet.RoleReplicator, devnet.WithSource(proxy.URL))
	startTxLoad(t, d, seq)
	waitReplicating(t, d, rep, seq, 10)

	proxy.SetFailure(devnet.FailDown)
	outageStart := header(t, rep.EL, rpc.LatestBlockNumber).Number.Uint64()
	startSafe := header(t, rep.EL, rpc.SafeBlockNumber).Number.Uint64()
	sampleFor(t, d, 15*time.Second, func() {
		require.True(t, rep.OpNode.Running(), "the replicator's op-node exited")
		st := status(t, rep)
		require.Equal(t, stateRunning, st.State, "the replicator halted (%s: %s)", st.HaltReason, st.HaltDetail)
	})
	endSafe := header(t, rep.EL, rpc.SafeBlockNumber).Number.Uint64()
	require.Greater(t, endSafe, startSafe+4, "the safe head did not advance while the source was down")
	t.Logf("source down from block %d; safe head %d -> %d meanwhile", outageStart, startSafe, endSafe)

	proxy.SetFailure(devnet.FailNone)
	target := waitReachesHead(t, d, rep, seq)
	requireSameBlocks(t, rep.EL, seq, outageStart, target.Number)
	require.Equal(t, stateRunning, status(t, rep).State)
}

// TestKillAndRestart kills a replicator mid-replication under transaction load, first its op-node alone, then
// its op-node and op-geth together (SIGKILL, as a crash or power loss would), and starts it again each time:
// it must come back running, on the sequencer's chain (its latest and safe blocks are the sequencer's), and
// replicate on to the sequencer's head.
func TestKillAndRestart(t *testing.T) {
	d := devnet.Start(t, devnet.Config{})
	seq := d.Sequencer.EL
	rep := addFollower(t, d, "replicator", devnet.RoleReplicator)
	startTxLoad(t, d, seq)
	waitReplicating(t, d, rep, seq, 10)

	for _, crash := range []struct {
		what string
		kill func() error
	}{
		{"op-node", rep.OpNode.Kill},
		{"op-node and op-geth", rep.Kill},
	} {
		before := waitReachesHead(t, d, rep, seq)
		require.NoError(t, crash.kill(), "kill the replicator's %s", crash.what)
		t.Logf("killed the replicator's %s at block %d", crash.what, before.Number)
		restarted := time.Now()
		require.NoError(t, rep.Start(t.Context()))

		st := status(t, rep)
		require.Equal(t, stateRunning, st.State, "after a restart (%s: %s)", st.HaltReason, st.HaltDetail)
		require.True(t, st.Since.After(restarted), "the status is not the restarted replicator's")
		_, _, err := requireConsistent(t.Context(), t, d, rep.EL)
		require.NoError(t, err)
		waitReplicating(t, d, rep, seq, before.Number+3)
		waitReachesHead(t, d, rep, seq)
		require.Equal(t, stateRunning, status(t, rep).State)
	}
}

// sourceMemoryBound is how much a hostile http source may grow the replicator's op-node (RSS above its level
// before the attack). One response is cut at 32 MiB and one request per source is in flight, but go-ethereum's
// RPC client holds a response several times over while it decodes it (decoder buffer, raw result, the decoded
// value), and the garbage collector returns it lazily: measured +240 MiB for an endless body. Unbounded, an endless
// body on loopback is gigabytes within one request timeout.
const sourceMemoryBound = 384 << 20

// TestHostileSource gives a replicator an http source that, in turn, streams an endless body, drips a
// response a byte a second, and answers garbage, for 12 s each. None of it is a disagreement: the replicator
// stays running and its op-node up, with its memory bounded (sourceMemoryBound), the failures are counted in
// errors_total, and once the source is healthy again the replicator replicates to the head with no gap.
func TestHostileSource(t *testing.T) {
	d := devnet.Start(t, devnet.Config{})
	seq := d.Sequencer.EL
	proxy := newProxy(t, seq.HTTP)
	rep := addFollower(t, d, "replicator", devnet.RoleReplicator, devnet.WithSource(proxy.URL), devnet.WithMetrics())
	startTxLoad(t, d, seq)
	waitReplicating(t, d, rep, seq, 10)
	errorsTotal := func() float64 {
		v, err := metricValue(t.Context(), rep.MetricsURL, "op_node_default_replicator_errors_total")
		require.NoError(t, err)
		return v
	}

	for _, tc := range []struct {
		name    string
		failure devnet.Failure
	}{
		{"endless body", devnet.FailEndless},
		{"a byte a second", devnet.FailDrip},
		{"garbage", devnet.FailGarbage},
	} {
		before := waitReachesHead(t, d, rep, seq)
		res, err := rep.OpNode.Resources()
		require.NoError(t, err)
		baseline := res.RSS
		errs := errorsTotal()
		proxy.SetFailure(tc.failure)
		var peak uint64
		sampleFor(t, d, 12*time.Second, func() {
			require.True(t, rep.OpNode.Running(), "%s: the replicator's op-node exited", tc.name)
			st := status(t, rep)
			require.Equal(t, stateRunning, st.State, "%s: the replicator halted (%s: %s)", tc.name, st.HaltReason, st.HaltDetail)
			res, err := rep.OpNode.Resources()
			require.NoError(t, err)
			peak = max(peak, res.RSS)
		})
		counted := errorsTotal() - errs
		require.Positive(t, counted, "%s: no error counted", tc.name)
		require.Less(t, peak, baseline+sourceMemoryBound, "%s: op-node grew from %d MiB to %d MiB", tc.name, baseline>>20, peak>>20)
		t.Logf("%s: %v errors counted, op-node RSS %d MiB -> peak %d MiB", tc.name, counted, baseline>>20, peak>>20)

		proxy.SetFailure(devnet.FailNone)
		target := waitReachesHead(t, d, rep, seq)
		requireSameBlocks(t, rep.EL, seq, before.Number, target.Number)
		require.Equal(t, stateRunning, status(t, rep).State)
	}
}
