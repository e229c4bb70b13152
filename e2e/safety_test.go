package e2e

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/rpc"

	"github.com/op-replicator/op-replicator/e2e/devnet"
	"github.com/op-replicator/op-replicator/e2e/dsl"
)

// TestNeverTouchSafe runs a replicator whose source lies about safety (its "safe" and "finalized" blocks are
// the sequencer's latest), next to an L1-only verifier, under transaction load. Sampling for about half a
// minute, it checks that the replicator replicates (its latest block is the sequencer's, and often ahead of
// its safe head), that its safe head is never ahead of what L1 derivation knows (the verifier's safe head,
// within dsl.SafeGrace), and that no block at or below its safe head is ever rewritten: every block seen at or
// below the safe head keeps its hash until the end.
func TestNeverTouchSafe(t *testing.T) {
	sys := dsl.Start(t, devnet.Config{})
	proxy := sys.NewProxy(sys.Sequencer.EL.HTTP)
	proxy.SetLyingTags(true)
	rep := sys.AddReplicator("replicator", devnet.WithSource(proxy.URL))
	verifier := sys.AddFollower("verifier", devnet.RoleVerifier)
	seq := sys.Sequencer.EL
	sys.StartTxLoad(seq)

	rep.WaitReplicating(seq, 1)
	// The lie is in effect: the source's "safe" block is far ahead of the chain's real safe head.
	liar := sys.DialEL(proxy.URL)
	require.Greater(t, liar.NumberAt(rpc.SafeBlockNumber), seq.NumberAt(rpc.SafeBlockNumber)+1,
		"the proxy does not lie about the safe head")

	var (
		settled      []uint64 // every block number seen at or below the replicator's safe head, in order
		settledHash  []common.Hash
		aheadSamples int
	)
	samples := sys.SampleFor(35*time.Second, func() {
		safeNum := rep.EL.NumberAt(rpc.SafeBlockNumber)
		latestNum := rep.EL.NumberAt(rpc.LatestBlockNumber)

		rep.EL.RequireSameBlocks(seq, latestNum, latestNum)
		verifier.EL.RequireReaches(rpc.SafeBlockNumber, safeNum, "the replicator's safe head")
		if latestNum >= safeNum+2 {
			aheadSamples++
		}

		// Remember the blocks that became safe since the last sample: they must be the sequencer's.
		next := uint64(0)
		if len(settled) > 0 {
			next = settled[len(settled)-1] + 1
		}
		if next <= safeNum {
			nums := devnet.NumberRange(next, safeNum)
			rep.EL.RequireSameBlocks(seq, next, safeNum)
			settled, settledHash = append(settled, nums...), append(settledHash, rep.EL.Hashes(nums)...)
		}
		// No block that was at or below the safe head has changed since.
		hashes := rep.EL.Hashes(settled)
		for i, n := range settled {
			require.Equal(t, settledHash[i], hashes[i], "the replicator rewrote block %d after it was safe", n)
		}
	})
	t.Logf("%d samples, %d with latest at least 2 blocks ahead of safe; %d blocks settled at or below the safe head",
		samples, aheadSamples, len(settled))
	require.GreaterOrEqual(t, aheadSamples, samples/2, "the replicator was rarely ahead of its safe head: not replicating")
	require.Greater(t, len(settled), 20, "the safe head hardly moved")
}
