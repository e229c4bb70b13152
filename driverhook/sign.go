package driverhook

import (
	"bytes"
	"context"
	"fmt"
	"math/big"

	"github.com/ethereum-optimism/optimism/op-service/eth"
	opsigner "github.com/ethereum-optimism/optimism/op-service/signer"
)

// SignedPublisher publishes a block already signed (op-node's p2p.GossipOut).
type SignedPublisher interface {
	PublishSignedL2Payload(ctx context.Context, signed *opsigner.SignedExecutionPayloadEnvelope) error
}

// SignAndPublish is a sequencer's publication of its block when it runs the service (its relay): the block is signed
// as op-node's P2P publisher signs it, handed to the service, then published.
func SignAndPublish(ctx context.Context, svc Service, signer opsigner.BlockSigner, l2ChainID *big.Int, env *eth.ExecutionPayloadEnvelope, out SignedPublisher) error {
	signed, err := SignEnvelope(ctx, signer, l2ChainID, env)
	if err != nil {
		return err
	}
	svc.OnSignedUnsafeL2Payload(ctx, signed)
	return out.PublishSignedL2Payload(ctx, signed)
}

// SignEnvelope signs a block as op-node's P2P publisher does (so the result is exactly what it gossips), for the
// sequencer to keep the signed block for its relay.
func SignEnvelope(ctx context.Context, signer opsigner.BlockSigner, l2ChainID *big.Int, env *eth.ExecutionPayloadEnvelope) (*opsigner.SignedExecutionPayloadEnvelope, error) {
	raw, err := SignedBytes(env)
	if err != nil {
		return nil, fmt.Errorf("encode block %s to sign: %w", env.ExecutionPayload.ID(), err)
	}
	sig, err := signer.SignBlockV1(ctx, eth.ChainIDFromBig(l2ChainID), opsigner.PayloadHash(raw))
	if err != nil {
		return nil, fmt.Errorf("sign block %s: %w", env.ExecutionPayload.ID(), err)
	}
	return &opsigner.SignedExecutionPayloadEnvelope{Envelope: env, Signature: sig}, nil
}

// SignedBytes are the bytes the sequencer signs, as gossiped: the SSZ envelope from Ecotone on (it carries the
// parent beacon block root), the SSZ payload before.
func SignedBytes(env *eth.ExecutionPayloadEnvelope) ([]byte, error) {
	var buf bytes.Buffer
	var err error
	if env.ParentBeaconBlockRoot != nil {
		_, err = env.MarshalSSZ(&buf)
	} else {
		_, err = env.ExecutionPayload.MarshalSSZ(&buf)
	}
	return buf.Bytes(), err
}
