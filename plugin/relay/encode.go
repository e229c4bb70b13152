package relay

import (
	"encoding"
	"encoding/hex"
	"encoding/json"

	"github.com/ethereum-optimism/optimism/op-service/eth"
	opsigner "github.com/ethereum-optimism/optimism/op-service/signer"
)

// marshalSigned returns a signed block's JSON encoding: byte for byte what json.Marshal writes for it, written
// field by field instead of by reflection. A relay encodes every block it holds once (Held.encode), and with
// encoding/json that was its largest cost per block before the writes: each transaction is turned into hex by its
// MarshalText, copied and then scanned again for characters to escape (BenchmarkPrepareResult). Here the hex is
// written in place, in a buffer sized for the whole block at once. Hex, JSON keys and the few quantities need no
// escaping, so the output is what encoding/json writes, HTML escaping included.
//
// The fields are the pinned op-service's (ExecutionPayloadEnvelope, ExecutionPayload, SignedExecutionPayloadEnvelope):
// TestMarshalSignedKnowsEveryField fails if a new release adds, removes or retypes one, and the encoder then needs
// the same change. Withdrawals (none on an OP chain since Canyon; op-node refuses a block with any) are encoded by
// encoding/json; a block without an envelope or payload is encoded wholly by json.Marshal.
func marshalSigned(s *opsigner.SignedExecutionPayloadEnvelope) ([]byte, error) {
	if s == nil || s.Envelope == nil || s.Envelope.ExecutionPayload == nil {
		return json.Marshal(s)
	}
	p := s.Envelope.ExecutionPayload
	var withdrawals []byte
	if p.Withdrawals != nil {
		var err error
		if withdrawals, err = json.Marshal(p.Withdrawals); err != nil {
			return nil, err
		}
	}
	b := make([]byte, 0, encodedSize(s, len(withdrawals)))
	b = append(b, `{"envelope":{`...)
	if root := s.Envelope.ParentBeaconBlockRoot; root != nil {
		b = appendHex(append(b, `"parentBeaconBlockRoot":`...), root[:])
		b = append(b, ',')
	}
	b = appendHex(append(b, `"executionPayload":{"parentHash":`...), p.ParentHash[:])
	b = appendHex(append(b, `,"feeRecipient":`...), p.FeeRecipient[:])
	b = appendHex(append(b, `,"stateRoot":`...), p.StateRoot[:])
	b = appendHex(append(b, `,"receiptsRoot":`...), p.ReceiptsRoot[:])
	b = appendHex(append(b, `,"logsBloom":`...), p.LogsBloom[:])
	b = appendHex(append(b, `,"prevRandao":`...), p.PrevRandao[:])
	b = appendText(append(b, `,"blockNumber":`...), p.BlockNumber)
	b = appendText(append(b, `,"gasLimit":`...), p.GasLimit)
	b = appendText(append(b, `,"gasUsed":`...), p.GasUsed)
	b = appendText(append(b, `,"timestamp":`...), p.Timestamp)
	b = appendHex(append(b, `,"extraData":`...), p.ExtraData)
	b = appendText(append(b, `,"baseFeePerGas":`...), p.BaseFeePerGas)
	b = appendHex(append(b, `,"blockHash":`...), p.BlockHash[:])
	b = append(b, `,"transactions":`...)
	if p.Transactions == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i, tx := range p.Transactions {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendHex(b, tx)
		}
		b = append(b, ']')
	}
	if withdrawals != nil {
		b = append(append(b, `,"withdrawals":`...), withdrawals...)
	}
	if p.BlobGasUsed != nil {
		b = appendText(append(b, `,"blobGasUsed":`...), *p.BlobGasUsed)
	}
	if p.ExcessBlobGas != nil {
		b = appendText(append(b, `,"excessBlobGas":`...), *p.ExcessBlobGas)
	}
	if p.WithdrawalsRoot != nil {
		b = appendHex(append(b, `,"withdrawalsRoot":`...), p.WithdrawalsRoot[:])
	}
	b = appendHex(append(b, `}},"signature":`...), s.Signature[:])
	return append(b, '}'), nil
}

// encodedSize is marshalSigned's output size, but for the quantities' hex digits (a few bytes each): the fixed
// fields, each transaction in hex, and the withdrawals' JSON.
func encodedSize(s *opsigner.SignedExecutionPayloadEnvelope, withdrawals int) int {
	p := s.Envelope.ExecutionPayload
	n := 2048 + 2*len(p.ExtraData) + withdrawals // keys, hashes, the bloom, the signature, quantities (~1.6 KB)
	for _, tx := range p.Transactions {
		n += 2*len(tx) + 5 // "0x…",
	}
	return n
}

// appendHex appends data as a JSON string, as hexutil.Bytes' MarshalText writes it ("0x" and lowercase hex), which
// is how every byte field of a block is encoded.
func appendHex(b, data []byte) []byte {
	b = append(b, `"0x`...)
	b = hex.AppendEncode(b, data)
	return append(b, '"')
}

// appendText appends a quantity's MarshalText as a JSON string: hex, nothing to escape.
func appendText(b []byte, q encoding.TextMarshaler) []byte {
	text, _ := q.MarshalText() // hexutil.Uint64 and hexutil.U256 never fail
	b = append(b, '"')
	b = append(b, text...)
	return append(b, '"')
}

var (
	_ encoding.TextMarshaler = eth.Uint64Quantity(0)
	_ encoding.TextMarshaler = eth.Uint256Quantity{}
)
