package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/rpc"

	"github.com/ethereum-optimism/optimism/op-service/eth"

	"github.com/op-replicator/op-replicator/e2e/devnet"
)

// Halt reasons and states as replicator_status reports them (plugin/halt.go).
const (
	stateRunning = "running"
	stateHalted  = "halted"

	reasonHeadMismatch       = "head-mismatch"
	reasonInvalidPayload     = "invalid-payload"
	reasonUnsafeReorg        = "unsafe-reorg"
	reasonOperator           = "operator"
	reasonAttributesMismatch = "attributes-mismatch"
)

const (
	// txRate is the transactions per second the scenarios send to the sequencer.
	txRate = 20
	// samplePeriod is how often a property that must hold over a window is sampled.
	samplePeriod = 200 * time.Millisecond
	// replicationTimeout bounds how long a replicator may take to start replicating, or to catch up with
	// its source's head again after a restart, an outage or a halt.
	replicationTimeout = 30 * time.Second
	// haltTimeout bounds how long a replicator may take to notice a disagreement and halt.
	haltTimeout = 30 * time.Second
)

// safeGrace is how long the sequencer may take to reach a safe head the replicator already has. Every node
// derives its safe head from L1 on its own and polls L1 at its own phase (every second), so a follower can
// be first by up to about a second. A replicator counting replicated blocks as safe would be ahead by many
// blocks until the next batch.
const safeGrace = 2 * devnet.L1BlockTime

// addFollower is Devnet.AddFollower for tests.
func addFollower(t *testing.T, d *devnet.Devnet, name string, role devnet.Role, opts ...devnet.FollowerOption) *devnet.Node {
	t.Helper()
	n, err := d.AddFollower(t.Context(), name, role, opts...)
	require.NoError(t, err, "add %s", name)
	return n
}

// addSequencer is Devnet.AddSequencer for tests.
func addSequencer(t *testing.T, d *devnet.Devnet, name string) *devnet.Node {
	t.Helper()
	n, err := d.AddSequencer(t.Context(), name)
	require.NoError(t, err, "add %s", name)
	return n
}

