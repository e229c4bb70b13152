package relay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/log"
	"github.com/ethereum/go-ethereum/rpc"

	"github.com/ethereum-optimism/optimism/op-node/rollup"
	"github.com/ethereum-optimism/optimism/op-service/clock"
	"github.com/ethereum-optimism/optimism/op-service/eth"
	"github.com/ethereum-optimism/optimism/op-service/retry"
	opsigner "github.com/ethereum-optimism/optimism/op-service/signer"

	"github.com/op-replicator/op-replicator/plugin/api"
	"github.com/op-replicator/op-replicator/plugin/internal/wsdial"
)

// ClientConfig is how a Client reaches its relay and checks what it gets.
type ClientConfig struct {
	// Name names the relay in logs, metrics and provenance (its URL without credentials).
	Name string
	// URL is the relay's websocket endpoint.
	URL     string
	Rollup  *rollup.Config
	Signers Signers
	// Timeout bounds each request; ReadTimeout is how long the subscription may stay silent before it is
	// reconnected.
	Timeout, ReadTimeout time.Duration
}

// Client follows another node's relay: a subscription to its signed blocks (reconnected with backoff when it
// fails or stays silent beyond the read timeout), and get-by-number for gaps. Every block must carry the
// sequencer's signature (VerifySigned); a block that does not is refused and counted, and never halts anything.
// Verified blocks go into the shared store, where two validly signed blocks at one height above the safe head are
// kept as equivocation evidence; the store drops blocks at or below the safe head (replays of settled history).
// At a height holding several signed blocks, the latest arrived is the sequencer's current one and is what the
// client answers with.
type Client struct {
	log      log.Logger
	cfg      ClientConfig
	store    *Store
	evidence *EvidenceLog
	metrics  Metricer
	clock    clock.Clock

	heads  chan struct{}
	head   atomic.Uint64 // highest verified height received
	tried  atomic.Bool   // the first subscription attempt ended: from then on, no block received is a failure
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	client *api.RelayClient // nil while disconnected

	// Fetching below the subscription (client_range.go).
	subFrom  atomic.Uint64 // the height the subscription replays from: below it blocks come by fetch only
	noRange  atomic.Bool   // the relay does not serve relay_envelopesByRange (until the next connection)
	rangeMu  sync.Mutex
	fetching []*rangeFetch       // range fetches in flight
	asking   map[uint64]int      // heights being asked for by range, and by how many
	ahead    map[uint64]*Held    // blocks fetched by range that the store did not take, until asked for
	taken    map[uint64]struct{} // heights taken from ahead lately
}

// NewClient builds a client of a relay; Start connects it.
func NewClient(lgr log.Logger, cfg ClientConfig, store *Store, evidence *EvidenceLog, m Metricer, clk clock.Clock) *Client {
	ctx, cancel := context.WithCancel(context.Background())
	return &Client{log: lgr, cfg: cfg, store: store, evidence: evidence, metrics: m, clock: clk,
		heads: make(chan struct{}, 1), ctx: ctx, cancel: cancel}
}

// Start subscribes to the relay, in the background, until Stop (ctx is Start's own: the subscription outlives it).
func (c *Client) Start(context.Context) error {
	c.wg.Add(1)
	go c.follow(c.ctx)
	return nil
}

// Stop ends the subscription and waits for it to end, or for ctx.
func (c *Client) Stop(ctx context.Context) error {
	c.cancel()
	return waitGroup(ctx, &c.wg, "relay client "+c.cfg.Name)
}

// Name is the relay's name (ClientConfig.Name).
func (c *Client) Name() string { return c.cfg.Name }

// NewHeads is signalled (without blocking) when a verified block arrives.
func (c *Client) NewHeads() <-chan struct{} { return c.heads }

