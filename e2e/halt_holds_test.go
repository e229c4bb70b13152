package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/log"
	"github.com/ethereum/go-ethereum/rpc"

	"github.com/ethereum-optimism/optimism/op-service/client"
	"github.com/ethereum-optimism/optimism/op-service/eth"
	"github.com/ethereum-optimism/optimism/op-service/sources"

	"github.com/op-replicator/op-replicator/e2e/devnet"
	"github.com/op-replicator/op-replicator/e2e/dsl"
	"github.com/op-replicator/op-replicator/plugin/api"
)

// TestHaltRewindsAbandonedChain has a replicator follow a second sequencer's chain (batching off, so its safe head
// stays at genesis), then switches its source to the real sequencer: the replicator halts with head-mismatch, and
// the blocks it had replicated are now a chain the sequencer does not have. Users of its op-geth must not be
// served them: within a second of the halt, and while halted, op-geth's latest block is the safe head (genesis),
// sampled every 100 ms across the halt.
func TestHaltRewindsAbandonedChain(t *testing.T) {
	sys := dsl.Start(t, devnet.Config{})
	sys.SetBatching(false)
	seq := sys.Sequencer.EL
	other := sys.AddSequencer("sequencer-b")
	sys.StartTxLoad(seq) // the second sequencer gets none of these: its blocks differ
	proxy := sys.NewProxy(other.EL.HTTP)
	rep := sys.AddReplicator("replicator", devnet.WithSource(proxy.URL), devnet.WithHaltPolicy("manual"))

	st := rep.WaitReplicating(other.EL, 10)
	require.Zero(t, st.Safe.Number, "blocks were batched")
	abandoned := rep.EL.Hashes(devnet.NumberRange(1, st.LastReplicated.Number))
	theirs := seq.Hashes(devnet.NumberRange(1, st.LastReplicated.Number))
	require.NotEqual(t, theirs[len(theirs)-1], abandoned[len(abandoned)-1], "the replicated chain is the sequencer's")

	stop := rep.SampleHeads()
	proxy.SetUpstream(seq.HTTP)
	halted := rep.WaitHalted(api.ReasonHeadMismatch)
	sys.SampleFor(5*time.Second+dsl.RewindDeadline, func() {})
	stop().RequireHaltHeld(halted.Since, 5*time.Second, seq)

	require.Zero(t, rep.EL.NumberAt(rpc.LatestBlockNumber), "op-geth's latest block is not the safe head (genesis)")
	for i, h := range abandoned {
		if h != theirs[i] {
			rep.EL.RequireNoBlockAt(uint64(i+1), h, "a block of the abandoned chain")
		}
	}
}

// TestHaltSurvivesRestart halts a manual and a timed (10 minutes) replicator, kills their op-nodes with SIGKILL
// and restarts them with the same flags: both come back halted, with the same reason, detail, start and end,
// replicate nothing, and take nothing from admin_postUnsafePayload (the sequencer's next blocks posted with the
// batcher paused, so the safe head stands still). replicator_resume works after the restart.
func TestHaltSurvivesRestart(t *testing.T) {
	sys := dsl.Start(t, devnet.Config{})
	seq := sys.Sequencer.EL
	manual := sys.AddReplicator("manual", devnet.WithHaltPolicy("manual"))
	timed := sys.AddReplicator("timed", devnet.WithHaltDuration(10*time.Minute))
	sys.StartTxLoad(seq)
	reps := []*dsl.Replicator{manual, timed}
	before := map[*dsl.Replicator]*api.Status{}
	for _, rep := range reps {
		rep.WaitReplicating(seq, 5)
		before[rep] = rep.HaltByOperator("e2e test")
	}
	require.NotNil(t, before[timed].ResumeAt)

	for _, rep := range reps {
		require.NoError(t, rep.OpNode.Kill())
		rep.StartAgain()
		after := rep.Status()
		require.Equal(t, api.StateHalted, after.State, "%s came back running after a restart", rep.Name)
		require.Equal(t, api.ReasonOperator, after.HaltReason)
		require.Equal(t, before[rep].HaltDetail, after.HaltDetail)
		require.True(t, before[rep].Since.Equal(after.Since), "%s: halted since %s, before the restart %s", rep.Name, after.Since, before[rep].Since)
		if before[rep].ResumeAt != nil {
			require.NotNil(t, after.ResumeAt)
			require.True(t, before[rep].ResumeAt.Equal(*after.ResumeAt), "%s: resumes at %s, before the restart %s", rep.Name, after.ResumeAt, before[rep].ResumeAt)
		}
	}
	// Restarted and halted, they are plain L1 verifiers: nothing above what derivation produced.
	sys.SampleFor(5*time.Second, func() {
		for _, rep := range reps {
			rep.RequireHaltedByOperator()
		}
	})

	// admin_postUnsafePayload is refused while halted.
	sys.SetBatching(false)
	// Derivation is done with what was batched once the sequencer's safe head has not moved for three L1
	// blocks (a batch in flight lands within one or two) and the replicator's has reached it.
	var seqSafe eth.L2BlockRef
	var since time.Time
	sys.WaitFor(time.Minute, "the manual replicator to derive everything batched",
		func(ctx context.Context) (bool, error) {
			seqStatus, err := sys.Sequencer.CL.SyncStatus(ctx)
			if err != nil {
				return false, err
			}
			if seqStatus.SafeL2 != seqSafe {
				seqSafe, since = seqStatus.SafeL2, time.Now()
			}
			ss, err := manual.CL.SyncStatus(ctx)
			return err == nil && time.Since(since) > 3*devnet.L1BlockTime && ss.SafeL2 == seqSafe && ss.UnsafeL2 == seqSafe, err
		})
	head := manual.EL.NumberAt(rpc.LatestBlockNumber)
	posted := postNextBlocks(t, sys, manual.Node, head, 3)

	stop := manual.SampleHeads()
	sys.SampleFor(5*time.Second, manual.RequireHaltedByOperator)
	for _, s := range stop().Samples {
		require.LessOrEqual(t, s.Latest.Number, s.SS.PendingSafeL2.Number, "op-geth's latest %s is above the pending safe head %s", s.Latest, s.SS.PendingSafeL2)
		require.LessOrEqual(t, s.SS.UnsafeL2.Number, s.SS.PendingSafeL2.Number, "op-node's unsafe head %s moved by the admin API", s.SS.UnsafeL2)
	}
	for _, p := range posted {
		manual.EL.RequireNoBlock(p, "a block posted with admin_postUnsafePayload")
	}
	sys.SetBatching(true)

	// replicator_resume works after the restart.
	for _, rep := range reps {
		rep.Resume()
		rep.RequireRunning()
		rep.WaitReachesHead(seq)
	}
}

