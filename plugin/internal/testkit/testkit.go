// Package testkit holds the test fixtures the replicator's packages share: sequencer keys, a fake of op-node's
// signer config, signing as the sequencer's op-node signs for gossip, go-ethereum's RPC server's messages as it
// hands them to a codec (gethcodec.go), the test chain and its blocks (chain.go; isthmus.go, a block as today's
// op-geth builds it), and a fake source serving them (source.go). Only tests import it.
package testkit

import (
	"context"
	"crypto/ecdsa"
	"math/big"
	"sync"
	"testing"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/stretchr/testify/require"

	"github.com/ethereum-optimism/optimism/op-service/eth"
	opsigner "github.com/ethereum-optimism/optimism/op-service/signer"

	"github.com/op-replicator/op-replicator/driverhook"
)

// Key is the i-th test key.
func Key(i byte) *ecdsa.PrivateKey {
	k, err := crypto.ToECDSA(common.LeftPadBytes([]byte{i}, 32))
	if err != nil {
		panic(err)
	}
	return k
}

// Addr is the address of the i-th test key.
func Addr(i byte) common.Address { return crypto.PubkeyToAddress(Key(i).PublicKey) }

// Signers is op-node's signer config (driverhook.Signers): the current unsafe-block signer and the previous one.
// Safe for concurrent use, as op-node's runtime config is (a relay client verifies blocks concurrently); set the
// fields before sharing it.
type Signers struct {
	Current, Previous common.Address
	mu                sync.Mutex
}

func (f *Signers) P2PSequencerAddress() common.Address {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.Current
}

func (f *Signers) PreviousP2PSequencerAddress() common.Address {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.Previous
}

func (f *Signers) ConfirmCurrentSigner() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Previous = common.Address{}
}

// Sign signs an envelope as the sequencer's op-node does for gossip; the block hash is made to match the header.
func Sign(t testing.TB, chainID *big.Int, key *ecdsa.PrivateKey, env *eth.ExecutionPayloadEnvelope) *opsigner.SignedExecutionPayloadEnvelope {
	t.Helper()
	if hash, ok := env.CheckBlockHash(); !ok {
		env.ExecutionPayload.BlockHash = hash
	}
	signed, err := driverhook.SignEnvelope(context.Background(), opsigner.NewLocalSigner(key), chainID, env)
	require.NoError(t, err)
	return signed
}