// Head is the highest verified block received from the relay. At or below the safe head it is the safe head
// itself: L1 settled those heights, so no relay has a say there. Before any block, it is ErrNoBlockYet while the
// first subscription attempt lasts (a node starting up asks before the relay could answer), ErrUnavailable after.
func (c *Client) Head() (eth.BlockID, error) {
	n := c.head.Load()
	if n == 0 {
		if !c.tried.Load() {
			return eth.BlockID{}, fmt.Errorf("%w: %s: subscribing", ErrNoBlockYet, c.cfg.Name)
		}
		return eth.BlockID{}, fmt.Errorf("%w: %s: no block received yet", ErrUnavailable, c.cfg.Name)
	}
	if safe, ok := c.store.Settled(n); ok {
		return safe, nil
	}
	if h := c.store.Latest(n); h != nil {
		return eth.BlockID{Hash: h.Hash(), Number: n}, nil
	}
	return eth.BlockID{}, fmt.Errorf("%w: %s: block %d no longer held", ErrUnavailable, c.cfg.Name, n)
}

// Envelope returns the verified block at a height: held already (from any source; the latest arrived wins), or
// asked of the relay: by range below what the subscription replays (client_range.go), else by number. Heights at or
// below the safe head are not asked for: whatever a relay has there is a replay the store drops. Not connected, it
// is ErrNoBlockYet while the first subscription attempt lasts, ErrUnavailable after (as Head).
func (c *Client) Envelope(ctx context.Context, n uint64) (*Held, error) {
	if safe, ok := c.store.Settled(n); ok {
		return nil, fmt.Errorf("relay %s: block %d is at or below the safe head %d: %w", c.cfg.Name, n, safe.Number, ethereum.NotFound)
	}
	if held := c.store.Latest(n); held != nil {
		return held, nil
	}
	c.mu.Lock()
	client := c.client
	c.mu.Unlock()
	if client == nil {
		if !c.tried.Load() { // as Head: a node starting up asks before the relay could answer
			return nil, fmt.Errorf("%w: %s: subscribing", ErrNoBlockYet, c.cfg.Name)
		}
		return nil, fmt.Errorf("%w: %s: not connected", ErrUnavailable, c.cfg.Name)
	}
	if n < c.subFrom.Load() && !c.noRange.Load() {
		held, err := c.envelopeByRange(ctx, client, n)
		if !rangeUnsupported(err) {
			return held, err
		}
		c.noRange.Store(true)
		c.log.Info("Relay does not serve "+api.MethodRelayEnvelopesByRange+": fetching one block a call", "relay", c.cfg.Name)
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	start := c.clock.Now()
	msg, err := client.EnvelopeByNumberRaw(ctx, n)
	arrived := c.clock.Now()
	c.metrics.RecordSourceRequest("relay_envelope", arrived.Sub(start))
	switch {
	case errors.Is(err, ethereum.NotFound): // a gap in the relay's window
		return nil, err
	case err != nil:
		return nil, fmt.Errorf("%w: %s: %w", ErrUnavailable, c.cfg.Name, err)
	}
	return c.verifyFetched(msg, n, arrived)
}

// accept verifies a block from the relay that arrived (was read whole) at arrived, and holds it. A block the store
// refuses (ErrReplay, ErrHeightFull, ErrBelowWindow; counted and logged there) is not held and never evidence.
func (c *Client) accept(signed *opsigner.SignedExecutionPayloadEnvelope, arrived time.Time) (*Held, error) {
	if err := VerifySigned(c.cfg.Rollup, c.cfg.Signers, signed); err != nil {
		return nil, c.refuse(err)
	}
	held, _, conflicts, err := c.store.Add(signed, c.cfg.Name, arrived)
	if err != nil {
		return nil, err
	}
	for _, other := range conflicts {
		c.evidence.Record(other, held)
	}
	for {
		cur := c.head.Load()
		if held.Number() <= cur || c.head.CompareAndSwap(cur, held.Number()) {
			break
		}
	}
	return held, nil
}

// refuse counts and logs a block from the relay that is malformed (ErrBadInput) or not signed by the sequencer
// (ErrBadSignature), and returns err.
func (c *Client) refuse(err error) error {
	c.metrics.RecordClientError(err)
	c.log.Warn("Refusing block from relay", "relay", c.cfg.Name, "err", err)
	return err
}

// DecodeEnvelope decodes a signed block as a relay sends it. A message without a payload is bad input: callers
// read the block's number before its signature is checked.
func DecodeEnvelope(msg json.RawMessage) (*opsigner.SignedExecutionPayloadEnvelope, error) {
	var signed *opsigner.SignedExecutionPayloadEnvelope
	if err := json.Unmarshal(msg, &signed); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadInput, err)
	}
	return checkDecoded(signed)
}

