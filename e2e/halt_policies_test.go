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

// timedHalt is the halt duration of the timed replicator in TestHaltPolicies.
const timedHalt = 8 * time.Second

// TestHaltPolicies halts one replicator per halt policy with replicator_halt, on one devnet under transaction
// load, and checks how each halt ends (one replicator each, in turn):
//   - timed: halted (reason operator, unsafe head rewound to what derivation produced) for the configured
//     duration, then it resumes by itself and replicates up to the sequencer's head again;
//   - manual: halted until replicator_resume, then replicating again; without --rpc.enable-admin,
//     replicator_halt does not exist while replicator_status works;
//   - until-synced: while its L1 is unreachable derivation cannot catch up with L1, and it stays halted;
//     once L1 is back and derivation has caught up, it resumes by itself and replicates again.
func TestHaltPolicies(t *testing.T) {
	sys := dsl.Start(t, devnet.Config{})
	seq := sys.Sequencer.EL
	l1 := sys.NewProxy(sys.L1.HTTP)
	timed := sys.AddReplicator("timed", devnet.WithHaltDuration(timedHalt))
	manual := sys.AddReplicator("manual", devnet.WithHaltPolicy("manual"))
	untilSynced := sys.AddReplicator("until-synced", devnet.WithHaltPolicy("until-synced"), devnet.WithL1(l1.URL))
	sys.StartTxLoad(seq)
	for _, rep := range []*dsl.Replicator{timed, manual, untilSynced} {
		rep.WaitReplicating(seq, 5)
	}

	// timed
	{
		st := timed.HaltByOperator("e2e test")
		require.NotNil(t, st.ResumeAt, "a timed halt without resumeAt")
		require.True(t, st.Since.Add(timedHalt).Equal(*st.ResumeAt), "a %s halt since %s resumes at %s", timedHalt, st.Since, *st.ResumeAt)
		// Halted for (most of) the duration: sample up to a second before it ends.
		sys.SampleFor(time.Until(st.ResumeAt.Add(-time.Second)), timed.RequireHaltedByOperator)
		resumed := timed.WaitState(api.StateRunning, timedHalt)
		require.False(t, resumed.Since.Before(*st.ResumeAt), "resumed at %s, before %s", resumed.Since, *st.ResumeAt)
		timed.WaitReachesHead(seq)
	}

	// manual
	{
		manual.HaltByOperator("e2e test")
		sys.SampleFor(15*time.Second, manual.RequireHaltedByOperator)
		manual.Resume()
		manual.RequireRunning()
		manual.WaitReachesHead(seq)
	}

	// admin RPC off
	{
		rep := sys.AddReplicator("no-admin", devnet.WithoutAdminRPC())
		rep.RequireRunning()
		var rpcErr rpc.Error
		for _, err := range []error{rep.API.Halt(t.Context(), "test"), rep.API.Resume(t.Context())} {
			require.ErrorAs(t, err, &rpcErr)
			require.Equal(t, -32601, rpcErr.ErrorCode(), "not a method-not-found error: %v", err)
		}
		rep.RequireRunning()
		require.NoError(t, rep.Stop())
	}

	// until-synced
	{
		// L1 goes first: with L1 reachable, derivation goes idle at the L1 head within a block time of the
		// halt (the rewind itself restarts derivation), and the halt would end before the window starts.
		l1.SetFailure(devnet.FailDown)
		untilSynced.HaltByOperator("e2e test")
		l1Head := sys.L1.NumberAt(rpc.LatestBlockNumber)
		sys.SampleFor(15*time.Second, untilSynced.RequireHaltedByOperator)
		ss := untilSynced.SyncStatus()
		require.LessOrEqual(t, ss.HeadL1.Number, l1Head+1, "the node saw L1 through its proxy while it was down")
		require.Greater(t, sys.L1.NumberAt(rpc.LatestBlockNumber), ss.HeadL1.Number+3, "L1 did not move on meanwhile")

		restored := time.Now()
		l1.SetFailure(devnet.FailNone)
		resumed := untilSynced.WaitState(api.StateRunning, dsl.ReplicationTimeout)
		require.True(t, resumed.Since.After(restored), "resumed at %s, before L1 came back at %s", resumed.Since, restored)
		untilSynced.WaitReachesHead(seq)
	}
}