// newProxy starts a Proxy in front of upstream, closed at the end of the test.
func newProxy(t *testing.T, upstream string) *devnet.Proxy {
	t.Helper()
	p, err := devnet.NewProxy(upstream)
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// startTxLoad sends txRate transfers a second to el until the end of the test.
func startTxLoad(t *testing.T, d *devnet.Devnet, el *devnet.EL) *devnet.TxGen {
	t.Helper()
	txs, err := devnet.StartTxGen(t.Context(), el, d.Keys.L2Accounts, txRate)
	require.NoError(t, err)
	t.Cleanup(txs.Stop)
	return txs
}

// setBatching is Devnet.SetBatching for tests.
func setBatching(t *testing.T, d *devnet.Devnet, on bool) {
	t.Helper()
	require.NoError(t, d.SetBatching(t.Context(), on))
}

// status returns n's replicator_status.
func status(t *testing.T, n *devnet.Node) *devnet.ReplicatorStatus {
	t.Helper()
	st, err := n.CL.ReplicatorStatus(t.Context())
	require.NoError(t, err)
	return st
}

// header returns the header of el's block at a number or label.
func header(t *testing.T, el *devnet.EL, n rpc.BlockNumber) *types.Header {
	t.Helper()
	h, err := el.Header(t.Context(), n)
	require.NoError(t, err)
	return h
}

// waitReplicating waits until rep has replicated src's blocks up to at least height minHeight: the last block
// it replicated is src's block at that height and above rep's safe head (so it came from the source, not
// from derivation), and rep's latest block is src's block too. It returns that status.
func waitReplicating(t *testing.T, d *devnet.Devnet, rep *devnet.Node, src *devnet.EL, minHeight uint64) *devnet.ReplicatorStatus {
	t.Helper()
	var st *devnet.ReplicatorStatus
	require.NoError(t, d.WaitFor(t.Context(), replicationTimeout, fmt.Sprintf("%s to replicate up to block %d", rep.Name, minHeight),
		func(ctx context.Context) (bool, error) {
			var err error
			if st, err = rep.CL.ReplicatorStatus(ctx); err != nil {
				return false, err
			}
			last := st.LastReplicated
			if st.State != stateRunning || last.Number < max(minHeight, 1) || last.Number <= st.Safe.Number {
				return false, nil
			}
			want, err := src.BlockID(ctx, rpc.BlockNumber(last.Number))
			if err != nil || want != last {
				return false, err
			}
			latest, err := rep.EL.BlockID(ctx, rpc.LatestBlockNumber)
			if err != nil {
				return false, err
			}
			srcLatest, err := src.BlockID(ctx, rpc.BlockNumber(latest.Number))
			return err == nil && srcLatest == latest, err
		}))
	return st
}

// waitReachesHead takes src's current head as a target and waits until rep's chain has src's block at that
// height and rep's replicator has inserted a block at or above it: rep is back at the head by replication. (Whether
// the target block itself was replicated is a race with derivation, which in this devnet is 2 to 4 blocks behind
// the head: after an outage the replicator may start one block behind derivation, and overtake it.) It returns the
// target.
func waitReachesHead(t *testing.T, d *devnet.Devnet, rep *devnet.Node, src *devnet.EL) eth.BlockID {
	t.Helper()
	target, err := src.BlockID(t.Context(), rpc.LatestBlockNumber)
	require.NoError(t, err)
	require.NoError(t, d.WaitFor(t.Context(), replicationTimeout, fmt.Sprintf("%s to reach block %s by replication", rep.Name, target),
		func(ctx context.Context) (bool, error) {
			got, err := rep.EL.BlockID(ctx, rpc.BlockNumber(target.Number))
			if errors.Is(err, ethereum.NotFound) {
				return false, nil
			} else if err != nil {
				return false, err
			}
			require.Equal(t, target, got, "%s has another block at the source's height", rep.Name)
			st, err := rep.CL.ReplicatorStatus(ctx)
			if err != nil || st.LastReplicated.Number < target.Number {
				return false, err
			}
			replicated, err := src.BlockID(ctx, rpc.BlockNumber(st.LastReplicated.Number))
			if err != nil {
				return false, err
			}
			require.Equal(t, replicated, st.LastReplicated, "%s replicated a block the source does not have", rep.Name)
			return true, nil
		}))
	return target
}

// waitState waits until rep's replicator reports state, and returns that status.
func waitState(t *testing.T, d *devnet.Devnet, rep *devnet.Node, state string, timeout time.Duration) *devnet.ReplicatorStatus {
	t.Helper()
	var st *devnet.ReplicatorStatus
	require.NoError(t, d.WaitFor(t.Context(), timeout, fmt.Sprintf("%s to be %s", rep.Name, state),
		func(ctx context.Context) (bool, error) {
			var err error
			st, err = rep.CL.ReplicatorStatus(ctx)
			return err == nil && st.State == state, err
		}))
	return st
}

// waitHalted waits until rep's replicator is halted and requires the halt reason to be reason.
func waitHalted(t *testing.T, d *devnet.Devnet, rep *devnet.Node, reason string) *devnet.ReplicatorStatus {
	t.Helper()
	st := waitState(t, d, rep, stateHalted, haltTimeout)
	require.Equal(t, reason, st.HaltReason, "halt reason of %s (detail: %s)", rep.Name, st.HaltDetail)
	t.Logf("%s halted: %s: %s", rep.Name, st.HaltReason, st.HaltDetail)
	return st
}

// requireNoUnsafeBeyondDerived fails unless every block of n's unsafe chain came from L1 derivation: its
// unsafe head is not above its pending safe head (op-node's derivation progress), in one sync status. This
// holds for a plain L1 verifier, and for a replicator only while it is halted.
func requireNoUnsafeBeyondDerived(t *testing.T, n *devnet.Node) {
	t.Helper()
	ss, err := n.CL.SyncStatus(t.Context())
	require.NoError(t, err)
	require.LessOrEqual(t, ss.UnsafeL2.Number, ss.PendingSafeL2.Number,
		"%s has unsafe blocks that derivation did not produce: unsafe %s, pending safe %s, safe %s",
		n.Name, ss.UnsafeL2, ss.PendingSafeL2, ss.SafeL2)
}

// requireNotAhead fails unless ref's block number (at a label) is, or within safeGrace gets, at least mine.
// Nodes poll L1 at their own phase; see safeGrace.
func requireNotAhead(t *testing.T, d *devnet.Devnet, what string, mine uint64, ref *devnet.EL, label rpc.BlockNumber) {
	t.Helper()
	require.NoError(t, d.WaitFor(t.Context(), safeGrace, fmt.Sprintf("%s: the reference's %s block to reach %d", what, label, mine),
		func(ctx context.Context) (bool, error) {
			h, err := ref.Header(ctx, label)
			return err == nil && h.Number.Uint64() >= mine, err
		}), "%s is ahead of the reference", what)
}

// sampleFor calls check every samplePeriod for window (and at least twice: at the start and at the end),
// failing at once on a devnet fault. It returns how many samples were taken.
func sampleFor(t *testing.T, d *devnet.Devnet, window time.Duration, check func()) int {
	t.Helper()
	end := time.Now().Add(window)
	ticker := time.NewTicker(samplePeriod)
	defer ticker.Stop()
	for n := 1; ; n++ {
		require.NoError(t, d.Err(), "devnet fault")
		check()
		if !time.Now().Before(end) {
			return n
		}
		select {
		case <-t.Context().Done():
			t.Fatal("test context ended while sampling")
		case <-ticker.C:
		}
	}
}

// hashesAt returns the hashes of el's blocks with the given numbers, in one batch request. A block el does
// not have is an error.
func hashesAt(ctx context.Context, el *devnet.EL, nums []uint64) ([]common.Hash, error) {
	type block struct {
		Hash common.Hash `json:"hash"`
	}
	results := make([]*block, len(nums))
	batch := make([]rpc.BatchElem, len(nums))
	for i, n := range nums {
		batch[i] = rpc.BatchElem{Method: "eth_getBlockByNumber", Args: []any{hexutil.EncodeUint64(n), false}, Result: &results[i]}
	}
	if err := el.RPC.BatchCallContext(ctx, batch); err != nil {
		return nil, fmt.Errorf("batch eth_getBlockByNumber at %s: %w", el.HTTP, err)
	}
	hashes := make([]common.Hash, len(nums))
	for i, elem := range batch {
		if elem.Error != nil {
			return nil, fmt.Errorf("eth_getBlockByNumber(%d) at %s: %w", nums[i], el.HTTP, elem.Error)
		}
		if results[i] == nil {
			return nil, fmt.Errorf("eth_getBlockByNumber(%d) at %s: %w", nums[i], el.HTTP, ethereum.NotFound)
		}
		hashes[i] = results[i].Hash
	}
	return hashes, nil
}

// numberRange returns from, from+1, ..., to.
func numberRange(from, to uint64) []uint64 {
	var nums []uint64
	for n := from; n <= to; n++ {
		nums = append(nums, n)
	}
	return nums
}

// requireSameBlocks fails unless got has want's blocks at every height from..to.
func requireSameBlocks(t *testing.T, got, want *devnet.EL, from, to uint64) {
	t.Helper()
	nums := numberRange(from, to)
	gotHashes, err := hashesAt(t.Context(), got, nums)
	require.NoError(t, err)
	wantHashes, err := hashesAt(t.Context(), want, nums)
	require.NoError(t, err)
	for i, n := range nums {
		require.Equal(t, wantHashes[i], gotHashes[i], "block %d of %s is not %s's", n, got.HTTP, want.HTTP)
	}
}

// requireNoBlock fails if el has a block with hash h.
func requireNoBlock(t *testing.T, el *devnet.EL, h common.Hash, what string) {
	t.Helper()
	_, err := el.HeaderByHash(t.Context(), h)
	require.ErrorIs(t, err, ethereum.NotFound, "%s (%s) is on %s", what, h, el.HTTP)
}

// requireHaltLogged waits (briefly: the state changes just before the rewind, the line is logged after it)
// for an error-level "Replicator halted" line with the given reason in n's op-node log.
func requireHaltLogged(t *testing.T, d *devnet.Devnet, n *devnet.Node, reason string) {
	t.Helper()
	require.NoError(t, d.WaitFor(t.Context(), 5*time.Second, fmt.Sprintf("an error-level 'Replicator halted' line with reason=%s in %s", reason, n.OpNode.LogPath),
		func(context.Context) (bool, error) {
			return haltLogged(n.OpNode.LogPath, reason)
		}))
}

func haltLogged(path, reason string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	scanner := bufio.NewScanner(f)
	scanner.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for scanner.Scan() {
		line := scanner.Text()
		if strings.Contains(line, "lvl=error") && strings.Contains(line, "Replicator halted") &&
			strings.Contains(line, "reason="+reason) {
			return true, nil
		}
	}
	return false, scanner.Err()
}

// metricValue returns the sum of every series of the named metric at a Prometheus endpoint.
func metricValue(ctx context.Context, url, name string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("scrape %s: %w", url, err)
	}
	defer resp.Body.Close()
	var sum float64
	found := false
	scanner := bufio.NewScanner(resp.Body)
	for scanner.Scan() {
		line := scanner.Text()
		if !strings.HasPrefix(line, name+" ") && !strings.HasPrefix(line, name+"{") {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			return 0, fmt.Errorf("metric line %q: %w", line, err)
		}
		sum, found = sum+v, true
	}
	if err := scanner.Err(); err != nil {
		return 0, fmt.Errorf("scrape %s: %w", url, err)
	}
	if !found {
		return 0, fmt.Errorf("no metric %s at %s", name, url)
	}
	return sum, nil
}

