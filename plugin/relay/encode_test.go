package relay

import (
	"encoding/json"
	"fmt"
	"math/rand"
	"reflect"
	"testing"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/holiman/uint256"
	"github.com/stretchr/testify/require"

	"github.com/ethereum-optimism/optimism/op-service/eth"
	opsigner "github.com/ethereum-optimism/optimism/op-service/signer"

	"github.com/op-replicator/op-replicator/plugin/internal/testkit"
)

// marshalSigned writes what json.Marshal writes: for blocks as the sequencer signs them, and for every optional
// field present or not, empty or not, at the quantities' extremes.
func TestMarshalSignedIsJSONMarshal(t *testing.T) {
	check := func(t *testing.T, s *opsigner.SignedExecutionPayloadEnvelope) {
		t.Helper()
		want, err := json.Marshal(s)
		require.NoError(t, err)
		got, err := marshalSigned(s)
		require.NoError(t, err)
		require.Equal(t, string(want), string(got))
	}
	t.Run("signed blocks", func(t *testing.T) {
		for _, env := range buildChain(3, 0, 0) {
			check(t, sign(t, testkit.Key(1), env))
		}
		check(t, sign(t, testkit.Key(1), opaqueBlock(t, 7, 60, 120)))
	})
	t.Run("no envelope or no block", func(t *testing.T) {
		check(t, nil)
		check(t, &opsigner.SignedExecutionPayloadEnvelope{})
		check(t, &opsigner.SignedExecutionPayloadEnvelope{Envelope: &eth.ExecutionPayloadEnvelope{}})
	})
	rng := rand.New(rand.NewSource(1))
	for i := range 500 {
		s := randomSigned(rng)
		t.Run(fmt.Sprintf("random %d", i), func(t *testing.T) { check(t, s) })
	}
}

// randomSigned is a signed block with every field random, each optional one left out, empty or filled at random,
// and quantities from zero to their maximum.
func randomSigned(rng *rand.Rand) *opsigner.SignedExecutionPayloadEnvelope {
	bytes := func(n int) []byte {
		b := make([]byte, n)
		_, _ = rng.Read(b)
		return b
	}
	hash := func() common.Hash { return common.Hash(bytes(32)) }
	u64 := func() hexutil.Uint64 {
		switch rng.Intn(4) {
		case 0:
			return 0
		case 1:
			return ^hexutil.Uint64(0)
		default:
			return hexutil.Uint64(rng.Uint64() >> rng.Intn(64))
		}
	}
	chance := func() bool { return rng.Intn(3) == 0 }
	p := &eth.ExecutionPayload{
		ParentHash: hash(), FeeRecipient: common.Address(bytes(20)), StateRoot: eth.Bytes32(hash()),
		ReceiptsRoot: eth.Bytes32(hash()), LogsBloom: eth.Bytes256(bytes(256)), PrevRandao: eth.Bytes32(hash()),
		BlockNumber: u64(), GasLimit: u64(), GasUsed: u64(), Timestamp: u64(), BlockHash: hash(),
	}
	switch rng.Intn(3) {
	case 0:
		p.ExtraData = nil
	case 1:
		p.ExtraData = eth.BytesMax32{}
	default:
		p.ExtraData = bytes(1 + rng.Intn(32))
	}
	var fee uint256.Int
	switch rng.Intn(3) {
	case 0:
	case 1:
		fee.SetAllOne()
	default:
		fee.SetBytes(bytes(rng.Intn(33)))
	}
	p.BaseFeePerGas = eth.Uint256Quantity(fee)
	if !chance() { // nil: "null"
		p.Transactions = []eth.Data{}
		for range rng.Intn(8) {
			if chance() {
				p.Transactions = append(p.Transactions, nil)
			} else {
				p.Transactions = append(p.Transactions, bytes(rng.Intn(300)))
			}
		}
	}
	if !chance() {
		w := types.Withdrawals{}
		if chance() {
			w = append(w, &types.Withdrawal{Index: rng.Uint64(), Validator: rng.Uint64(),
				Address: common.Address(bytes(20)), Amount: rng.Uint64()})
		}
		p.Withdrawals = &w
	}
	if !chance() {
		v := u64()
		p.BlobGasUsed = &v
	}
	if !chance() {
		v := u64()
		p.ExcessBlobGas = &v
	}
	if !chance() {
		h := hash()
		p.WithdrawalsRoot = &h
	}
	env := &eth.ExecutionPayloadEnvelope{ExecutionPayload: p}
	if !chance() {
		h := hash()
		env.ParentBeaconBlockRoot = &h
	}
	return &opsigner.SignedExecutionPayloadEnvelope{Envelope: env, Signature: eth.Bytes65(bytes(65))}
}

// marshalSigned writes the fields of the op-service it was written for. A release that adds, removes, renames or
// retypes one fails this test: marshalSigned then needs the same change (and this list after it).
func TestMarshalSignedKnowsEveryField(t *testing.T) {
	fields := func(v any) []string {
		var out []string
		typ := reflect.TypeOf(v)
		for i := range typ.NumField() {
			f := typ.Field(i)
			out = append(out, fmt.Sprintf("%s %s `%s`", f.Name, f.Type, f.Tag))
		}
		return out
	}
	require.Equal(t, []string{
		"Envelope *eth.ExecutionPayloadEnvelope `json:\"envelope\"`",
		"Signature eth.Bytes65 `json:\"signature\"`",
	}, fields(opsigner.SignedExecutionPayloadEnvelope{}))
	require.Equal(t, []string{
		"ParentBeaconBlockRoot *common.Hash `json:\"parentBeaconBlockRoot,omitempty\"`",
		"ExecutionPayload *eth.ExecutionPayload `json:\"executionPayload\"`",
	}, fields(eth.ExecutionPayloadEnvelope{}))
	require.Equal(t, []string{
		"ParentHash common.Hash `json:\"parentHash\"`",
		"FeeRecipient common.Address `json:\"feeRecipient\"`",
		"StateRoot eth.Bytes32 `json:\"stateRoot\"`",
		"ReceiptsRoot eth.Bytes32 `json:\"receiptsRoot\"`",
		"LogsBloom eth.Bytes256 `json:\"logsBloom\"`",
		"PrevRandao eth.Bytes32 `json:\"prevRandao\"`",
		"BlockNumber hexutil.Uint64 `json:\"blockNumber\"`",
		"GasLimit hexutil.Uint64 `json:\"gasLimit\"`",
		"GasUsed hexutil.Uint64 `json:\"gasUsed\"`",
		"Timestamp hexutil.Uint64 `json:\"timestamp\"`",
		"ExtraData eth.BytesMax32 `json:\"extraData\"`",
		"BaseFeePerGas hexutil.U256 `json:\"baseFeePerGas\"`",
		"BlockHash common.Hash `json:\"blockHash\"`",
		"Transactions []hexutil.Bytes `json:\"transactions\"`",
		"Withdrawals *types.Withdrawals `json:\"withdrawals,omitempty\"`",
		"BlobGasUsed *hexutil.Uint64 `json:\"blobGasUsed,omitempty\"`",
		"ExcessBlobGas *hexutil.Uint64 `json:\"excessBlobGas,omitempty\"`",
		"WithdrawalsRoot *common.Hash `json:\"withdrawalsRoot,omitempty\"`",
	}, fields(eth.ExecutionPayload{}))
}
