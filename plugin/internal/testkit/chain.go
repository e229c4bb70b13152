package testkit

import (
	"math/big"
	"testing"

	"github.com/ethereum/go-ethereum/common"
	"github.com/stretchr/testify/require"

	"github.com/ethereum-optimism/optimism/op-core/predeploys"
	"github.com/ethereum-optimism/optimism/op-node/rollup"
	"github.com/ethereum-optimism/optimism/op-node/rollup/derive"
	"github.com/ethereum-optimism/optimism/op-service/eth"
	"github.com/ethereum-optimism/optimism/op-service/testutils"
)

// The test chain: L2 block n has L1 origin n/2 (two L2 blocks per epoch).

// Genesis is the test chain's L2 genesis.
var Genesis = eth.BlockID{Hash: common.Hash{0xaa}, Number: 0}

// RollupConfig is the test chain's rollup config: no fork active, a block every 2 s.
func RollupConfig() *rollup.Config {
	return &rollup.Config{
		Genesis: rollup.Genesis{
			L1:     L1Block(0, 0).ID(),
			L2:     Genesis,
			L2Time: 1000,
		},
		BlockTime:              2,
		MaxSequencerDrift:      600,
		L1ChainID:              big.NewInt(900),
		L2ChainID:              big.NewInt(901),
		SeqWindowSize:          100,
		DepositContractAddress: common.Address{0xde},
	}
}

// SystemConfig is the SystemConfig of every test block's parent.
var SystemConfig = eth.SystemConfig{BatcherAddr: common.Address{0xba}, Overhead: eth.Bytes32{31: 0xbc},
	Scalar: eth.Bytes32{31: 0x01}, GasLimit: 30_000_000}

// L1Block is L1 block n of fork f (fork 0 is canonical unless our fake L1 view was reorged).
func L1Block(n uint64, f byte) eth.L1BlockRef {
	hash := func(n uint64) common.Hash { return common.Hash{0x11, f, byte(n >> 8), byte(n)} }
	parent := common.Hash{}
	if n > 0 {
		parent = hash(n - 1)
	}
	return eth.L1BlockRef{Hash: hash(n), Number: n, ParentHash: parent, Time: 900 + 4*n}
}

// L1Info is the header of an L1 block, as our fake L1 view serves it and as the L1-info deposits of test blocks
// carry it.
func L1Info(ref eth.L1BlockRef) *testutils.MockBlockInfo {
	return &testutils.MockBlockInfo{InfoHash: ref.Hash, InfoParentHash: ref.ParentHash, InfoNum: ref.Number,
		InfoTime: ref.Time, InfoBaseFee: big.NewInt(1), InfoBlobBaseFee: big.NewInt(1), InfoMixDigest: [32]byte{0x4d, ref.Hash[1], ref.Hash[2], ref.Hash[3]}}
}

// Block is a block of an L2 chain the fake source serves: chain c, number n, origin from L1 fork f.
type Block struct {
	Env *eth.ExecutionPayloadEnvelope
	Ref eth.L2BlockRef
}

// BuildChain returns blocks 1..n of L2 chain "variant" on top of the test genesis. Blocks from height
// divergeAt on differ between variants (different state root, so a different hash).
func BuildChain(t *testing.T, cfg *rollup.Config, n uint64, variant byte, divergeAt uint64) []Block {
	blocks := make([]Block, 0, n)
	parent := eth.L2BlockRef{Hash: Genesis.Hash, Number: 0, L1Origin: cfg.Genesis.L1, Time: cfg.Genesis.L2Time}
	for i := uint64(1); i <= n; i++ {
		v := byte(0)
		if i >= divergeAt {
			v = variant
		}
		origin := L1Block(i/2, 0)
		seq := uint64(0)
		if origin.Number == parent.L1Origin.Number {
			seq = parent.SequenceNumber + 1
		}
		b := MakeBlock(t, cfg, parent, origin, seq, common.Hash{0x22, v, byte(i >> 8), byte(i)})
		blocks = append(blocks, b)
		parent = b.Ref
	}
	return blocks
}

// MakeBlock makes a block on parent with the given origin, as derivation would build it (an L1-info deposit and
// no other transactions); its hash is derived from the state root.
func MakeBlock(t *testing.T, cfg *rollup.Config, parent eth.L2BlockRef, origin eth.L1BlockRef, seq uint64, stateRoot common.Hash) Block {
	info := L1Info(origin)
	ts := parent.Time + cfg.BlockTime
	dep, err := derive.L1InfoDepositBytes(cfg, nil, SystemConfig, seq, info, ts)
	require.NoError(t, err)
	hash := common.Hash{0x33}
	copy(hash[1:], stateRoot[:31])
	hash[31] ^= byte(parent.Number + 1)
	payload := &eth.ExecutionPayload{
		ParentHash:   parent.Hash,
		BlockNumber:  eth.Uint64Quantity(parent.Number + 1),
		BlockHash:    hash,
		StateRoot:    eth.Bytes32(stateRoot),
		Timestamp:    eth.Uint64Quantity(ts),
		Transactions: []eth.Data{dep},
		PrevRandao:   eth.Bytes32(info.MixDigest()),
		FeeRecipient: predeploys.SequencerFeeVaultAddr,
		GasLimit:     eth.Uint64Quantity(SystemConfig.GasLimit),
	}
	ref, err := derive.PayloadToBlockRef(cfg, payload)
	require.NoError(t, err)
	return Block{Env: &eth.ExecutionPayloadEnvelope{ExecutionPayload: payload}, Ref: ref}
}
