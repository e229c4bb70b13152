package relay

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/stretchr/testify/require"

	"github.com/ethereum-optimism/optimism/op-node/rollup"
	"github.com/ethereum-optimism/optimism/op-service/eth"
	opsigner "github.com/ethereum-optimism/optimism/op-service/signer"

	"github.com/op-replicator/op-replicator/driverhook"
	"github.com/op-replicator/op-replicator/plugin/internal/testkit"
)

// FuzzRelayEnvelope feeds relay messages through what a relay source does with one before holding it:
// decodeEnvelope, then VerifySigned (block hash, sequencer's signature). With resign, the block of a decodable
// message is re-hashed and signed by the sequencer first, so that what lies past the signature check is fuzzed too.
// What is accepted hashes to its block hash, is signed by the sequencer's key, and is accepted again, unchanged, by
// the next node it is relayed to. Every decodable message's block is encoded by marshalSigned (as a relay holding it
// encodes it) exactly as json.Marshal encodes it.
func FuzzRelayEnvelope(f *testing.F) {
	cfg := testRollup
	sequencer := testkit.Key(1)
	seqAddr := crypto.PubkeyToAddress(sequencer.PublicKey)
	sign := func(env *eth.ExecutionPayloadEnvelope) (*opsigner.SignedExecutionPayloadEnvelope, error) {
		return driverhook.SignEnvelope(context.Background(), opsigner.NewLocalSigner(sequencer), cfg.L2ChainID, env)
	}
	// signers are op-node's, as they are before a block of the sequencer is seen.
	signers := func() *testkit.Signers { return &testkit.Signers{Current: seqAddr} }

	// The seed passes.
	signed, err := sign(buildChain(1, 0, 0)[0])
	require.NoError(f, err)
	seed, err := json.Marshal(signed)
	require.NoError(f, err)
	signed, err = DecodeEnvelope(seed)
	require.NoError(f, err)
	require.NoError(f, VerifySigned(cfg, signers(), signed))
	f.Add(seed, false)

	f.Fuzz(func(t *testing.T, msg []byte, resign bool) {
		if resign {
			if s, err := DecodeEnvelope(msg); err == nil {
				s.Envelope.ExecutionPayload.BlockHash, _ = s.Envelope.CheckBlockHash()
				if s, err = sign(s.Envelope); err == nil {
					msg, _ = json.Marshal(s)
				}
			}
		}
		signed, err := DecodeEnvelope(msg)
		if err != nil {
			require.ErrorIs(t, err, ErrBadInput)
			return
		}
		require.NotNil(t, signed.Envelope.ExecutionPayload, "decoded without a block") // envelope() reads its number
		// What a relay would hold of it is encoded as encoding/json encodes it.
		want, err := json.Marshal(signed)
		require.NoError(t, err)
		got, err := marshalSigned(signed)
		require.NoError(t, err)
		require.Equal(t, string(want), string(got), "marshalSigned differs from json.Marshal")
		if err := VerifySigned(cfg, signers(), signed); err != nil {
			require.True(t, errors.Is(err, ErrBadInput) || errors.Is(err, ErrBadSignature), "unexpected error: %v", err)
			return
		}

		actual, ok := signed.Envelope.CheckBlockHash()
		require.True(t, ok, "accepted block %s hashes to %s", signed.ID(), actual)
		require.Equal(t, seqAddr, signerOf(t, cfg, signed), "accepted a block the sequencer did not sign")

		// Relayed on as the relay serves it (Held.JSON), the next node accepts it, and relays it unchanged.
		relayed, err := marshalSigned(signed)
		require.NoError(t, err)
		again, err := DecodeEnvelope(relayed)
		require.NoError(t, err, "the next node cannot decode a block this one accepted")
		require.NoError(t, VerifySigned(cfg, signers(), again), "the next node refuses a block this one accepted")
		relayedAgain, err := marshalSigned(again)
		require.NoError(t, err)
		require.Equal(t, string(relayed), string(relayedAgain))
	})
}

// signerOf recovers who signed a block as op-node's gossip signs it (the signed bytes as driverhook.SignedBytes
// chooses them, in the L2 chain's block-signing domain).
func signerOf(t *testing.T, cfg *rollup.Config, signed *opsigner.SignedExecutionPayloadEnvelope) common.Address {
	raw, err := driverhook.SignedBytes(signed.Envelope)
	require.NoError(t, err)
	msg := opsigner.BlockSigningMessage{Domain: opsigner.SigningDomainBlocksV1, ChainID: eth.ChainIDFromBig(cfg.L2ChainID),
		PayloadHash: opsigner.PayloadHash(raw)}
	hash := msg.ToSigningHash()
	pub, err := crypto.SigToPub(hash[:], signed.Signature[:])
	require.NoError(t, err)
	return crypto.PubkeyToAddress(*pub)
}
