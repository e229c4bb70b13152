package testkit

import (
	"encoding/json"
	"math/big"
	"testing"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/consensus/misc/eip1559"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/trie"
	"github.com/stretchr/testify/require"

	opparams "github.com/ethereum-optimism/optimism/op-core/params"
	"github.com/ethereum-optimism/optimism/op-core/predeploys"
	"github.com/ethereum-optimism/optimism/op-node/rollup"
	"github.com/ethereum-optimism/optimism/op-node/rollup/derive"
	"github.com/ethereum-optimism/optimism/op-service/eth"
)

// IsthmusRollupConfig is the test chain with every fork up to Isthmus active from genesis, for blocks shaped like
// today's.
func IsthmusRollupConfig() *rollup.Config {
	cfg := RollupConfig()
	denominator := uint64(250)
	cfg.ChainOpConfig = &opparams.OptimismConfig{EIP1559Elasticity: 6, EIP1559Denominator: 50, EIP1559DenominatorCanyon: &denominator}
	genesis := uint64(0)
	for _, fork := range []**uint64{&cfg.RegolithTime, &cfg.CanyonTime, &cfg.DeltaTime, &cfg.EcotoneTime, &cfg.FjordTime,
		&cfg.GraniteTime, &cfg.HoloceneTime, &cfg.IsthmusTime} {
		*fork = &genesis
	}
	return cfg
}

// IsthmusBlock is block 1 on the test genesis as a sequencer's op-geth builds it under Isthmus, and as derivation
// would build it: the L1-info deposit (L1 origin the genesis' own, sequence number 1) and two signed user
// transactions.
func IsthmusBlock(tb testing.TB, cfg *rollup.Config) *types.Block {
	origin := L1Block(0, 0)
	ts := cfg.Genesis.L2Time + cfg.BlockTime
	info := L1Info(origin)
	deposit, err := derive.L1InfoDepositBytes(cfg, nil, SystemConfig, 1, info, ts)
	require.NoError(tb, err)
	var l1InfoTx types.Transaction
	require.NoError(tb, l1InfoTx.UnmarshalBinary(deposit))

	key, signer, to := Key(9), types.LatestSignerForChainID(cfg.L2ChainID), common.Address{0x42}
	txs := types.Transactions{&l1InfoTx,
		types.MustSignNewTx(key, signer, &types.DynamicFeeTx{ChainID: cfg.L2ChainID, GasTipCap: big.NewInt(1),
			GasFeeCap: big.NewInt(2_000_000_000), Gas: 21_000, To: &to, Value: big.NewInt(1)}),
		types.MustSignNewTx(key, signer, &types.LegacyTx{Nonce: 1, GasPrice: big.NewInt(2_000_000_000), Gas: 50_000,
			To: &to, Data: []byte("replicate me")}),
	}
	beaconRoot, messagePasserRoot, blobGas := common.Hash{}, common.Hash{0x77}, uint64(0) // the mock L1 has no beacon root
	header := &types.Header{
		ParentHash: Genesis.Hash, Coinbase: predeploys.SequencerFeeVaultAddr, Root: common.Hash{0x22, 1},
		Difficulty: common.Big0, Number: big.NewInt(1), GasLimit: SystemConfig.GasLimit, GasUsed: 100_000, Time: ts,
		// The SystemConfig's EIP-1559 parameters are unset (0, 0): derivation uses the Canyon constants.
		Extra: eip1559.EncodeHoloceneExtraData(250, 6), MixDigest: info.MixDigest(), BaseFee: big.NewInt(1_000_000),
		WithdrawalsHash: &messagePasserRoot, BlobGasUsed: &blobGas, ExcessBlobGas: &blobGas,
		ParentBeaconRoot: &beaconRoot, RequestsHash: &types.EmptyRequestsHash,
	}
	block := types.NewBlock(header, &types.Body{Transactions: txs, Withdrawals: types.Withdrawals{}}, nil,
		trie.NewStackTrie(nil), types.IsthmusBlockConfig)
	env, err := eth.BlockAsPayloadEnv(block, cfg)
	require.NoError(tb, err)
	_, ok := env.CheckBlockHash()
	require.True(tb, ok, "the payload of the test block does not hash to the block's hash")
	return block
}

// RPCBlockJSON is b as op-geth answers eth_getBlockByNumber(n, true): the header's fields, its hash, and its
// transactions and withdrawals in full.
func RPCBlockJSON(tb testing.TB, b *types.Block) []byte {
	out, err := BlockJSON(b)
	require.NoError(tb, err)
	return out
}

// BlockJSON is RPCBlockJSON, its error returned.
func BlockJSON(b *types.Block) ([]byte, error) {
	header, err := json.Marshal(b.Header())
	if err != nil {
		return nil, err
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(header, &fields); err != nil {
		return nil, err
	}
	if fields["transactions"], err = json.Marshal(b.Transactions()); err != nil {
		return nil, err
	}
	if fields["withdrawals"], err = json.Marshal(b.Withdrawals()); err != nil {
		return nil, err
	}
	return json.Marshal(fields)
}
