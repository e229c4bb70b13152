package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ethereum/go-ethereum/rpc"

	"github.com/op-replicator/op-replicator/e2e/devnet"
	"github.com/op-replicator/op-replicator/e2e/dsl"
	"github.com/op-replicator/op-replicator/plugin/api"
)

// deepUnsafeRange is how many unsafe blocks above the safe head the deep halt is tried with: an hourly-batching
// chain with 1 s blocks has 1,800-3,600, and a full op-geth can read the state of only the last 128.
const deepUnsafeRange = 1000

// TestHaltDeepUnsafeRangeOnDefaultOpGeth halts a replicator whose op-geth runs with op-geth's defaults (path scheme,
// --gcmode full) with more than deepUnsafeRange unsafe blocks above its safe head, where op-geth can no longer read
// the safe head's state but can roll back to it. The devnet's genesis is in the past, so the sequencer builds that
// backlog in seconds; the batcher posts a few blocks, then stops until the halt.
//
// op-geth rolls its state back one block at a time (a few ms each): while it does, its latest block only goes down,
// and from the moment replicator_halt returns it is within what derivation produced (the safe head, then what
// derivation adds), for a minute after the batcher comes back and derivation builds on that safe head (op-node used
// to exit there with "missing trie node"). The replicator then resumes and replicates to the sequencer's head.
func TestHaltDeepUnsafeRangeOnDefaultOpGeth(t *testing.T) {
	sys := dsl.Start(t, devnet.Config{
		L2GenesisAge:        2400 * time.Second, // the batcher may post a few hundred blocks before it stops
		BatcherStopped:      true,
		SequencerWindowSize: 3600, // two hours of L1: the backlog's batches are all in time
	})
	seq := sys.Sequencer.EL
	// A safe head above genesis, whose state op-geth will not keep readable (genesis' state it always has).
	sys.SetBatching(true)
	sys.WaitFor(2*time.Minute, "the sequencer's first safe blocks", func(ctx context.Context) (bool, error) {
		ss, err := sys.Sequencer.CL.SyncStatus(ctx)
		return err == nil && ss.SafeL2.Number > 0, err
	})
	sys.SetBatching(false)

	rep := sys.AddReplicator("replicator", devnet.WithSource(seq.WS), devnet.WithHaltPolicy("manual"))
	var safe uint64
	sys.WaitFor(5*time.Minute, fmt.Sprintf("the replicator %d blocks above its safe head", deepUnsafeRange),
		func(ctx context.Context) (bool, error) {
			st, err := rep.API.Status(ctx)
			if err != nil {
				return false, err
			}
			safe = st.Safe.Number
			return safe > 0 && st.LastReplicated.Number >= safe+deepUnsafeRange+10, nil
		})
	rep.EL.RequireNoStateAt(safe) // op-geth as operators run it: the safe head's state cannot be read
	head := rep.EL.NumberAt(rpc.LatestBlockNumber)

	stop := rep.SampleHeads()
	halted := rep.HaltByOperator("deep unsafe range")
	rewound := time.Now() // replicator_halt returns once op-geth is rewound
	require.Empty(t, halted.RewindError)
	t.Logf("op-geth rolled back from block %d to the safe head %d in %s (replicator_halt's answer)", head, safe,
		rewound.Sub(halted.Since).Round(time.Millisecond))

	// The batcher back: derivation builds on the rolled-back safe head, for a minute, with op-node alive.
	sys.SampleFor(5*time.Second, func() {})
	sys.SetBatching(true)
	sys.SampleFor(time.Minute, func() {})
	samples := stop()
	samples.RequireRewoundDown(halted.Since, rewound)
	samples.RequireHeldFrom(halted.Since, rewound, time.Minute, seq)
	st := rep.RequireState(api.StateHalted)
	require.Empty(t, st.RewindError)
	require.Greater(t, st.Safe.Number, safe+100, "derivation did not go on from the rolled-back safe head")

	rep.Resume()
	rep.WaitRunning()
	rep.WaitReachesHead(seq)
	rep.RequireRunning()
}

