package e2e

import (
	"context"
	"fmt"
	"sync"
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
)

// headSamplePeriod is how often sampleHeads looks at a node.
const headSamplePeriod = 100 * time.Millisecond

// rewindDeadline is how soon after a halt op-geth's latest block must be what derivation produced.
const rewindDeadline = time.Second

// headSample is one look at a node as its users see it: op-geth's latest block, then op-node's sync status.
type headSample struct {
	at     time.Time
	latest eth.BlockID
	ss     *eth.SyncStatus
}

// sampleHeads looks at n every headSamplePeriod until the returned stop is called, which returns the samples.
func sampleHeads(t *testing.T, n *devnet.Node) (stop func() []headSample) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	var (
		mu      sync.Mutex
		samples []headSample
		done    = make(chan struct{})
	)
	go func() {
		defer close(done)
		ticker := time.NewTicker(headSamplePeriod)
		defer ticker.Stop()
		for {
			at := time.Now()
			// latest first: the pending safe head read afterwards can only be higher.
			latest, err := n.EL.BlockID(ctx, rpc.LatestBlockNumber)
			if err == nil {
				var ss *eth.SyncStatus
				if ss, err = n.CL.SyncStatus(ctx); err == nil {
					mu.Lock()
					samples = append(samples, headSample{at: at, latest: latest, ss: ss})
					mu.Unlock()
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-ticker.C:
			}
		}
	}()
	return func() []headSample {
		cancel()
		<-done
		mu.Lock()
		defer mu.Unlock()
		return samples
	}
}

// requireHaltHeldInOpGeth fails unless, in every sample from rewindDeadline after the halt (since) on, op-geth's
// latest block is one derivation produced: not above op-node's pending safe head, and canonical's block at that
// height. It needs samples covering at least window after the deadline.
func requireHaltHeldInOpGeth(t *testing.T, samples []headSample, since time.Time, window time.Duration, canonical *devnet.EL) {
	t.Helper()
	from := since.Add(rewindDeadline)
	var checked []headSample
	for _, s := range samples {
		if s.at.Before(from) {
			continue
		}
		require.LessOrEqual(t, s.latest.Number, s.ss.PendingSafeL2.Number,
			"%s after the halt, op-geth served block %s as latest, above op-node's pending safe head %s (safe %s)",
			s.at.Sub(since).Round(time.Millisecond), s.latest, s.ss.PendingSafeL2, s.ss.SafeL2)
		checked = append(checked, s)
	}
	require.NotEmpty(t, checked, "no sample after the rewind deadline")
	require.GreaterOrEqual(t, checked[len(checked)-1].at.Sub(from), window-headSamplePeriod, "the samples cover too short a window")
	nums := make([]uint64, len(checked))
	for i, s := range checked {
		nums[i] = s.latest.Number
	}
	want, err := hashesAt(t.Context(), canonical, nums)
	require.NoError(t, err)
	for i, s := range checked {
		require.Equal(t, want[i], s.latest.Hash, "%s after the halt, op-geth's latest block %s is not on the canonical chain",
			s.at.Sub(since).Round(time.Millisecond), s.latest)
	}
	t.Logf("op-geth's latest block stayed within what derivation produced in %d samples over %s from %s after the halt",
		len(checked), checked[len(checked)-1].at.Sub(from).Round(time.Millisecond), rewindDeadline)
}

// TestHaltRewindsAbandonedChain has a replicator follow a second sequencer's chain (batching off, so its safe head
// stays at genesis), then switches its source to the real sequencer: the replicator halts with head-mismatch, and
// the blocks it had replicated are now a chain the sequencer does not have. Users of its op-geth must not be
// served them: within a second of the halt, and while halted, op-geth's latest block is the safe head (genesis),
// sampled every 100 ms across the halt.
func TestHaltRewindsAbandonedChain(t *testing.T) {
	d := devnet.Start(t, devnet.Config{})
	setBatching(t, d, false)
	seq := d.Sequencer.EL
	other := addSequencer(t, d, "sequencer-b")
	startTxLoad(t, d, seq) // the second sequencer gets none of these: its blocks differ
	proxy := newProxy(t, other.EL.HTTP)
	rep := addFollower(t, d, "replicator", devnet.RoleReplicator, devnet.WithSource(proxy.URL), devnet.WithHaltPolicy("manual"))

	st := waitReplicating(t, d, rep, other.EL, 10)
	require.Zero(t, st.Safe.Number, "blocks were batched")
	abandoned, err := hashesAt(t.Context(), rep.EL, numberRange(1, st.LastReplicated.Number))
	require.NoError(t, err)
	theirs, err := hashesAt(t.Context(), seq, numberRange(1, st.LastReplicated.Number))
	require.NoError(t, err)
	require.NotEqual(t, theirs[len(theirs)-1], abandoned[len(abandoned)-1], "the replicated chain is the sequencer's")

	stop := sampleHeads(t, rep)
	proxy.SetUpstream(seq.HTTP)
	halted := waitHalted(t, d, rep, reasonHeadMismatch)
	sampleFor(t, d, 5*time.Second+rewindDeadline, func() {})
	samples := stop()

	requireHaltHeldInOpGeth(t, samples, halted.Since, 5*time.Second, seq)
	latest := header(t, rep.EL, rpc.LatestBlockNumber)
	require.Zero(t, latest.Number.Uint64(), "op-geth's latest block is not the safe head (genesis)")
	for i, h := range abandoned {
		if h != theirs[i] {
			requireNoBlockAt(t, rep.EL, uint64(i+1), h, "a block of the abandoned chain")
		}
	}
}

