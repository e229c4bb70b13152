package relay

import (
	"crypto/ecdsa"
	"errors"
	"math/big"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/log"

	"github.com/ethereum-optimism/optimism/op-node/rollup"
	"github.com/ethereum-optimism/optimism/op-service/eth"
	opsigner "github.com/ethereum-optimism/optimism/op-service/signer"

	"github.com/op-replicator/op-replicator/plugin/internal/testkit"
)

// testRollup is all of a rollup config the relay reads: the chain ID signatures are bound to.
var testRollup = &rollup.Config{L2ChainID: big.NewInt(901)}

// chainStart is the test chains' genesis time: now, so that their blocks are not history (ReplayAge) to a store
// adding them at the system clock's time.
var chainStart = uint64(time.Now().Unix())

// buildChain returns blocks 1..n with valid header hashes, each on the one before; from height divergeAt on,
// variant makes them other blocks than variant 0's.
func buildChain(n uint64, variant byte, divergeAt uint64) []*eth.ExecutionPayloadEnvelope {
	beacon := common.Hash{0xbe}
	parent := common.Hash{0x9e}
	var out []*eth.ExecutionPayloadEnvelope
	for i := uint64(1); i <= n; i++ {
		v := byte(0)
		if i >= divergeAt {
			v = variant
		}
		env := &eth.ExecutionPayloadEnvelope{ParentBeaconBlockRoot: &beacon, ExecutionPayload: &eth.ExecutionPayload{
			ParentHash:   parent,
			BlockNumber:  eth.Uint64Quantity(i),
			StateRoot:    eth.Bytes32{0x22, v, byte(i >> 8), byte(i)},
			Timestamp:    eth.Uint64Quantity(chainStart + 2*i),
			GasLimit:     30_000_000,
			Transactions: []eth.Data{},
		}}
		env.ExecutionPayload.BlockHash, _ = env.CheckBlockHash()
		parent = env.ExecutionPayload.BlockHash
		out = append(out, env)
	}
	return out
}

// signed wraps a block as a signed one without a valid signature: all the store looks at is the block.
func signed(env *eth.ExecutionPayloadEnvelope) *opsigner.SignedExecutionPayloadEnvelope {
	return &opsigner.SignedExecutionPayloadEnvelope{Envelope: env, Signature: eth.Bytes65{1}}
}

// sign signs a copy of a block with key, as the sequencer does.
func sign(t testing.TB, key *ecdsa.PrivateKey, env *eth.ExecutionPayloadEnvelope) *opsigner.SignedExecutionPayloadEnvelope {
	p := *env.ExecutionPayload
	return testkit.Sign(t, testRollup.L2ChainID, key, &eth.ExecutionPayloadEnvelope{ExecutionPayload: &p, ParentBeaconBlockRoot: env.ParentBeaconBlockRoot})
}

// signedChain returns n blocks with valid header hashes, each signed by test key key; variant makes other blocks at
// the same heights.
func signedChain(t testing.TB, key byte, n int, variant byte) []*opsigner.SignedExecutionPayloadEnvelope {
	var out []*opsigner.SignedExecutionPayloadEnvelope
	for _, env := range buildChain(uint64(n), variant, 1) {
		out = append(out, sign(t, testkit.Key(key), env))
	}
	return out
}

// newTestStore is a store of window heights that drops nothing.
func newTestStore(window int) *Store { return NewStore(window, log.Root(), nil, NoopMetrics{}) }

// countingMetrics counts a client's errors by kind.
type countingMetrics struct {
	NoopMetrics
	badSignature, badInput, unavailable atomic.Int64
}

func (c *countingMetrics) RecordClientError(err error) {
	switch {
	case errors.Is(err, ErrBadSignature):
		c.badSignature.Add(1)
	case errors.Is(err, ErrBadInput):
		c.badInput.Add(1)
	case errors.Is(err, ErrUnavailable):
		c.unavailable.Add(1)
	}
}
