package relay

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/golang/snappy"
	"github.com/stretchr/testify/require"

	"github.com/ethereum-optimism/optimism/op-service/eth"
	opsigner "github.com/ethereum-optimism/optimism/op-service/signer"

	"github.com/op-replicator/op-replicator/driverhook"
	"github.com/op-replicator/op-replicator/plugin/internal/testkit"
)

// BenchmarkReceive measures what taking in one signed block costs a follower's op-node before the block reaches
// the engine, on the relay path against op-node's own gossip path, for the same block in the same run:
//   - relay: the subscription's notification as it arrives (JSON-RPC text), read by the client's subscription in one
//     pass into the signed block (decodeNotification) and checked (VerifySigned: header hash, the payload's SSZ
//     encoding re-made, signature);
//   - relay-geth: the same, read as go-ethereum's client reads it (four passes: the message, its params, the result,
//     the result into the channel's type) and decoded (DecodeEnvelope), as the client did before its subscription
//     had a connection of its own;
//   - gossip: the gossip message (snappy of the signature and the SSZ envelope), as op-node's gossip validator
//     takes it: snappy, signature over the SSZ bytes, SSZ decoding, header hash.
//
// Weights: the weight sweep's light (60 transactions of 120 bytes) and 10x (470 of 118) blocks, and 1 MB (8,000 of
// 128). Transactions are opaque bytes here, as they are to both paths. Run with e.g.
//
//	GOWORK=$PWD/build/go.work go test -run '^$' -bench BenchmarkReceive -benchtime 2s ./plugin/relay/
func BenchmarkReceive(b *testing.B) {
	for _, w := range []struct {
		name      string
		txs, size int
	}{{"light", 60, 120}, {"10x", 470, 118}, {"1MB", 8000, 128}} {
		env := receiveBlock(b, w.txs, w.size)
		s := sign(b, testkit.Key(1), env)
		signers := &testkit.Signers{Current: testkit.Addr(1)}

		result, err := json.Marshal(s)
		require.NoError(b, err)
		relayMsg, err := json.Marshal(map[string]any{"jsonrpc": "2.0", "method": "relay_subscription",
			"params": map[string]any{"subscription": "0x1234", "result": json.RawMessage(result)}})
		require.NoError(b, err)
		ssz, err := driverhook.SignedBytes(s.Envelope)
		require.NoError(b, err)
		gossipMsg := snappy.Encode(nil, append(append([]byte{}, s.Signature[:]...), ssz...))

		b.Run(w.name+"/relay", func(b *testing.B) {
			b.SetBytes(int64(len(relayMsg)))
			for range b.N {
				got, err := decodeNotification(relayMsg, "0x1234")
				if err != nil {
					b.Fatal(err)
				}
				if err := VerifySigned(testRollup, signers, got); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(w.name+"/relay-geth", func(b *testing.B) {
			b.SetBytes(int64(len(relayMsg)))
			for range b.N {
				// As go-ethereum's client (rpc/json.go, handler.go, subscription.go): the websocket message read as
				// raw JSON, parsed as a JSON-RPC message, its params as a subscription result, that result into the
				// subscription's channel type (json.RawMessage here).
				var raw json.RawMessage
				if err := json.Unmarshal(relayMsg, &raw); err != nil {
					b.Fatal(err)
				}
				var msg struct {
					Version string          `json:"jsonrpc"`
					Method  string          `json:"method"`
					Params  json.RawMessage `json:"params"`
				}
				if err := json.Unmarshal(raw, &msg); err != nil {
					b.Fatal(err)
				}
				var sub struct {
					ID     string          `json:"subscription"`
					Result json.RawMessage `json:"result"`
				}
				if err := json.Unmarshal(msg.Params, &sub); err != nil {
					b.Fatal(err)
				}
				var result json.RawMessage
				if err := json.Unmarshal(sub.Result, &result); err != nil {
					b.Fatal(err)
				}
				got, err := DecodeEnvelope(result)
				if err != nil {
					b.Fatal(err)
				}
				if err := VerifySigned(testRollup, signers, got); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(w.name+"/gossip", func(b *testing.B) {
			b.SetBytes(int64(len(gossipMsg)))
			chain := eth.ChainIDFromBig(testRollup.L2ChainID)
			for range b.N {
				data, err := snappy.Decode(nil, gossipMsg)
				if err != nil {
					b.Fatal(err)
				}
				block := opsigner.SignedP2PBlock{Raw: data[65:], Signature: eth.Bytes65(data[:65])}
				if err := block.VerifySignature(&opsigner.OPStackP2PBlockAuthV1{Allowed: testkit.Addr(1), Chain: chain}); err != nil {
					b.Fatal(err)
				}
				var got eth.ExecutionPayloadEnvelope
				if err := got.UnmarshalSSZ(eth.BlockV3, uint32(len(data)-65), bytes.NewReader(data[65:])); err != nil {
					b.Fatal(err)
				}
				if _, ok := got.CheckBlockHash(); !ok {
					b.Fatal("bad block hash")
				}
			}
		})
	}
}

// receiveBlock is an Ecotone block (as the gossip topic v3 carries) of txs opaque transactions of size bytes each.
func receiveBlock(b *testing.B, txs, size int) *eth.ExecutionPayloadEnvelope {
	b.Helper()
	return opaqueBlock(b, 100, txs, size)
}

// opaqueBlock is receiveBlock's block at height n.
func opaqueBlock(tb testing.TB, n uint64, txs, size int) *eth.ExecutionPayloadEnvelope {
	tb.Helper()
	beacon := common.Hash{0xbe}
	var zero hexutil.Uint64
	p := &eth.ExecutionPayload{ParentHash: common.Hash{0x9e}, BlockNumber: eth.Uint64Quantity(n), StateRoot: eth.Bytes32{0x22},
		Timestamp: eth.Uint64Quantity(chainStart), GasLimit: 30_000_000, GasUsed: 20_000_000,
		Withdrawals: &types.Withdrawals{}, BlobGasUsed: (*eth.Uint64Quantity)(&zero), ExcessBlobGas: (*eth.Uint64Quantity)(&zero)}
	for range txs {
		tx := make([]byte, size)
		_, _ = rand.Read(tx)
		tx[0] = types.DynamicFeeTxType
		p.Transactions = append(p.Transactions, tx)
	}
	env := &eth.ExecutionPayloadEnvelope{ParentBeaconBlockRoot: &beacon, ExecutionPayload: p}
	env.ExecutionPayload.BlockHash, _ = env.CheckBlockHash()
	require.NotEmpty(tb, fmt.Sprint(env.ID()))
	return env
}
