package e2e

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ethereum/go-ethereum/rpc"

	"github.com/op-replicator/op-replicator/e2e/devnet"
	"github.com/op-replicator/op-replicator/e2e/dsl"
	"github.com/op-replicator/op-replicator/plugin/api"
)

// TestSourceDown takes a replicator's source away for a while, under transaction load. An unreachable source is
// not a disagreement: throughout the outage the replicator keeps running (no halt), its op-node stays up and its
// safe head advances by derivation. When the source is back, it catches up with the sequencer's head, and
// every block from the start of the outage on is the sequencer's (no gap, nothing else).
func TestSourceDown(t *testing.T) {
	sys := dsl.Start(t, devnet.Config{})
	seq := sys.Sequencer.EL
	proxy := sys.NewProxy(seq.HTTP)
	rep := sys.AddReplicator("replicator", devnet.WithSource(proxy.URL))
	sys.StartTxLoad(seq)
	rep.WaitReplicating(seq, 10)

	proxy.SetFailure(devnet.FailDown)
	outageStart := rep.EL.NumberAt(rpc.LatestBlockNumber)
	startSafe := rep.EL.NumberAt(rpc.SafeBlockNumber)
	sys.SampleFor(15*time.Second, func() {
		require.True(t, rep.OpNode.Running(), "the replicator's op-node exited")
		rep.RequireRunning() // no halt
	})
	endSafe := rep.EL.NumberAt(rpc.SafeBlockNumber)
	require.Greater(t, endSafe, startSafe+4, "the safe head did not advance while the source was down")
	t.Logf("source down from block %d; safe head %d -> %d meanwhile", outageStart, startSafe, endSafe)

	proxy.SetFailure(devnet.FailNone)
	target := rep.WaitReachesHead(seq)
	rep.EL.RequireSameBlocks(seq, outageStart, target.Number)
	rep.RequireRunning()
}

// TestKillAndRestart kills a replicator mid-replication under transaction load, first its op-node alone, then
// its op-node and op-geth together (SIGKILL, as a crash or power loss would), and starts it again each time:
// it must come back running, on the sequencer's chain (its latest and safe blocks are the sequencer's), and
// replicate on to the sequencer's head. Its op-geth is an archive node: op-geth with its defaults (path scheme)
// loses its recent state when killed, and stock op-node then stops on it as well; that is op-geth's crash recovery,
// not the replicator's.
func TestKillAndRestart(t *testing.T) {
	sys := dsl.Start(t, devnet.Config{})
	seq := sys.Sequencer.EL
	rep := sys.AddReplicator("replicator", devnet.WithArchiveEngine())
	sys.StartTxLoad(seq)
	rep.WaitReplicating(seq, 10)

	for _, crash := range []struct {
		what string
		kill func() error
	}{
		{"op-node", rep.OpNode.Kill},
		{"op-node and op-geth", rep.Kill},
	} {
		before := rep.WaitReachesHead(seq)
		require.NoError(t, crash.kill(), "kill the replicator's %s", crash.what)
		t.Logf("killed the replicator's %s at block %d", crash.what, before.Number)
		restarted := time.Now()
		rep.StartAgain()

		st := rep.RequireRunning() // after a restart
		require.True(t, st.Since.After(restarted), "the status is not the restarted replicator's")
		_, _, err := rep.EL.ConsistentWith(t.Context(), seq)
		require.NoError(t, err)
		rep.WaitReplicating(seq, before.Number+3)
		rep.WaitReachesHead(seq)
		rep.RequireRunning()
	}
}

// sourceMemoryBound is how much a hostile http source may grow the replicator's op-node (RSS above its level
// before the attack). One response is cut at 32 MiB, but two requests can be reading one at once (the poller's
// fetch of the next block, which the replicator reads itself into a buffer that grows by doubling, and the loop's
// head request, which go-ethereum's RPC client holds several times over while it decodes it: decoder buffer, raw
// result, decoded value), and the garbage collector returns the memory lazily. Measured for an endless body: +240
// to +320 MiB in five CI runs while go-ethereum's client read every answer, +255 to +391 MiB in four since the
// replicator reads a block's answer itself. Unbounded, an endless body on loopback is gigabytes within one
// request timeout.
const sourceMemoryBound = 512 << 20

// TestHostileSource gives a replicator an http source that, in turn, streams an endless body, drips a
// response a byte a second, and answers garbage, for 12 s each. None of it is a disagreement: the replicator
// stays running and its op-node up, with its memory bounded (sourceMemoryBound), the failures are counted in
// errors_total, and once the source is healthy again the replicator replicates to the head with no gap.
func TestHostileSource(t *testing.T) {
	sys := dsl.Start(t, devnet.Config{})
	seq := sys.Sequencer.EL
	proxy := sys.NewProxy(seq.HTTP)
	rep := sys.AddReplicator("replicator", devnet.WithSource(proxy.URL), devnet.WithMetrics())
	sys.StartTxLoad(seq)
	rep.WaitReplicating(seq, 10)
	errorsTotal := func() float64 { return rep.Metric(dsl.MetricErrors) }

	for _, tc := range []struct {
		name    string
		failure devnet.Failure
	}{
		{"endless body", devnet.FailEndless},
		{"a byte a second", devnet.FailDrip},
		{"garbage", devnet.FailGarbage},
	} {
		before := rep.WaitReachesHead(seq)
		res, err := rep.OpNode.Resources()
		require.NoError(t, err)
		baseline := res.RSS
		errs := errorsTotal()
		proxy.SetFailure(tc.failure)
		var peak uint64
		sys.SampleFor(12*time.Second, func() {
			require.True(t, rep.OpNode.Running(), "%s: the replicator's op-node exited", tc.name)
			st := rep.Status()
			require.Equal(t, api.StateRunning, st.State, "%s: the replicator halted (%s: %s)", tc.name, st.HaltReason, st.HaltDetail)
			res, err := rep.OpNode.Resources()
			require.NoError(t, err)
			peak = max(peak, res.RSS)
		})
		counted := errorsTotal() - errs
		require.Positive(t, counted, "%s: no error counted", tc.name)
		require.Less(t, peak, baseline+sourceMemoryBound, "%s: op-node grew from %d MiB to %d MiB", tc.name, baseline>>20, peak>>20)
		t.Logf("%s: %v errors counted, op-node RSS %d MiB -> peak %d MiB", tc.name, counted, baseline>>20, peak>>20)

		proxy.SetFailure(devnet.FailNone)
		target := rep.WaitReachesHead(seq)
		rep.EL.RequireSameBlocks(seq, before.Number, target.Number)
		rep.RequireRunning()
	}
}
