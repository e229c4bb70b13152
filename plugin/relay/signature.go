package relay

import (
	"fmt"

	"github.com/ethereum/go-ethereum/common"

	"github.com/ethereum-optimism/optimism/op-node/rollup"
	"github.com/ethereum-optimism/optimism/op-service/eth"
	opsigner "github.com/ethereum-optimism/optimism/op-service/signer"

	"github.com/op-replicator/op-replicator/driverhook"
)

// Signers is op-node's runtime config as the signature check needs it (driverhook.Signers): the unsafe-block
// signer from the SystemConfig on L1, the previous one during its grace period after a rotation, and the end of
// that grace period.
type Signers interface {
	P2PSequencerAddress() common.Address
	PreviousP2PSequencerAddress() common.Address
	ConfirmCurrentSigner()
}

// VerifySigned checks a sequencer-signed block as op-node's gossip does: its block hash must be its header's,
// and its signature must recover to the unsafe-block signer op-node itself uses (from the SystemConfig on L1),
// or to the previous signer during the grace period after a rotation (which a block of the current signer ends).
func VerifySigned(cfg *rollup.Config, signers Signers, s *opsigner.SignedExecutionPayloadEnvelope) error {
	if s == nil || s.Envelope == nil || s.Envelope.ExecutionPayload == nil {
		return fmt.Errorf("%w: empty envelope", ErrBadInput)
	}
	if actual, ok := s.Envelope.CheckBlockHash(); !ok {
		return fmt.Errorf("%w: block %s has header hash %s", ErrBadInput, s.ID(), actual)
	}
	signed, err := driverhook.SignedBytes(s.Envelope)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadInput, err)
	}
	block := opsigner.SignedP2PBlock{Raw: signed, Signature: s.Signature}
	chain := eth.ChainIDFromBig(cfg.L2ChainID)
	for i, signer := range []common.Address{signers.P2PSequencerAddress(), signers.PreviousP2PSequencerAddress()} {
		if signer == (common.Address{}) {
			continue
		}
		if block.VerifySignature(&opsigner.OPStackP2PBlockAuthV1{Allowed: signer, Chain: chain}) == nil {
			if i == 0 {
				signers.ConfirmCurrentSigner() // the new signer is in use: the previous one's grace period ends
			}
			return nil
		}
	}
	return fmt.Errorf("%w: block %s (signer %s)", ErrBadSignature, s.ID(), signers.P2PSequencerAddress())
}
