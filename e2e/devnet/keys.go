package devnet

import (
	"crypto/ecdsa"
	"encoding/hex"
	"fmt"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"
)

// devKey derives a fixed secp256k1 key from a role name, so that addresses, peer IDs and the
// unsafe-block signer are identical in every run and easy to recognise in logs.
func devKey(role string) *ecdsa.PrivateKey {
	key, err := crypto.ToECDSA(crypto.Keccak256([]byte("op-replicator/devnet/" + role)))
	if err != nil {
		panic(fmt.Sprintf("devnet key %q: %v", role, err)) // only for a keccak output outside the curve order
	}
	return key
}

// keyHex encodes a private key the way op-node and op-batcher flags take it.
func keyHex(key *ecdsa.PrivateKey) string {
	return hex.EncodeToString(crypto.FromECDSA(key))
}

// Keys are the devnet's well-known identities.
type Keys struct {
	// SequencerP2P signs unsafe blocks; its address is the unsafe-block signer in the L1 SystemConfig.
	SequencerP2P *ecdsa.PrivateKey
	// Batcher posts batches to L1; it is the genesis batcher address and funded on L1.
	Batcher *ecdsa.PrivateKey
	// L2Accounts are funded in the L2 genesis, for transaction load.
	L2Accounts []*ecdsa.PrivateKey
}

func newKeys(l2Accounts int) Keys {
	k := Keys{
		SequencerP2P: devKey("sequencer-p2p"),
		Batcher:      devKey("batcher"),
	}
	for i := range l2Accounts {
		k.L2Accounts = append(k.L2Accounts, devKey(fmt.Sprintf("l2-account/%d", i)))
	}
	return k
}

// address returns the Ethereum address of a key.
func address(key *ecdsa.PrivateKey) common.Address {
	return crypto.PubkeyToAddress(key.PublicKey)
}

// peerKey is the fixed libp2p identity of the op-node called name.
func peerKey(name string) *ecdsa.PrivateKey {
	return devKey("p2p-peer/" + name)
}