// requireNoBlockAt fails if h is el's canonical block at height n.
func requireNoBlockAt(t *testing.T, el *devnet.EL, n uint64, h common.Hash, what string) {
	t.Helper()
	got, err := el.BlockID(t.Context(), rpc.BlockNumber(n))
	if err == nil {
		require.NotEqual(t, h, got.Hash, "%s (%d) is still canonical on %s", what, n, el.HTTP)
	}
}

// TestHaltSurvivesRestart halts a manual and a timed (10 minutes) replicator, kills their op-nodes with SIGKILL
// and restarts them with the same flags: both come back halted, with the same reason, detail, start and end,
// replicate nothing, and take nothing from admin_postUnsafePayload (the sequencer's next blocks posted with the
// batcher paused, so the safe head stands still). replicator_resume works after the restart.
func TestHaltSurvivesRestart(t *testing.T) {
	d := devnet.Start(t, devnet.Config{})
	seq := d.Sequencer.EL
	manual := addFollower(t, d, "manual", devnet.RoleReplicator, devnet.WithHaltPolicy("manual"))
	timed := addFollower(t, d, "timed", devnet.RoleReplicator, devnet.WithHaltDuration(10*time.Minute))
	startTxLoad(t, d, seq)
	reps := []*devnet.Node{manual, timed}
	before := map[*devnet.Node]*devnet.ReplicatorStatus{}
	for _, rep := range reps {
		waitReplicating(t, d, rep, seq, 5)
		before[rep] = haltByOperator(t, d, rep)
	}
	require.NotNil(t, before[timed].ResumeAt)

	for _, rep := range reps {
		require.NoError(t, rep.OpNode.Kill())
		require.NoError(t, rep.Start(t.Context()))
		after := status(t, rep)
		require.Equal(t, stateHalted, after.State, "%s came back running after a restart", rep.Name)
		require.Equal(t, reasonOperator, after.HaltReason)
		require.Equal(t, before[rep].HaltDetail, after.HaltDetail)
		require.True(t, before[rep].Since.Equal(after.Since), "%s: halted since %s, before the restart %s", rep.Name, after.Since, before[rep].Since)
		if before[rep].ResumeAt != nil {
			require.NotNil(t, after.ResumeAt)
			require.True(t, before[rep].ResumeAt.Equal(*after.ResumeAt), "%s: resumes at %s, before the restart %s", rep.Name, after.ResumeAt, before[rep].ResumeAt)
		}
	}
	// Restarted and halted, they are plain L1 verifiers: nothing above what derivation produced.
	sampleFor(t, d, 5*time.Second, func() {
		for _, rep := range reps {
			requireHalted(t, rep)
		}
	})

	t.Run("admin_postUnsafePayload is refused while halted", func(t *testing.T) {
		setBatching(t, d, false)
		// Derivation is done with what was batched once the sequencer's safe head has not moved for three L1
		// blocks (a batch in flight lands within one or two) and the replicator's has reached it.
		var seqSafe eth.L2BlockRef
		var since time.Time
		require.NoError(t, d.WaitFor(t.Context(), time.Minute, "the manual replicator to derive everything batched",
			func(ctx context.Context) (bool, error) {
				seqStatus, err := d.Sequencer.CL.SyncStatus(ctx)
				if err != nil {
					return false, err
				}
				if seqStatus.SafeL2 != seqSafe {
					seqSafe, since = seqStatus.SafeL2, time.Now()
				}
				ss, err := manual.CL.SyncStatus(ctx)
				return err == nil && time.Since(since) > 3*devnet.L1BlockTime && ss.SafeL2 == seqSafe && ss.UnsafeL2 == seqSafe, err
			}))
		head := header(t, manual.EL, rpc.LatestBlockNumber).Number.Uint64()
		posted := postNextBlocks(t, d, manual, head, 3)

		stop := sampleHeads(t, manual)
		sampleFor(t, d, 5*time.Second, func() { requireHalted(t, manual) })
		samples := stop()
		for _, s := range samples {
			require.LessOrEqual(t, s.latest.Number, s.ss.PendingSafeL2.Number, "op-geth's latest %s is above the pending safe head %s", s.latest, s.ss.PendingSafeL2)
			require.LessOrEqual(t, s.ss.UnsafeL2.Number, s.ss.PendingSafeL2.Number, "op-node's unsafe head %s moved by the admin API", s.ss.UnsafeL2)
		}
		for _, p := range posted {
			requireNoBlock(t, manual.EL, p, "a block posted with admin_postUnsafePayload")
		}
		setBatching(t, d, true)
	})

	t.Run("resume after the restart", func(t *testing.T) {
		for _, rep := range reps {
			require.NoError(t, rep.CL.ReplicatorResume(t.Context()))
			require.Equal(t, stateRunning, status(t, rep).State)
			waitReachesHead(t, d, rep, seq)
		}
	})
}

