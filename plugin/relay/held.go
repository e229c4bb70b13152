package relay

import (
	"encoding/json"
	"sync"
	"time"

	"github.com/ethereum/go-ethereum/common"

	"github.com/ethereum-optimism/optimism/op-service/eth"
	opsigner "github.com/ethereum-optimism/optimism/op-service/signer"
)

// Held is a sequencer-signed block the node holds, with where and when it came from. It is either in memory (the
// decoded block, and its JSON once encoded) or spilled to the store's disk window (--replicator.relay.window.dir):
// then only what the store's logic reads (number, hashes, source, arrival, history) stays in memory, and the JSON
// is read from disk for every use. A Held is never changed once made: spilling a block replaces it in the store
// with a spilled copy, so that whoever holds the in-memory one (a subscriber's queue) keeps a complete block.
type Held struct {
	Source  string
	Arrived time.Time
	// History: the block was older than ReplayAge when it arrived.
	History bool

	number uint64
	hash   common.Hash
	parent common.Hash

	signed *opsigner.SignedExecutionPayloadEnvelope // nil once spilled
	disk   *diskWindow                              // where a spilled block's JSON is, under its hash
	size   int64                                    // memory estimate (heldSize), or the JSON's bytes once spilled

	encodeOnce sync.Once
	encoded    json.RawMessage
	prepared   *encodedResult
	encodeErr  error
}

// NewHeld is a signed block held in memory.
func NewHeld(signed *opsigner.SignedExecutionPayloadEnvelope, source string, arrived time.Time) *Held {
	p := signed.Envelope.ExecutionPayload
	return &Held{Source: source, Arrived: arrived, number: uint64(p.BlockNumber), hash: p.BlockHash,
		parent: p.ParentHash, signed: signed, size: heldSize(signed)}
}

func (h *Held) Number() uint64          { return h.number }
func (h *Held) Hash() common.Hash       { return h.hash }
func (h *Held) ParentHash() common.Hash { return h.parent }
func (h *Held) ID() eth.BlockID         { return eth.BlockID{Hash: h.hash, Number: h.number} }

// Spilled reports whether the block is held on disk.
func (h *Held) Spilled() bool { return h.disk != nil }

// Signed returns the signed block: the one held in memory, or, spilled, a copy decoded from its JSON on disk. A
// spilled block that cannot be read is not held (ErrNotHeld; the disk error is logged and counted).
func (h *Held) Signed() (*opsigner.SignedExecutionPayloadEnvelope, error) {
	if h.disk == nil {
		return h.signed, nil
	}
	msg, err := h.disk.get(h.hash)
	if err != nil {
		return nil, err
	}
	signed, err := DecodeEnvelope(msg)
	if err != nil || signed.Envelope.ExecutionPayload.BlockHash != h.hash {
		// What the store wrote is not what it reads back: never a wrong block.
		return nil, h.disk.corrupt(h.hash, err)
	}
	return signed, nil
}

// IsHistory reports whether a signed block arriving at now is older than ReplayAge by its timestamp.
func IsHistory(signed *opsigner.SignedExecutionPayloadEnvelope, now time.Time) bool {
	ts := time.Unix(int64(signed.Envelope.ExecutionPayload.Timestamp), 0)
	return now.Sub(ts) > ReplayAge
}

// JSON returns the envelope's JSON encoding: in memory, computed once for every subscriber it is relayed to;
// spilled, the bytes written to disk when it was spilled (the same bytes), read again for every use.
func (h *Held) JSON() (json.RawMessage, error) {
	if h.disk != nil {
		return h.disk.get(h.hash)
	}
	h.encode()
	return h.encoded, h.encodeErr
}

// result is the envelope as a subscription notification's result, prepared once for every subscriber it is relayed
// to (the relay's websocket codec writes it without encoding it again); spilled, prepared from disk at each use.
func (h *Held) result() (*encodedResult, error) {
	if h.disk != nil {
		msg, err := h.disk.get(h.hash)
		if err != nil {
			return nil, err
		}
		return newEncodedResult(msg)
	}
	h.encode()
	return h.prepared, h.encodeErr
}

func (h *Held) encode() {
	h.encodeOnce.Do(func() {
		if h.encoded, h.encodeErr = marshalSigned(h.signed); h.encodeErr == nil {
			h.prepared = marshaledResult(h.encoded)
		}
	})
}

// heldSizeOverhead approximates the bytes of a decoded block besides its transactions, extra data and withdrawals:
// the header's fixed fields (the 256-byte logs bloom, hashes, quantities), the signature and the Go structures
// around them.
const heldSizeOverhead = 1024

// heldSize estimates the bytes a block held in memory takes as decoded: its transactions, extra data and
// withdrawals, and heldSizeOverhead. Its JSON, once encoded for relaying, takes about twice that again (hex).
func heldSize(signed *opsigner.SignedExecutionPayloadEnvelope) int64 {
	p := signed.Envelope.ExecutionPayload
	n := int64(heldSizeOverhead + len(p.ExtraData))
	for _, tx := range p.Transactions {
		n += int64(len(tx)) + 24 // the slice header
	}
	if p.Withdrawals != nil {
		n += int64(len(*p.Withdrawals)) * 48
	}
	return n
}