// requireConsistent fails the test unless the replicator's safe and latest blocks are the sequencer's blocks
// at those heights, and the sequencer's safe head is, or within safeGrace gets, at least the replicator's.
// It returns the replicator's latest and safe headers, or an RPC error (which ends nothing: WaitFor tries
// again).
func requireConsistent(ctx context.Context, t *testing.T, d *devnet.Devnet, rep *devnet.EL) (head, safe *types.Header, err error) {
	t.Helper()
	seq := d.Sequencer.EL
	if safe, err = rep.Header(ctx, rpc.SafeBlockNumber); err != nil {
		return nil, nil, err
	}
	if head, err = rep.Header(ctx, rpc.LatestBlockNumber); err != nil {
		return nil, nil, err
	}
	for _, h := range []*types.Header{safe, head} {
		want, err := seq.Header(ctx, rpc.BlockNumber(h.Number.Uint64()))
		if err != nil {
			return nil, nil, err
		}
		require.Equal(t, want.Hash(), h.Hash(), "replicator block %d is not the sequencer's", h.Number)
	}
	require.NoError(t, d.WaitFor(ctx, safeGrace, fmt.Sprintf("the sequencer's safe head to reach the replicator's (%d)", safe.Number),
		func(ctx context.Context) (bool, error) {
			seqSafe, err := seq.Header(ctx, rpc.SafeBlockNumber)
			return err == nil && seqSafe.Number.Cmp(safe.Number) >= 0, err
		}), "replicator safe head ahead of the sequencer's")
	return head, safe, nil
}
