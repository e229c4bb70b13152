package relay

import (
	"crypto/ecdsa"
	"testing"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/op-replicator/op-replicator/plugin/internal/testkit"
	"github.com/stretchr/testify/require"

	"github.com/ethereum-optimism/optimism/op-service/eth"
)

func TestVerifySigned(t *testing.T) {
	cfg := testRollup
	seq, old, other := testkit.Key(1), testkit.Key(2), testkit.Key(3)
	addr := func(k *ecdsa.PrivateKey) common.Address { return crypto.PubkeyToAddress(k.PublicKey) }
	beacon := common.Hash{0xbe}
	env := func() *eth.ExecutionPayloadEnvelope {
		p := *buildChain(1, 0, 0)[0].ExecutionPayload
		return &eth.ExecutionPayloadEnvelope{ExecutionPayload: &p, ParentBeaconBlockRoot: &beacon}
	}

	signers := &testkit.Signers{Current: addr(seq)}
	require.NoError(t, VerifySigned(cfg, signers, sign(t, seq, env())))

	require.ErrorIs(t, VerifySigned(cfg, signers, sign(t, other, env())), ErrBadSignature, "another key")

	s := sign(t, seq, env())
	s.Envelope.ExecutionPayload.GasUsed++ // altered after signing: the hash no longer matches
	require.ErrorIs(t, VerifySigned(cfg, signers, s), ErrBadInput)

	s = sign(t, seq, env())
	s.Envelope.ExecutionPayload.GasUsed++
	hash, _ := s.Envelope.CheckBlockHash()
	s.Envelope.ExecutionPayload.BlockHash = hash // altered and re-hashed: the signature no longer matches
	require.ErrorIs(t, VerifySigned(cfg, signers, s), ErrBadSignature)

	rotated := &testkit.Signers{Current: addr(seq), Previous: addr(old)}
	require.NoError(t, VerifySigned(cfg, rotated, sign(t, old, env())), "previous signer within the grace period")
	require.Equal(t, addr(old), rotated.Previous, "a block of the previous signer does not end the grace period")
	require.NoError(t, VerifySigned(cfg, rotated, sign(t, seq, env())))
	require.Zero(t, rotated.Previous, "a block of the new signer ends the grace period")
	require.ErrorIs(t, VerifySigned(cfg, rotated, sign(t, old, env())), ErrBadSignature, "previous signer after it")

	require.ErrorIs(t, VerifySigned(cfg, &testkit.Signers{}, sign(t, seq, env())), ErrBadSignature, "no signer known")
}