// hashFullUnsafeRange is the most unsafe blocks above its safe head a replicator holds on a hash-scheme op-geth that
// is not an archive node (plugin's hashFullUnsafeRange): it keeps the state of its last 128 blocks only.
const hashFullUnsafeRange = 120

// TestHaltOnHashSchemeOpGeth runs a replicator on a hash-scheme op-geth with --gcmode full (a legacy datadir), where
// debug_setHead cannot stop at a block whose state is gone and would rewind below the safe head. The replicator
// holds no more than hashFullUnsafeRange unsafe blocks above its safe head while the sequencer is hundreds ahead, a
// halt then rewinds op-geth to the safe head (not below it), and after the resume it catches up as the safe head
// moves.
func TestHaltOnHashSchemeOpGeth(t *testing.T) {
	sys := dsl.Start(t, devnet.Config{
		L2GenesisAge:        1200 * time.Second, // the batcher may post a few hundred blocks before it stops
		BatcherStopped:      true,
		SequencerWindowSize: 3600,
	})
	seq := sys.Sequencer.EL
	sys.SetBatching(true)
	sys.WaitFor(2*time.Minute, "the sequencer's first safe blocks", func(ctx context.Context) (bool, error) {
		ss, err := sys.Sequencer.CL.SyncStatus(ctx)
		return err == nil && ss.SafeL2.Number > 0, err
	})
	sys.SetBatching(false)

	rep := sys.AddReplicator("replicator", devnet.WithSource(seq.WS), devnet.WithHaltPolicy("manual"),
		devnet.WithHashSchemeEngine())
	// At the bound, with the sequencer (still building its backlog) far enough ahead to tell.
	sys.WaitFor(2*time.Minute, "the replicator at the unsafe range it can rewind", func(ctx context.Context) (bool, error) {
		st, err := rep.API.Status(ctx)
		return err == nil && st.Safe.Number > 0 && st.Unsafe.Number >= st.Safe.Number+hashFullUnsafeRange &&
			st.SourceHead.Number > st.Unsafe.Number+100, err
	})
	sys.SampleFor(3*time.Second, func() {
		st := rep.Status()
		require.LessOrEqual(t, st.Unsafe.Number, st.Safe.Number+hashFullUnsafeRange, "beyond the range a halt can rewind")
		require.Greater(t, st.SourceHead.Number, st.Unsafe.Number+100, "the sequencer is not far enough ahead to tell")
	})

	stop := rep.SampleHeads()
	halted := rep.HaltByOperator("hash scheme")
	require.Empty(t, halted.RewindError)
	sys.SampleFor(5*time.Second+dsl.RewindDeadline, func() {})
	stop().RequireHaltHeld(halted.Since, 5*time.Second, seq)
	require.GreaterOrEqual(t, rep.EL.NumberAt(rpc.LatestBlockNumber), halted.Safe.Number, "op-geth was rewound below the safe head")

	rep.Resume()
	sys.SetBatching(true)
	target := seq.NumberAt(rpc.LatestBlockNumber)
	sys.WaitFor(3*time.Minute, fmt.Sprintf("the replicator to reach block %d", target), func(ctx context.Context) (bool, error) {
		n, err := rep.EL.BlockNumber(ctx)
		return err == nil && n >= target, err
	})
	rep.RequireRunning()
}

