package e2e

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ethereum/go-ethereum/rpc"

	"github.com/op-replicator/op-replicator/e2e/devnet"
	"github.com/op-replicator/op-replicator/e2e/dsl"
	"github.com/op-replicator/op-replicator/plugin/api"
)

// TestUnderivableBlocksHalt gives a replicator a source that serves, from a height on, blocks the sequencer's
// engine would execute but that derivation could never have built from L1, each self-consistent (transactions root
// and block hash recomputed): a forged deposit minting 1,000 ETH, a timestamp one second late, a prev-randao that
// is not the L1 origin's, and an L1-info deposit with an altered L1 base fee. Each must halt the replicator with
// attributes-mismatch, the detail saying what differed, before the block reaches op-geth: the block is never
// op-geth's latest (sampled every 100 ms) nor in its chain, and the forged mint credits nobody. After each, the
// honest source and replicator_resume bring the replicator back to replicating.
func TestUnderivableBlocksHalt(t *testing.T) {
	sys := dsl.Start(t, devnet.Config{})
	seq := sys.Sequencer.EL
	proxy := sys.NewProxy(seq.HTTP)
	rep := sys.AddReplicator("replicator", devnet.WithSource(proxy.URL), devnet.WithHaltPolicy("manual"))
	sys.StartTxLoad(seq)
	source := sys.DialEL(proxy.URL) // what the replicator is served

	for _, tc := range []struct {
		name   string
		how    devnet.Tamper
		detail string // what the halt detail must say differed
	}{
		{"forged deposit", devnet.TamperForgedDeposit, "transaction 1 differs"},
		{"wrong timestamp", devnet.TamperTimestamp, "dropping future batch"},
		{"wrong prev-randao", devnet.TamperPrevRandao, "random field does not match"},
		{"altered L1-info deposit", devnet.TamperL1InfoField, "L1-info deposit 0 differs"},
	} {
		rep.WaitReplicating(seq, seq.NumberAt(rpc.LatestBlockNumber))
		from := seq.NumberAt(rpc.LatestBlockNumber) + 3
		stopSampling := rep.SampleHeads()
		proxy.TamperFromWith(from, tc.how)
		t.Logf("%s: the source tampers with blocks from %d on", tc.name, from)

		st := rep.WaitHalted(api.ReasonAttributesMismatch)
		tampered := source.HashAt(rpc.BlockNumber(from))
		proxy.StopTampering()
		require.NotEqual(t, seq.HashAt(rpc.BlockNumber(from)), tampered, "%s: the source did not tamper with block %d", tc.name, from)
		require.Contains(t, st.HaltDetail, tampered.Hex(), "%s: the halt is not about the tampered block", tc.name)
		require.Contains(t, st.HaltDetail, tc.detail, tc.name)
		rep.RequireHaltLogged(api.ReasonAttributesMismatch)
		for _, s := range stopSampling().Samples {
			require.NotEqual(t, tampered, s.Latest.Hash, "%s: op-geth served the tampered block as latest at %s", tc.name, s.At)
		}
		rep.EL.RequireNoBlock(tampered, tc.name+": the tampered block")
		minted, err := rep.EL.BalanceAt(t.Context(), devnet.ForgedDepositRecipient, nil)
		require.NoError(t, err)
		require.Zero(t, minted.Sign(), "%s: the forged deposit's recipient has a balance", tc.name)
		t.Logf("%s: halted with %s: %s", tc.name, st.HaltReason, st.HaltDetail)

		rep.Resume()
	}
	rep.WaitReplicating(seq, seq.NumberAt(rpc.LatestBlockNumber))
}