// postNextBlocks posts the sequencer's blocks after height head to n with admin_postUnsafePayload, and returns
// their hashes.
func postNextBlocks(t *testing.T, d *devnet.Devnet, n *devnet.Node, head uint64, count int) []common.Hash {
	t.Helper()
	l2, err := sources.NewL2Client(client.NewBaseRPCClient(d.Sequencer.EL.RPC), log.Root(), nil,
		sources.L2ClientSimpleConfig(d.L2.Rollup, true, 8, 8))
	require.NoError(t, err)
	var posted []common.Hash
	for i := uint64(1); i <= uint64(count); i++ {
		var env *eth.ExecutionPayloadEnvelope
		require.NoError(t, d.WaitFor(t.Context(), replicationTimeout, fmt.Sprintf("the sequencer's block %d", head+i),
			func(ctx context.Context) (bool, error) {
				env, err = l2.PayloadByNumber(ctx, head+i)
				return err == nil, nil
			}))
		require.NoError(t, n.CL.RPC.CallContext(t.Context(), nil, "admin_postUnsafePayload", env))
		posted = append(posted, env.ExecutionPayload.BlockHash)
	}
	return posted
}

// TestHaltIsPrompt gives a replicator a source that answers every request just under the request timeout:
// replicator_halt and replicator_resume take effect within a second all the same, op-geth included.
func TestHaltIsPrompt(t *testing.T) {
	const requestTimeout = 3 * time.Second
	d := devnet.Start(t, devnet.Config{})
	seq := d.Sequencer.EL
	proxy := newProxy(t, seq.HTTP)
	rep := addFollower(t, d, "replicator", devnet.RoleReplicator, devnet.WithSource(proxy.URL), devnet.WithHaltPolicy("manual"),
		devnet.WithNodeArgs("--replicator.request-timeout", requestTimeout.String()))
	startTxLoad(t, d, seq)
	waitReplicating(t, d, rep, seq, 5)

	proxy.SetDelay(requestTimeout - 300*time.Millisecond)
	// A round is waiting on the slow source: the source's head moves on while the replicator's does not.
	require.NoError(t, d.WaitFor(t.Context(), replicationTimeout, "the replicator to fall behind its slow source",
		func(ctx context.Context) (bool, error) {
			st, err := rep.CL.ReplicatorStatus(ctx)
			if err != nil {
				return false, err
			}
			head, err := seq.BlockNumber(ctx)
			return err == nil && head > st.Unsafe.Number+2, err
		}))

	stop := sampleHeads(t, rep)
	start := time.Now()
	require.NoError(t, rep.CL.ReplicatorHalt(t.Context(), "prompt"))
	took := time.Since(start)
	st := status(t, rep)
	require.Equal(t, stateHalted, st.State)
	require.Less(t, took, time.Second, "replicator_halt took %s with a source answering in %s", took, requestTimeout-300*time.Millisecond)
	sampleFor(t, d, 3*time.Second+rewindDeadline, func() {})
	requireHaltHeldInOpGeth(t, stop(), st.Since, 3*time.Second, seq)

	start = time.Now()
	require.NoError(t, rep.CL.ReplicatorResume(t.Context()))
	took = time.Since(start)
	require.Equal(t, stateRunning, status(t, rep).State)
	require.Less(t, took, time.Second, "replicator_resume took %s", took)

	// replicator_halt without a detail.
	require.NoError(t, rep.CL.RPC.CallContext(t.Context(), nil, "replicator_halt"))
	st = status(t, rep)
	require.Equal(t, stateHalted, st.State)
	require.Equal(t, reasonOperator, st.HaltReason)
	require.Empty(t, st.HaltDetail)
	require.NoError(t, rep.CL.ReplicatorResume(t.Context()))
	proxy.SetDelay(0)
	waitReachesHead(t, d, rep, seq)
}
