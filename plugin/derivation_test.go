package plugin

import (
	"context"
	"errors"
	"math/big"
	"testing"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/log"
	"github.com/stretchr/testify/require"

	optypes "github.com/ethereum-optimism/optimism/op-core/types"
	"github.com/ethereum-optimism/optimism/op-node/rollup/derive"
	"github.com/ethereum-optimism/optimism/op-service/eth"
	"github.com/ethereum-optimism/optimism/op-service/testlog"

	"github.com/op-replicator/op-replicator/driverhook"
	"github.com/op-replicator/op-replicator/plugin/api"
	"github.com/op-replicator/op-replicator/plugin/internal/testkit"
)

func TestDerivationRules(t *testing.T) {
	cfg := testkit.RollupConfig()
	blocks := testkit.BuildChain(t, cfg, 8, 0, 0)
	l1Head := testkit.L1Block(1000, 0)
	// Block 4 starts epoch 2 on block 3 (epoch 1); block 5 continues epoch 2.
	parent, epochStart, next := blocks[2].Ref, blocks[3], blocks[4]
	userTx := []byte{types.DynamicFeeTxType, 0xc0, 0xff, 0xee}

	rulesOn := func(l1 *fakeL1, l2 *fakeEngine) *derivationRules {
		return newDerivationRules(driverhook.Deps{Log: testlog.Logger(t, log.LevelDebug), Rollup: cfg, L1: l1, L2: l2}, newL1View(l1))
	}
	check := func(t *testing.T, d *derivationRules, b testkit.Block, parent eth.L2BlockRef, l1Head eth.L1BlockRef) error {
		t.Helper()
		origin, err := d.l1.L1BlockRefByNumber(context.Background(), b.Ref.L1Origin.Number, l1Head)
		require.NoError(t, err)
		return d.Check(context.Background(), b.Env, b.Ref, parent, origin, l1Head)
	}
	// altered returns a copy of b with its payload changed by f.
	altered := func(b testkit.Block, f func(p *eth.ExecutionPayload)) testkit.Block {
		p := *b.Env.ExecutionPayload
		p.Transactions = append([]eth.Data(nil), p.Transactions...)
		f(&p)
		return testkit.Block{Env: &eth.ExecutionPayloadEnvelope{ExecutionPayload: &p}, Ref: b.Ref}
	}
	requireMismatch := func(t *testing.T, err error, contains string) {
		t.Helper()
		var d *Disagreement
		require.ErrorAs(t, err, &d)
		require.Equal(t, api.ReasonAttributesMismatch, d.Reason, d.Detail)
		require.Contains(t, d.Detail, contains)
	}

	t.Run("the block derivation builds passes, with sequencer transactions after the deposits", func(t *testing.T) {
		d := rulesOn(&fakeL1{}, newFakeEngine(cfg))
		require.NoError(t, check(t, d, epochStart, parent, l1Head))
		withTxs := altered(next, func(p *eth.ExecutionPayload) { p.Transactions = append(p.Transactions, userTx, userTx) })
		require.NoError(t, check(t, d, withTxs, epochStart.Ref, l1Head))
	})
	t.Run("a forged deposit after the L1-info deposit", func(t *testing.T) {
		dep, err := (&optypes.DepositTx{From: common.Address{0xf0}, To: &common.Address{0xf1}, Mint: big.NewInt(1e18),
			Value: big.NewInt(1e18), Gas: 21000}).MarshalBinary()
		require.NoError(t, err)
		forged := altered(next, func(p *eth.ExecutionPayload) { p.Transactions = append(p.Transactions, dep) })
		requireMismatch(t, check(t, rulesOn(&fakeL1{}, newFakeEngine(cfg)), forged, epochStart.Ref, l1Head), "transaction 1 differs: the block has")
	})
	t.Run("a deposit among the sequencer's transactions", func(t *testing.T) {
		dep, err := (&optypes.DepositTx{From: common.Address{0xf0}, To: &common.Address{0xf1}, Value: new(big.Int), Gas: 21000}).MarshalBinary()
		require.NoError(t, err)
		forged := altered(next, func(p *eth.ExecutionPayload) { p.Transactions = append(p.Transactions, userTx, dep) })
		requireMismatch(t, check(t, rulesOn(&fakeL1{}, newFakeEngine(cfg)), forged, epochStart.Ref, l1Head), "transaction 2 differs")
	})
	t.Run("a wrong timestamp", func(t *testing.T) {
		late := altered(next, func(p *eth.ExecutionPayload) { p.Timestamp++ })
		requireMismatch(t, check(t, rulesOn(&fakeL1{}, newFakeEngine(cfg)), late, epochStart.Ref, l1Head), "batch rule")
	})
	t.Run("a prev-randao that is not the L1 origin's", func(t *testing.T) {
		b := altered(next, func(p *eth.ExecutionPayload) { p.PrevRandao[0] ^= 1 })
		requireMismatch(t, check(t, rulesOn(&fakeL1{}, newFakeEngine(cfg)), b, epochStart.Ref, l1Head), "random field")
	})
	t.Run("an L1-info deposit with an altered field", func(t *testing.T) {
		info := testkit.L1Info(testkit.L1Block(next.Ref.L1Origin.Number, 0))
		info.InfoBaseFee = big.NewInt(2) // the L1 base fee is not the origin's
		dep, err := derive.L1InfoDepositBytes(cfg, nil, testkit.SystemConfig, next.Ref.SequenceNumber, info, uint64(next.Env.ExecutionPayload.Timestamp))
		require.NoError(t, err)
		b := altered(next, func(p *eth.ExecutionPayload) { p.Transactions[0] = dep })
		requireMismatch(t, check(t, rulesOn(&fakeL1{}, newFakeEngine(cfg)), b, epochStart.Ref, l1Head), "L1-info deposit 0 differs")
	})
	t.Run("a wrong gas limit or fee recipient", func(t *testing.T) {
		d := rulesOn(&fakeL1{}, newFakeEngine(cfg))
		b := altered(next, func(p *eth.ExecutionPayload) { p.GasLimit++ })
		requireMismatch(t, check(t, d, b, epochStart.Ref, l1Head), "gas limit")
		b = altered(next, func(p *eth.ExecutionPayload) { p.FeeRecipient = common.Address{0xfe} })
		requireMismatch(t, check(t, d, b, epochStart.Ref, l1Head), "fee recipient")
	})
	t.Run("sequencer transactions beyond the sequencer drift", func(t *testing.T) {
		cfg := testkit.RollupConfig()
		cfg.MaxSequencerDrift = 50 // block 5 is 105 s after its origin
		l1 := &fakeL1{}
		d := newDerivationRules(driverhook.Deps{Log: testlog.Logger(t, log.LevelDebug), Rollup: cfg, L1: l1, L2: newFakeEngine(cfg)}, newL1View(l1))
		withTxs := altered(next, func(p *eth.ExecutionPayload) { p.Transactions = append(p.Transactions, userTx) })
		requireMismatch(t, check(t, d, withTxs, epochStart.Ref, l1Head), "time drift")
		// Without transactions it is allowed while the next L1 block is not due yet, and waits while that block is
		// beyond our L1 head.
		require.ErrorIs(t, check(t, d, next, epochStart.Ref, testkit.L1Block(next.Ref.L1Origin.Number, 0)), errWait)
	})
	t.Run("L1 unavailable is transient, not a disagreement", func(t *testing.T) {
		l1 := &fakeL1{}
		d := rulesOn(l1, newFakeEngine(cfg))
		origin := testkit.L1Block(epochStart.Ref.L1Origin.Number, 0)
		l1.err = errors.New("l1 down")
		require.ErrorIs(t, d.Check(context.Background(), epochStart.Env, epochStart.Ref, parent, origin, l1Head), errL1)
	})
	t.Run("the parent's SystemConfig is read from the engine only once", func(t *testing.T) {
		l2 := newFakeEngine(cfg)
		d := rulesOn(&fakeL1{}, l2)
		for i := 1; i < len(blocks); i++ {
			require.NoError(t, check(t, d, blocks[i], blocks[i-1].Ref, l1Head))
		}
		require.EqualValues(t, 1, l2.sysCfgReads.Load())
	})
	t.Run("epoch start without the L1 origin's user deposits", func(t *testing.T) {
		l1 := &fakeL1{deposits: map[uint64]optypes.Receipts{epochStart.Ref.L1Origin.Number: depositReceipts(t, cfg.DepositContractAddress)}}
		requireMismatch(t, check(t, rulesOn(l1, newFakeEngine(cfg)), epochStart, parent, l1Head), "transaction 1 differs: the block has none")
	})
}

// depositReceipts is an L1 block's receipts with one user deposit to the deposit contract.
func depositReceipts(t *testing.T, depositContract common.Address) optypes.Receipts {
	ev, err := derive.MarshalDepositLogEvent(depositContract, &optypes.DepositTx{SourceHash: common.Hash{0x50},
		From: common.Address{0xf0}, To: &common.Address{0xf1}, Mint: big.NewInt(1), Value: big.NewInt(1), Gas: 50_000})
	require.NoError(t, err)
	return optypes.Receipts{{Receipt: types.Receipt{Status: types.ReceiptStatusSuccessful, Logs: []*types.Log{ev}}}}
}
