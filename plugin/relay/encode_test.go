package relay

import (
	"encoding"
	"encoding/json"
	"fmt"
	"math/rand"
	"reflect"
	"strings"
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
		if s != nil && s.Envelope != nil && s.Envelope.ExecutionPayload != nil {
			w := 0
			if ws := s.Envelope.ExecutionPayload.Withdrawals; ws != nil {
				enc, err := json.Marshal(ws)
				require.NoError(t, err)
				w = len(enc)
			}
			require.Equal(t, encodedSize(s, w), cap(got), "the buffer was reallocated: encodedSize is too small")
		}
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
	t.Run("unusual fields", func(t *testing.T) {
		payload := func(edit func(p *eth.ExecutionPayload)) *opsigner.SignedExecutionPayloadEnvelope {
			p := &eth.ExecutionPayload{}
			edit(p)
			return &opsigner.SignedExecutionPayloadEnvelope{Envelope: &eth.ExecutionPayloadEnvelope{ExecutionPayload: p}}
		}
		check(t, payload(func(p *eth.ExecutionPayload) { p.Withdrawals = new(types.Withdrawals) })) // a nil list: null
		check(t, payload(func(p *eth.ExecutionPayload) { p.Withdrawals = &types.Withdrawals{nil, {Index: 1}} }))
		check(t, payload(func(p *eth.ExecutionPayload) { p.ExtraData = make([]byte, 100) })) // longer than valid
		check(t, payload(func(p *eth.ExecutionPayload) { p.Transactions = []eth.Data{nil, {}, []byte("<>&")} }))
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

// marshalSigned writes the fields of the op-service it was written for, each as its type's MarshalText does. A
// release that adds, removes, renames or retypes a field, gives one of these types a MarshalJSON, or changes what
// their MarshalText writes fails this test: marshalSigned then needs the same change (and this test after it).
func TestMarshalSignedKnowsEveryField(t *testing.T) {
	// A field's type with its package's path: common.Hash from another package is another type.
	var typeName func(typ reflect.Type) string
	typeName = func(typ reflect.Type) string {
		switch typ.Kind() {
		case reflect.Pointer:
			return "*" + typeName(typ.Elem())
		case reflect.Slice:
			if typ.Name() == "" {
				return "[]" + typeName(typ.Elem())
			}
		}
		return typ.PkgPath() + "." + typ.Name()
	}
	fields := func(v any) []string {
		var out []string
		typ := reflect.TypeOf(v)
		for i := range typ.NumField() {
			f := typ.Field(i)
			out = append(out, fmt.Sprintf("%s %s `%s`", f.Name, typeName(f.Type), f.Tag))
		}
		return out
	}
	require.Equal(t, []string{
		"Envelope *github.com/ethereum-optimism/optimism/op-service/eth.ExecutionPayloadEnvelope `json:\"envelope\"`",
		"Signature github.com/ethereum-optimism/optimism/op-service/eth.Bytes65 `json:\"signature\"`",
	}, fields(opsigner.SignedExecutionPayloadEnvelope{}))
	require.Equal(t, []string{
		"ParentBeaconBlockRoot *github.com/ethereum/go-ethereum/common.Hash `json:\"parentBeaconBlockRoot,omitempty\"`",
		"ExecutionPayload *github.com/ethereum-optimism/optimism/op-service/eth.ExecutionPayload `json:\"executionPayload\"`",
	}, fields(eth.ExecutionPayloadEnvelope{}))
	require.Equal(t, []string{
		"ParentHash github.com/ethereum/go-ethereum/common.Hash `json:\"parentHash\"`",
		"FeeRecipient github.com/ethereum/go-ethereum/common.Address `json:\"feeRecipient\"`",
		"StateRoot github.com/ethereum-optimism/optimism/op-service/eth.Bytes32 `json:\"stateRoot\"`",
		"ReceiptsRoot github.com/ethereum-optimism/optimism/op-service/eth.Bytes32 `json:\"receiptsRoot\"`",
		"LogsBloom github.com/ethereum-optimism/optimism/op-service/eth.Bytes256 `json:\"logsBloom\"`",
		"PrevRandao github.com/ethereum-optimism/optimism/op-service/eth.Bytes32 `json:\"prevRandao\"`",
		"BlockNumber github.com/ethereum/go-ethereum/common/hexutil.Uint64 `json:\"blockNumber\"`",
		"GasLimit github.com/ethereum/go-ethereum/common/hexutil.Uint64 `json:\"gasLimit\"`",
		"GasUsed github.com/ethereum/go-ethereum/common/hexutil.Uint64 `json:\"gasUsed\"`",
		"Timestamp github.com/ethereum/go-ethereum/common/hexutil.Uint64 `json:\"timestamp\"`",
		"ExtraData github.com/ethereum-optimism/optimism/op-service/eth.BytesMax32 `json:\"extraData\"`",
		"BaseFeePerGas github.com/ethereum/go-ethereum/common/hexutil.U256 `json:\"baseFeePerGas\"`",
		"BlockHash github.com/ethereum/go-ethereum/common.Hash `json:\"blockHash\"`",
		"Transactions []github.com/ethereum/go-ethereum/common/hexutil.Bytes `json:\"transactions\"`",
		"Withdrawals *github.com/ethereum/go-ethereum/core/types.Withdrawals `json:\"withdrawals,omitempty\"`",
		"BlobGasUsed *github.com/ethereum/go-ethereum/common/hexutil.Uint64 `json:\"blobGasUsed,omitempty\"`",
		"ExcessBlobGas *github.com/ethereum/go-ethereum/common/hexutil.Uint64 `json:\"excessBlobGas,omitempty\"`",
		"WithdrawalsRoot *github.com/ethereum/go-ethereum/common.Hash `json:\"withdrawalsRoot,omitempty\"`",
	}, fields(eth.ExecutionPayload{}))

	// marshalSigned writes each of these types as its value's MarshalText does (hex): none may encode itself in
	// another way (MarshalJSON, on the value or its pointer), and MarshalText must be the value's.
	text := reflect.TypeFor[encoding.TextMarshaler]()
	marshaler := reflect.TypeFor[json.Marshaler]()
	for _, typ := range []reflect.Type{
		reflect.TypeFor[opsigner.SignedExecutionPayloadEnvelope](), reflect.TypeFor[eth.ExecutionPayloadEnvelope](),
		reflect.TypeFor[eth.ExecutionPayload](), reflect.TypeFor[common.Hash](), reflect.TypeFor[common.Address](),
		reflect.TypeFor[eth.Bytes32](), reflect.TypeFor[eth.Bytes256](), reflect.TypeFor[eth.Bytes65](),
		reflect.TypeFor[eth.BytesMax32](), reflect.TypeFor[hexutil.Bytes](), reflect.TypeFor[hexutil.Uint64](),
		reflect.TypeFor[hexutil.U256](),
	} {
		require.False(t, reflect.PointerTo(typ).Implements(marshaler), "%s encodes itself (MarshalJSON)", typ)
		if typ.Kind() != reflect.Struct {
			require.True(t, typ.Implements(text), "%s has no MarshalText of its value", typ)
		}
	}
	// What appendHex and appendUint64 write is what these types' MarshalText writes.
	for _, c := range []struct {
		v    encoding.TextMarshaler
		want string
	}{
		{common.Address{0xab}, "0xab" + strings.Repeat("0", 38)}, {eth.Bytes32{0xcd}, "0xcd" + strings.Repeat("0", 62)},
		{hexutil.Uint64(0), "0x0"}, {hexutil.Uint64(0x1f), "0x1f"}, {hexutil.Bytes(nil), "0x"},
	} {
		v, want := c.v, c.want
		got, err := v.MarshalText()
		require.NoError(t, err)
		require.Equal(t, want, string(got), "%T", v)
	}
}
