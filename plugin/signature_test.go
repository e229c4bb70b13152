package plugin

import (
	"context"
	"crypto/ecdsa"
	"testing"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/stretchr/testify/require"

	"github.com/ethereum-optimism/optimism/op-node/rollup"
	"github.com/ethereum-optimism/optimism/op-service/eth"
	opsigner "github.com/ethereum-optimism/optimism/op-service/signer"

	"github.com/op-replicator/op-replicator/driverhook"
)

// fakeSigners is op-node's runtime config: a current and a previous signer; confirming the current one ends
// the previous one's grace period.
type fakeSigners struct{ current, previous common.Address }

func (f *fakeSigners) P2PSequencerAddress() common.Address         { return f.current }
func (f *fakeSigners) PreviousP2PSequencerAddress() common.Address { return f.previous }
func (f *fakeSigners) ConfirmCurrentSigner()                       { f.previous = common.Address{} }

// signBlock signs an envelope as the sequencer's op-node does for gossip; the block hash is made to match the header.
func signBlock(t *testing.T, cfg *rollup.Config, key *ecdsa.PrivateKey, env *eth.ExecutionPayloadEnvelope) *opsigner.SignedExecutionPayloadEnvelope {
	t.Helper()
	if hash, ok := env.CheckBlockHash(); !ok {
		env.ExecutionPayload.BlockHash = hash
	}
	signed, err := driverhook.SignEnvelope(context.Background(), opsigner.NewLocalSigner(key), cfg.L2ChainID, env)
	require.NoError(t, err)
	return signed
}

func TestVerifySigned(t *testing.T) {
	cfg := testRollupConfig()
	seq, old, other := testKey(1), testKey(2), testKey(3)
	addr := func(k *ecdsa.PrivateKey) common.Address { return crypto.PubkeyToAddress(k.PublicKey) }
	beacon := common.Hash{0xbe}
	env := func() *eth.ExecutionPayloadEnvelope {
		b := buildChain(t, cfg, 1, 0, 0)[0]
		p := *b.env.ExecutionPayload
		return &eth.ExecutionPayloadEnvelope{ExecutionPayload: &p, ParentBeaconBlockRoot: &beacon}
	}

	signers := &fakeSigners{current: addr(seq)}
	require.NoError(t, verifySigned(cfg, signers, signBlock(t, cfg, seq, env())))

	require.ErrorIs(t, verifySigned(cfg, signers, signBlock(t, cfg, other, env())), errBadSignature, "another key")

	s := signBlock(t, cfg, seq, env())
	s.Envelope.ExecutionPayload.GasUsed++ // altered after signing: the hash no longer matches
	require.ErrorIs(t, verifySigned(cfg, signers, s), errBadInput)

	s = signBlock(t, cfg, seq, env())
	s.Envelope.ExecutionPayload.GasUsed++
	hash, _ := s.Envelope.CheckBlockHash()
	s.Envelope.ExecutionPayload.BlockHash = hash // altered and re-hashed: the signature no longer matches
	require.ErrorIs(t, verifySigned(cfg, signers, s), errBadSignature)

	rotated := &fakeSigners{current: addr(seq), previous: addr(old)}
	require.NoError(t, verifySigned(cfg, rotated, signBlock(t, cfg, old, env())), "previous signer within the grace period")
	require.Equal(t, addr(old), rotated.previous, "a block of the previous signer does not end the grace period")
	require.NoError(t, verifySigned(cfg, rotated, signBlock(t, cfg, seq, env())))
	require.Zero(t, rotated.previous, "a block of the new signer ends the grace period")
	require.ErrorIs(t, verifySigned(cfg, rotated, signBlock(t, cfg, old, env())), errBadSignature, "previous signer after it")

	require.ErrorIs(t, verifySigned(cfg, &fakeSigners{}, signBlock(t, cfg, seq, env())), errBadSignature, "no signer known")
}

func testKey(i byte) *ecdsa.PrivateKey {
	k, err := crypto.ToECDSA(common.LeftPadBytes([]byte{i}, 32))
	if err != nil {
		panic(err)
	}
	return k
}
