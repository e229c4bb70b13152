package e2e

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/rpc"

	"github.com/op-replicator/op-replicator/e2e/devnet"
)

// TestNeverTouchSafe runs a replicator whose source lies about safety (its "safe" and "finalized" blocks are
// the sequencer's latest), next to an L1-only verifier, under transaction load. Sampling for about half a
// minute, it checks that the replicator replicates (its latest block is the sequencer's, and often ahead of
// its safe head), that its safe head is never ahead of what L1 derivation knows (the verifier's safe head,
// within safeGrace), and that no block at or below its safe head is ever rewritten: every block seen at or
// below the safe head keeps its hash until the end.
func TestNeverTouchSafe(t *testing.T) {
	d := devnet.Start(t, devnet.Config{})
	proxy := newProxy(t, d.Sequencer.EL.HTTP)
	proxy.SetLyingTags(true)
	rep := addFollower(t, d, "replicator", devnet.RoleReplicator, devnet.WithSource(proxy.URL))
	verifier := addFollower(t, d, "verifier", devnet.RoleVerifier)
	startTxLoad(t, d, d.Sequencer.EL)
	seq := d.Sequencer.EL

	waitReplicating(t, d, rep, seq, 1)
	// The lie is in effect: the source's "safe" block is far ahead of the chain's real safe head.
	liar, err := devnet.DialEL(proxy.URL)
	require.NoError(t, err)
	defer liar.Close()
	require.Greater(t, header(t, liar, rpc.SafeBlockNumber).Number.Uint64(), header(t, seq, rpc.SafeBlockNumber).Number.Uint64()+1,
		"the proxy does not lie about the safe head")

	var (
		settled      []uint64 // every block number seen at or below the replicator's safe head, in order
		settledHash  []common.Hash
		aheadSamples int
	)
	samples := sampleFor(t, d, 35*time.Second, func() {
		safe := header(t, rep.EL, rpc.SafeBlockNumber)
		latest := header(t, rep.EL, rpc.LatestBlockNumber)
		safeNum, latestNum := safe.Number.Uint64(), latest.Number.Uint64()

		requireSameBlocks(t, rep.EL, seq, latestNum, latestNum)
		requireNotAhead(t, d, "the replicator's safe head", safeNum, verifier.EL, rpc.SafeBlockNumber)
		if latestNum >= safeNum+2 {
			aheadSamples++
		}

		// Remember the blocks that became safe since the last sample: they must be the sequencer's.
		next := uint64(0)
		if len(settled) > 0 {
			next = settled[len(settled)-1] + 1
		}
		if next <= safeNum {
			nums := numberRange(next, safeNum)
			requireSameBlocks(t, rep.EL, seq, next, safeNum)
			hashes, err := hashesAt(t.Context(), rep.EL, nums)
			require.NoError(t, err)
			settled, settledHash = append(settled, nums...), append(settledHash, hashes...)
		}
		// No block that was at or below the safe head has changed since.
		hashes, err := hashesAt(t.Context(), rep.EL, settled)
		require.NoError(t, err)
		for i, n := range settled {
			require.Equal(t, settledHash[i], hashes[i], "the replicator rewrote block %d after it was safe", n)
		}
	})
	t.Logf("%d samples, %d with latest at least 2 blocks ahead of safe; %d blocks settled at or below the safe head",
		samples, aheadSamples, len(settled))
	require.GreaterOrEqual(t, aheadSamples, samples/2, "the replicator was rarely ahead of its safe head: not replicating")
	require.Greater(t, len(settled), 20, "the safe head hardly moved")
}
