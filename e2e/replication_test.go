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
)

// TestReplication runs a replicator whose source is the sequencer's op-geth, under transaction load. It
// checks that the replicator reaches the sequencer's head, with the same hash, by replication (ahead of
// its own safe head), and that at every sample its safe head and its head are the sequencer's blocks at
// those heights and its safe head is not ahead of the sequencer's (see dsl.SafeGrace).
func TestReplication(t *testing.T) {
	sys := dsl.Start(t, devnet.Config{})
	ctx := t.Context()
	replicator := sys.AddReplicator("replicator")
	txs := sys.StartTxLoad(sys.Sequencer.EL)
	seq, rep := sys.Sequencer.EL, replicator.EL

	// Until batches are derived, the safe-head checks only ever see genesis.
	sys.WaitFor(time.Minute, "the replicator's first safe block", func(ctx context.Context) (bool, error) {
		_, safe, err := rep.ConsistentWith(ctx, seq)
		return err == nil && safe.Number.Uint64() > 0, err
	})

	userTxs := 0
	for range 3 {
		target := seq.HeaderAt(rpc.LatestBlockNumber)
		targetNum := target.Number.Uint64()
		sys.WaitFor(30*time.Second, fmt.Sprintf("the replicator to reach sequencer block %d", targetNum),
			func(ctx context.Context) (bool, error) {
				head, safe, err := rep.ConsistentWith(ctx, seq)
				if err != nil || head.Number.Uint64() < targetNum {
					return false, err
				}
				got, err := rep.Header(ctx, rpc.BlockNumber(targetNum))
				if err != nil {
					return false, err
				}
				require.Equal(t, target.Hash(), got.Hash(), "replicator block %d", targetNum)
				require.Less(t, safe.Number.Uint64(), targetNum,
					"the replicator's safe head had reached block %d already: it was derived, not replicated", targetNum)
				return true, nil
			})
		count, err := rep.TransactionCount(ctx, target.Hash())
		require.NoError(t, err)
		userTxs += int(count) - 1 // the first transaction is the L1-info deposit

		// Let the sequencer build (and the batcher batch) more blocks, checking all along.
		sys.WaitFor(30*time.Second, fmt.Sprintf("sequencer block %d", targetNum+5),
			func(ctx context.Context) (bool, error) {
				if _, _, err := rep.ConsistentWith(ctx, seq); err != nil {
					return false, err
				}
				n, err := seq.BlockNumber(ctx)
				return n >= targetNum+5, err
			})
	}
	require.Positive(t, userTxs, "the replicated blocks carried no user transactions")
	require.Zero(t, txs.Failed(), "transactions the sequencer rejected")
	t.Logf("sent %d transactions; replicated target blocks carried %d", txs.Sent(), userTxs)
}