// TestMisconfiguredReplicatorIsRefused starts replicators that must not start, and checks that the node the
// mistake points at is untouched: --replicator.l2.rpc naming the sequencer's op-geth (the same endpoint as the
// source, and another node's endpoint than the source's), and a light CL node (--l2.follow.source). A halt on such
// a node would have rewound the sequencer's op-geth with debug_setHead. Then a --replicator.l2.rpc that turns into
// the sequencer's op-geth while the replicator runs: found out, and the halt that follows rewinds nothing.
func TestMisconfiguredReplicatorIsRefused(t *testing.T) {
	sys := dsl.Start(t, devnet.Config{})
	seq := sys.Sequencer.EL
	before := seq.IDAt(rpc.LatestBlockNumber)

	for _, tc := range []struct {
		name string
		opts []devnet.FollowerOption
		want string
	}{
		{"l2-rpc-is-the-source", []devnet.FollowerOption{devnet.WithSource(seq.HTTP),
			devnet.WithNodeArgs("--replicator.l2.rpc", seq.HTTP)}, "is the same endpoint as --replicator.source"},
		{"l2-rpc-is-the-sequencer", []devnet.FollowerOption{devnet.WithSource(seq.WS),
			devnet.WithNodeArgs("--replicator.l2.rpc", seq.HTTP)}, "is not this node's op-geth"},
		{"light-cl-node", []devnet.FollowerOption{devnet.WithNodeArgs("--l2.follow.source", sys.Sequencer.CL.URL)},
			"cannot be combined with --l2.follow.source"},
	} {
		logTail := sys.StartRefused(tc.name, devnet.RoleReplicator, tc.opts...)
		require.Contains(t, logTail, tc.want, "%s: op-node's last log lines do not say why it refused", tc.name)
	}

	// At start-up, another node at exactly this node's head passes; while running, it is found out, and a halt then
	// rewinds nothing. A replicator in sync with the sequencer, restarted with --replicator.l2.rpc through a proxy to
	// its own op-geth (the start-up check passes), whose upstream then turns to the sequencer's op-geth.
	rep := sys.AddReplicator("switched", devnet.WithSource(seq.WS), devnet.WithHaltPolicy("manual"))
	rep.WaitReplicating(seq, 5)
	proxy := sys.NewProxy(rep.EL.HTTP)
	require.NoError(t, rep.OpNode.Stop())
	require.NoError(t, rep.OpNode.SetArg("--replicator.l2.rpc", proxy.URL))
	rep.StartAgain()
	// Replicating again, so its start-up check of --replicator.l2.rpc has passed, before the proxy turns: its op-geth
	// is at the head already when op-node restarts, so reaching the head says nothing of op-node's start, and a
	// proxy turned before that check makes op-node refuse to start.
	rep.WaitReplicating(seq, seq.NumberAt(rpc.LatestBlockNumber)+2)
	proxy.SetUpstream(seq.HTTP)
	switched := time.Now()
	var st *api.Status
	// Three strikes within a minute: 10-13 s here with 1 s blocks (a look lands between the sequencer's block and our
	// insert of it about every fourth second).
	sys.WaitFor(time.Minute, "the replicator to find --replicator.l2.rpc is another node", func(ctx context.Context) (bool, error) {
		var err error
		st, err = rep.API.Status(ctx)
		return err == nil && st.L2RPCError != "", err
	})
	require.Contains(t, st.L2RPCError, "is not this node's op-geth")
	t.Logf("--replicator.l2.rpc found to be another node %s after it turned to the sequencer's op-geth",
		time.Since(switched).Round(time.Millisecond))
	atHalt := seq.IDAt(rpc.LatestBlockNumber)
	rep.Halt("operator halt with the wrong --replicator.l2.rpc")
	st = rep.RequireState(api.StateHalted)
	require.Contains(t, st.RewindError, "is not this node's op-geth", "the halt's rewind was not refused")
	require.Equal(t, atHalt.Hash, seq.HashAt(rpc.BlockNumber(atHalt.Number)), "the halt rewound the sequencer")

	// The sequencer's chain was not rewound: the block it had is still there, and it builds on.
	require.Equal(t, before.Hash, seq.HashAt(rpc.BlockNumber(before.Number)), "the sequencer's block was rewound")
	sys.WaitFor(dsl.ReplicationTimeout, "the sequencer to build on", func(ctx context.Context) (bool, error) {
		n, err := seq.BlockNumber(ctx)
		return err == nil && n > before.Number+2, err
	})
}