// postNextBlocks posts the sequencer's blocks after height head to n with admin_postUnsafePayload, and returns
// their hashes.
func postNextBlocks(t *testing.T, sys *dsl.System, n *dsl.Node, head uint64, count int) []common.Hash {
	t.Helper()
	l2, err := sources.NewL2Client(client.NewBaseRPCClient(sys.Sequencer.EL.RPC), log.Root(), nil,
		sources.L2ClientSimpleConfig(sys.Net.L2.Rollup, true, 8, 8))
	require.NoError(t, err)
	var posted []common.Hash
	for i := uint64(1); i <= uint64(count); i++ {
		var env *eth.ExecutionPayloadEnvelope
		sys.WaitFor(dsl.ReplicationTimeout, fmt.Sprintf("the sequencer's block %d", head+i),
			func(ctx context.Context) (bool, error) {
				env, err = l2.PayloadByNumber(ctx, head+i)
				return err == nil, nil
			})
		require.NoError(t, n.CL.RPC.CallContext(t.Context(), nil, "admin_postUnsafePayload", env))
		posted = append(posted, env.ExecutionPayload.BlockHash)
	}
	return posted
}

// TestHaltIsPrompt gives a replicator a source that answers every request just under the request timeout:
// replicator_halt and replicator_resume take effect within a second all the same, op-geth included.
func TestHaltIsPrompt(t *testing.T) {
	const requestTimeout = 3 * time.Second
	sys := dsl.Start(t, devnet.Config{})
	seq := sys.Sequencer.EL
	proxy := sys.NewProxy(seq.HTTP)
	rep := sys.AddReplicator("replicator", devnet.WithSource(proxy.URL), devnet.WithHaltPolicy("manual"),
		devnet.WithNodeArgs("--replicator.request-timeout", requestTimeout.String()))
	sys.StartTxLoad(seq)
	rep.WaitReplicating(seq, 5)

	proxy.SetDelay(requestTimeout - 300*time.Millisecond)
	// A round is waiting on the slow source: the source's head moves on while the replicator's does not.
	sys.WaitFor(dsl.ReplicationTimeout, "the replicator to fall behind its slow source",
		func(ctx context.Context) (bool, error) {
			st, err := rep.API.Status(ctx)
			if err != nil {
				return false, err
			}
			head, err := seq.BlockNumber(ctx)
			return err == nil && head > st.Unsafe.Number+2, err
		})

	stop := rep.SampleHeads()
	start := time.Now()
	rep.Halt("prompt")
	took := time.Since(start)
	st := rep.RequireState(api.StateHalted)
	require.Less(t, took, time.Second, "replicator_halt took %s with a source answering in %s", took, requestTimeout-300*time.Millisecond)
	sys.SampleFor(3*time.Second+dsl.RewindDeadline, func() {})
	stop().RequireHaltHeld(st.Since, 3*time.Second, seq)

	start = time.Now()
	rep.Resume()
	took = time.Since(start)
	rep.RequireRunning()
	require.Less(t, took, time.Second, "replicator_resume took %s", took)

	// replicator_halt without a detail.
	rep.Halt("")
	st = rep.RequireState(api.StateHalted)
	require.Equal(t, api.ReasonOperator, st.HaltReason)
	require.Empty(t, st.HaltDetail)
	rep.Resume()
	proxy.SetDelay(0)
	rep.WaitReachesHead(seq)
}