// checkDecoded refuses a decoded message without a block.
func checkDecoded(signed *opsigner.SignedExecutionPayloadEnvelope) (*opsigner.SignedExecutionPayloadEnvelope, error) {
	if signed == nil || signed.Envelope == nil || signed.Envelope.ExecutionPayload == nil {
		return nil, fmt.Errorf("%w: a message without a block", ErrBadInput)
	}
	return signed, nil
}

// follow keeps a subscription to the relay, from the block after the highest one received.
func (c *Client) follow(ctx context.Context) {
	defer c.wg.Done()
	backoff := retry.Exponential()
	for attempt := 0; ctx.Err() == nil; attempt++ {
		err := c.subscribe(ctx, func() { attempt = 0 })
		c.tried.Store(true)
		if ctx.Err() != nil {
			return
		}
		err = fmt.Errorf("%w: %s: %w", ErrUnavailable, c.cfg.Name, err)
		c.metrics.RecordClientError(err)
		c.log.Warn("Relay subscription ended, reconnecting", "relay", c.cfg.Name, "err", err, "attempt", attempt+1)
		select {
		case <-c.clock.After(backoff.Duration(attempt)):
		case <-ctx.Done():
			return
		}
	}
}

func (c *Client) subscribe(ctx context.Context, onMessage func()) error {
	dialCtx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	conn, err := rpc.DialContext(dialCtx, c.cfg.URL)
	cancel()
	if err != nil {
		return err
	}
	client := api.NewRelayClient(conn)
	c.mu.Lock()
	c.client = client
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.client = nil
		c.mu.Unlock()
		conn.Close()
	}()
	// From the block after the highest received, and above the safe head: the store would drop anything lower.
	from := c.head.Load() + 1
	if safe := c.store.SafeHead(); safe != (eth.BlockID{}) && safe.Number >= from {
		from = safe.Number + 1
	}
	// And no lower than the store's window below the relay's head: the replay is in ascending order, so with a
	// backlog deeper than the window each block below it would be decoded, verified and held only to be evicted by
	// the replay's own later blocks, then fetched and verified again by number when the node gets to it (twice the
	// work per block through an hour-deep backlog: docs/benchmarks.md, backlog depth). A relay that does not
	// answer its head is followed from where we are, as before.
	if head, err := c.relayHead(ctx, client); err == nil && head >= uint64(c.store.Window()) {
		from = max(from, head-uint64(c.store.Window())+1)
	}
	// The subscription, on a connection of its own (client_subscription.go). A malformed block is refused and
	// counted like a badly signed one; the subscription goes on.
	dialer, err := wsdial.New(c.cfg.URL, subscriptionReadLimit)
	if err != nil {
		return err
	}
	sub, err := subscribeRelay(ctx, dialer, from, c.cfg.Timeout, c.cfg.ReadTimeout, c.clock.Now)
	if err != nil {
		return err
	}
	defer sub.Close()
	c.subFrom.Store(from)
	c.noRange.Store(false) // a new connection: perhaps to a relay upgraded meanwhile
	c.log.Info("Following relay", "relay", c.cfg.Name, "from", from)
	for {
		signed, err := sub.Next()
		if errors.Is(err, ErrBadInput) {
			onMessage()
			c.refuse(err)
			continue
		} else if err != nil {
			return err
		}
		onMessage()
		// Arrived when read, before it was decoded and its signature checked: a relay that forwards it counts
		// from there (relay_forward_seconds), so that its figure is all this node adds to the hop.
		if _, err := c.accept(signed, sub.received); err == nil {
			select {
			case c.heads <- struct{}{}:
			default:
			}
		}
	}
}

// relayHead is the relay's highest held height.
func (c *Client) relayHead(ctx context.Context, client *api.RelayClient) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	return client.Head(ctx)
}

// waitGroup waits for wg, or for ctx: then the goroutines of what is named are still running (an error).
func waitGroup(ctx context.Context, wg *sync.WaitGroup, what string) error {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%s still stopping: %w", what, ctx.Err())
	}
}
