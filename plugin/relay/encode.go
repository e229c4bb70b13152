package relay

import (
	"encoding/hex"
	"encoding/json"
	"strconv"

	"github.com/ethereum/go-ethereum/common/hexutil"

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
// TestMarshalSignedKnowsEveryField fails if a new release adds, removes or retypes one, or if one of the types
// written here gains a MarshalJSON or changes its MarshalText; the encoder then needs the same change. Withdrawals
// (an empty list in every block since Canyon: op-node refuses a block with any) are written as "[]" when empty and
// by encoding/json otherwise; a block without an envelope or payload is encoded wholly by json.Marshal.
func marshalSigned(s *opsigner.SignedExecutionPayloadEnvelope) ([]byte, error) {
	if s == nil || s.Envelope == nil || s.Envelope.ExecutionPayload == nil {
		return json.Marshal(s)
	}
	p := s.Envelope.ExecutionPayload
	var withdrawals []byte
	switch w := p.Withdrawals; {
	case w == nil: // left out (omitempty)
	case *w != nil && len(*w) == 0:
		withdrawals = []byte("[]")
	default:
		var err error
		if withdrawals, err = json.Marshal(w); err != nil {
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
	b = appendUint64(append(b, `,"blockNumber":`...), p.BlockNumber)
	b = appendUint64(append(b, `,"gasLimit":`...), p.GasLimit)
	b = appendUint64(append(b, `,"gasUsed":`...), p.GasUsed)
	b = appendUint64(append(b, `,"timestamp":`...), p.Timestamp)
	b = appendHex(append(b, `,"extraData":`...), p.ExtraData)
	baseFee, err := p.BaseFeePerGas.MarshalText()
	if err != nil {
		return nil, err
	}
	b = append(append(append(b, `,"baseFeePerGas":"`...), baseFee...), '"')
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
		b = appendUint64(append(b, `,"blobGasUsed":`...), *p.BlobGasUsed)
	}
	if p.ExcessBlobGas != nil {
		b = appendUint64(append(b, `,"excessBlobGas":`...), *p.ExcessBlobGas)
	}
	if p.WithdrawalsRoot != nil {
		b = appendHex(append(b, `,"withdrawalsRoot":`...), p.WithdrawalsRoot[:])
	}
	b = appendHex(append(b, `}},"signature":`...), s.Signature[:])
	return append(b, '}'), nil
}

// encodedSize is an upper bound on marshalSigned's output, so that appending never reallocates: 2048 bytes cover
// everything of a fixed size (at most ~1.7 KB: keys, hashes, the bloom, the signature, quantities at their
// maximum); extra data, transactions and withdrawals are counted exactly.
func encodedSize(s *opsigner.SignedExecutionPayloadEnvelope, withdrawals int) int {
	p := s.Envelope.ExecutionPayload
	n := 2048 + 2*len(p.ExtraData) + withdrawals
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

// appendUint64 appends a quantity as a JSON string, as hexutil.Uint64's MarshalText writes it ("0x" and lowercase
// hex without leading zeros).
func appendUint64(b []byte, q hexutil.Uint64) []byte {
	b = strconv.AppendUint(append(b, `"0x`...), uint64(q), 16)
	return append(b, '"')
}
