package e2e

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ethereum/go-ethereum/rpc"

	"github.com/op-replicator/op-replicator/e2e/devnet"
)

// timedHalt is the halt duration of the timed replicator in TestHaltPolicies.
const timedHalt = 8 * time.Second

// TestHaltPolicies halts one replicator per halt policy with replicator_halt, on one devnet under transaction
// load, and checks how each halt ends:
//   - timed: halted (reason operator, unsafe head rewound to what derivation produced) for the configured
//     duration, then it resumes by itself and replicates up to the sequencer's head again;
//   - manual: halted until replicator_resume, then replicating again; without --rpc.enable-admin,
//     replicator_halt does not exist while replicator_status works;
//   - until-synced: while its L1 is unreachable derivation cannot catch up with L1, and it stays halted;
//     once L1 is back and derivation has caught up, it resumes by itself and replicates again.
func TestHaltPolicies(t *testing.T) {
	d := devnet.Start(t, devnet.Config{})
	seq := d.Sequencer.EL
	l1 := newProxy(t, d.L1.EL.HTTP)
	timed := addFollower(t, d, "timed", devnet.RoleReplicator, devnet.WithHaltDuration(timedHalt))
	manual := addFollower(t, d, "manual", devnet.RoleReplicator, devnet.WithHaltPolicy("manual"))
	untilSynced := addFollower(t, d, "until-synced", devnet.RoleReplicator, devnet.WithHaltPolicy("until-synced"),
		devnet.WithL1(l1.URL))
	startTxLoad(t, d, seq)
	for _, rep := range []*devnet.Node{timed, manual, untilSynced} {
		waitReplicating(t, d, rep, seq, 5)
	}

	t.Run("timed", func(t *testing.T) {
		st := haltByOperator(t, d, timed)
		require.NotNil(t, st.ResumeAt, "a timed halt without resumeAt")
		require.True(t, st.Since.Add(timedHalt).Equal(*st.ResumeAt), "a %s halt since %s resumes at %s", timedHalt, st.Since, *st.ResumeAt)
		// Halted for (most of) the duration: sample up to a second before it ends.
		sampleFor(t, d, time.Until(st.ResumeAt.Add(-time.Second)), func() { requireHalted(t, timed) })
		resumed := waitState(t, d, timed, stateRunning, timedHalt)
		require.False(t, resumed.Since.Before(*st.ResumeAt), "resumed at %s, before %s", resumed.Since, *st.ResumeAt)
		waitReachesHead(t, d, timed, seq)
	})

	t.Run("manual", func(t *testing.T) {
		haltByOperator(t, d, manual)
		sampleFor(t, d, 15*time.Second, func() { requireHalted(t, manual) })
		require.NoError(t, manual.CL.ReplicatorResume(t.Context()))
		require.Equal(t, stateRunning, status(t, manual).State)
		waitReachesHead(t, d, manual, seq)
	})

	t.Run("admin RPC off", func(t *testing.T) {
		rep := addFollower(t, d, "no-admin", devnet.RoleReplicator, devnet.WithoutAdminRPC())
		defer func() { require.NoError(t, rep.Stop()) }()
		require.Equal(t, stateRunning, status(t, rep).State)
		var rpcErr rpc.Error
		for _, err := range []error{rep.CL.ReplicatorHalt(t.Context(), "test"), rep.CL.ReplicatorResume(t.Context())} {
			require.ErrorAs(t, err, &rpcErr)
			require.Equal(t, -32601, rpcErr.ErrorCode(), "not a method-not-found error: %v", err)
		}
		require.Equal(t, stateRunning, status(t, rep).State)
	})

	t.Run("until-synced", func(t *testing.T) {
		// L1 goes first: with L1 reachable, derivation goes idle at the L1 head within a block time of the
		// halt (the rewind itself restarts derivation), and the halt would end before the window starts.
		l1.SetFailure(devnet.FailDown)
		haltByOperator(t, d, untilSynced)
		l1Head := header(t, d.L1.EL, rpc.LatestBlockNumber).Number.Uint64()
		sampleFor(t, d, 15*time.Second, func() { requireHalted(t, untilSynced) })
		ss, err := untilSynced.CL.SyncStatus(t.Context())
		require.NoError(t, err)
		require.LessOrEqual(t, ss.HeadL1.Number, l1Head+1, "the node saw L1 through its proxy while it was down")
		require.Greater(t, header(t, d.L1.EL, rpc.LatestBlockNumber).Number.Uint64(), ss.HeadL1.Number+3,
			"L1 did not move on meanwhile")

		restored := time.Now()
		l1.SetFailure(devnet.FailNone)
		resumed := waitState(t, d, untilSynced, stateRunning, replicationTimeout)
		require.True(t, resumed.Since.After(restored), "resumed at %s, before L1 came back at %s", resumed.Since, restored)
		waitReachesHead(t, d, untilSynced, seq)
	})
}

// haltByOperator halts rep with replicator_halt and checks the halt right away: reason operator, and the
// unsafe head rewound (nothing in the unsafe chain that derivation did not produce).
func haltByOperator(t *testing.T, d *devnet.Devnet, rep *devnet.Node) *devnet.ReplicatorStatus {
	t.Helper()
	before := status(t, rep)
	require.Equal(t, stateRunning, before.State)
	require.Greater(t, before.Unsafe.Number, before.Safe.Number, "%s has no unsafe blocks to rewind", rep.Name)
	require.NoError(t, rep.CL.ReplicatorHalt(t.Context(), "e2e test"))
	requireNoUnsafeBeyondDerived(t, rep)
	st := status(t, rep)
	require.Equal(t, stateHalted, st.State)
	require.Equal(t, reasonOperator, st.HaltReason)
	require.Equal(t, "e2e test", st.HaltDetail)
	requireHaltLogged(t, d, rep, reasonOperator)
	return st
}

// requireHalted fails unless rep is halted with reason operator and has no unsafe block derivation did not
// produce.
func requireHalted(t *testing.T, rep *devnet.Node) {
	t.Helper()
	st := status(t, rep)
	require.Equal(t, stateHalted, st.State, "%s resumed", rep.Name)
	require.Equal(t, reasonOperator, st.HaltReason)
	requireNoUnsafeBeyondDerived(t, rep)
}
