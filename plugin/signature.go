package plugin

import (
	"errors"
	"fmt"

	"github.com/ethereum/go-ethereum/common"

	"github.com/ethereum-optimism/optimism/op-node/rollup"
	"github.com/ethereum-optimism/optimism/op-service/eth"
	opsigner "github.com/ethereum-optimism/optimism/op-service/signer"

	"github.com/op-replicator/op-replicator/driverhook"
)

// errBadSignature: a block from a relay is not signed by the sequencer. It is refused; it never halts.
var errBadSignature = errors.New("not signed by the unsafe-block signer")

// verifySigned checks a sequencer-signed block as op-node's gossip does: its block hash must be its header's,
// and its signature must recover to the unsafe-block signer op-node itself uses (from the SystemConfig on L1),
// or to the previous signer during the grace period after a rotation (which a block of the current signer ends).
func verifySigned(cfg *rollup.Config, signers driverhook.Signers, s *opsigner.SignedExecutionPayloadEnvelope) error {
	if s == nil || s.Envelope == nil || s.Envelope.ExecutionPayload == nil {
		return fmt.Errorf("%w: empty envelope", errBadInput)
	}
	if actual, ok := s.Envelope.CheckBlockHash(); !ok {
		return fmt.Errorf("%w: block %s has header hash %s", errBadInput, s.ID(), actual)
	}
	signed, err := driverhook.SignedBytes(s.Envelope)
	if err != nil {
		return fmt.Errorf("%w: %v", errBadInput, err)
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
	return fmt.Errorf("%w: block %s (signer %s)", errBadSignature, s.ID(), signers.P2PSequencerAddress())
}
