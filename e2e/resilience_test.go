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
