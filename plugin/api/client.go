package api

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/rpc"

	opsigner "github.com/ethereum-optimism/optimism/op-service/signer"
)

// Client calls the replicator namespace of an op-node.
type Client struct{ rpc *rpc.Client }

// NewClient wraps a connection to an op-node's RPC.
func NewClient(c *rpc.Client) *Client { return &Client{rpc: c} }

// Status calls replicator_status.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	var st *Status
	if err := c.rpc.CallContext(ctx, &st, MethodStatus); err != nil {
		return nil, fmt.Errorf("%s: %w", MethodStatus, err)
	}
	return st, nil
}

// BlockStatus calls replicator_blockStatus for a block number, tag or hash.
func (c *Client) BlockStatus(ctx context.Context, id rpc.BlockNumberOrHash) (*BlockStatus, error) {
	var st *BlockStatus
	if err := c.rpc.CallContext(ctx, &st, MethodBlockStatus, id); err != nil {
		return nil, fmt.Errorf("%s: %w", MethodBlockStatus, err)
	}
	return st, nil
}

// EquivocationEvidence calls replicator_equivocationEvidence.
func (c *Client) EquivocationEvidence(ctx context.Context) ([]*Evidence, error) {
	var ev []*Evidence
	if err := c.rpc.CallContext(ctx, &ev, MethodEquivocationEvidence); err != nil {
		return nil, fmt.Errorf("%s: %w", MethodEquivocationEvidence, err)
	}
	return ev, nil
}

// Halt calls replicator_halt (admin), with a detail for replicator_status if not empty.
func (c *Client) Halt(ctx context.Context, detail string) error {
	args := []any{}
	if detail != "" {
		args = append(args, detail)
	}
	if err := c.rpc.CallContext(ctx, nil, MethodHalt, args...); err != nil {
		return fmt.Errorf("%s: %w", MethodHalt, err)
	}
	return nil
}

// Resume calls replicator_resume (admin).
func (c *Client) Resume(ctx context.Context) error {
	if err := c.rpc.CallContext(ctx, nil, MethodResume); err != nil {
		return fmt.Errorf("%s: %w", MethodResume, err)
	}
	return nil
}

// RelayClient calls a relay. Its Raw methods return messages undecoded, for a follower that must refuse a
// malformed block itself instead of losing its subscription to the decoder.
type RelayClient struct{ rpc *rpc.Client }

// NewRelayClient wraps a connection to a relay (websocket, for subscriptions).
func NewRelayClient(c *rpc.Client) *RelayClient { return &RelayClient{rpc: c} }

// Head calls relay_head: the highest height the relay holds (0 if none).
func (c *RelayClient) Head(ctx context.Context) (uint64, error) {
	var n hexutil.Uint64
	if err := c.rpc.CallContext(ctx, &n, MethodRelayHead); err != nil {
		return 0, fmt.Errorf("%s: %w", MethodRelayHead, err)
	}
	return uint64(n), nil
}

// EnvelopeByNumber calls relay_envelopeByNumber: the signed block held at a height, or ethereum.NotFound.
func (c *RelayClient) EnvelopeByNumber(ctx context.Context, n uint64) (*opsigner.SignedExecutionPayloadEnvelope, error) {
	raw, err := c.EnvelopeByNumberRaw(ctx, n)
	if err != nil {
		return nil, err
	}
	var signed *opsigner.SignedExecutionPayloadEnvelope
	if err := json.Unmarshal(raw, &signed); err != nil {
		return nil, fmt.Errorf("%s: %w", MethodRelayEnvelopeByNumber, err)
	}
	return signed, nil
}

// EnvelopeByNumberRaw is EnvelopeByNumber, undecoded.
func (c *RelayClient) EnvelopeByNumberRaw(ctx context.Context, n uint64) (json.RawMessage, error) {
	var raw json.RawMessage
	if err := c.rpc.CallContext(ctx, &raw, MethodRelayEnvelopeByNumber, hexutil.Uint64(n)); err != nil {
		return nil, fmt.Errorf("%s: %w", MethodRelayEnvelopeByNumber, err)
	}
	if len(raw) == 0 || string(raw) == "null" { // a gap in the relay's window
		return nil, ethereum.NotFound
	}
	return raw, nil
}

// EnvelopesByRangeRaw calls relay_envelopesByRange: the signed blocks the relay holds at consecutive heights from
// from on, at most count, undecoded; none if it holds nothing at from.
func (c *RelayClient) EnvelopesByRangeRaw(ctx context.Context, from, count uint64) ([]json.RawMessage, error) {
	var raw []json.RawMessage
	if err := c.rpc.CallContext(ctx, &raw, MethodRelayEnvelopesByRange, hexutil.Uint64(from), hexutil.Uint64(count)); err != nil {
		return nil, fmt.Errorf("%s: %w", MethodRelayEnvelopesByRange, err)
	}
	return raw, nil
}

// SubscribeEnvelopes subscribes to the relay's signed blocks from height from on.
func (c *RelayClient) SubscribeEnvelopes(ctx context.Context, from uint64, ch chan<- *opsigner.SignedExecutionPayloadEnvelope) (ethereum.Subscription, error) {
	return c.subscribe(ctx, from, ch)
}

// SubscribeEnvelopesRaw is SubscribeEnvelopes, undecoded.
func (c *RelayClient) SubscribeEnvelopesRaw(ctx context.Context, from uint64, ch chan<- json.RawMessage) (ethereum.Subscription, error) {
	return c.subscribe(ctx, from, ch)
}

func (c *RelayClient) subscribe(ctx context.Context, from uint64, ch any) (ethereum.Subscription, error) {
	sub, err := c.rpc.Subscribe(ctx, RelayNamespace, ch, RelayEnvelopes, hexutil.Uint64(from))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", MethodRelaySubscribe, err)
	}
	return sub, nil
}
