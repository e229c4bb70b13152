package source

import (
	"context"
	"fmt"

	"github.com/ethereum/go-ethereum"

	"github.com/ethereum-optimism/optimism/op-service/eth"

	"github.com/op-replicator/op-replicator/plugin/relay"
)

// relaySource is another node's relay as a source: a relay.Client, which checks the sequencer's signature on every
// block and holds it in the shared store (where two signed blocks at one height become equivocation evidence).
type relaySource struct{ c *relay.Client }

var _ Source = relaySource{}

func (s relaySource) Name() string                              { return s.c.Name() }
func (s relaySource) NewHeads() <-chan struct{}                 { return s.c.NewHeads() }
func (s relaySource) Start(ctx context.Context) error           { return s.c.Start(ctx) }
func (s relaySource) Stop(ctx context.Context) error            { return s.c.Stop(ctx) }
func (s relaySource) Head(context.Context) (eth.BlockID, error) { return s.c.Head() }

func (s relaySource) Payload(ctx context.Context, n uint64) (*eth.ExecutionPayloadEnvelope, error) {
	held, err := s.c.Envelope(ctx, n)
	if err != nil {
		return nil, err
	}
	signed, err := held.Signed()
	if err != nil { // spilled to the disk window and unreadable: as if not held, the relay's gap
		return nil, fmt.Errorf("relay %s: block %d: %w", s.c.Name(), n, ethereum.NotFound)
	}
	return signed.Envelope, nil
}
