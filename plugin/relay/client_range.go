package relay

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/rpc"

	"github.com/op-replicator/op-replicator/plugin/api"
)

// Fetching by range. A follower far behind its relay (a fresh node, or one back from a long stop, with an unsafe
// backlog deeper than its window) gets the top --replicator.relay.window heights from its subscription's replay and
// every block below them by fetch, as it gets to them. One call a block would be paced by the relay's per-client
// rate (--replicator.relay.rate-limit, 50 calls/s by default): docs/benchmarks.md measured every such catch-up at
// 54-56 blocks/s, against the ~130 blocks/s the engine executes. Below the subscription the client therefore asks
// relay_envelopesByRange for up to fetchRange blocks at once, keeps the ones the store does not take (they are below
// its window) until the node asks for them, and lets the prefetcher's concurrent asks within a range in flight wait
// for it instead of asking again.

// fetchRange is how many blocks one range fetch asks for: half the replicator's deepest read-ahead (catchUpDepth,
// 64), so that the next range is on its way while the node takes the blocks of one.
const fetchRange = MaxRange / 2

// maxAhead bounds the blocks fetched by range and not yet asked for: the replicator's deepest read-ahead, which is
// as far ahead as it asks (the prefetcher holds as many decoded). Beyond it the lowest go (the node has moved past
// them, or will fetch them again).
const maxAhead = MaxRange

// rangeFetch is a range fetch in flight: [from, to), and its outcome once done is closed.
type rangeFetch struct {
	from, to uint64
	done     chan struct{}
	err      error
}

// envelopeByRange returns the block at height n, below what the subscription replays: fetched by an earlier range,
// or by a range in flight that covers it, or by a new range. The prefetcher's concurrent asks reach the client in
// any order; a new range starts at the lowest of the heights asked for meanwhile just below n (none held or
// fetched), so that they make one range and not one each, and goes on up to fetchRange heights, before the next
// height held or fetched. If its answer does not hold n (the relay holds nothing at its first height, or the answer
// ended before n: the message size limit), n is asked for by a range from n.
func (c *Client) envelopeByRange(ctx context.Context, client *api.RelayClient, n uint64) (*Held, error) {
	c.rangeMu.Lock()
	if c.asking == nil {
		c.asking = make(map[uint64]int)
	}
	c.asking[n]++
	c.rangeMu.Unlock()
	defer func() {
		c.rangeMu.Lock()
		if c.asking[n]--; c.asking[n] <= 0 {
			delete(c.asking, n)
		}
		c.rangeMu.Unlock()
	}()
	withAsked := true
	for {
		c.rangeMu.Lock()
		if held, ok := c.ahead[n]; ok {
			delete(c.ahead, n)
			c.markTaken(n)
			c.rangeMu.Unlock()
			return held, nil
		}
		if held := c.store.Latest(n); held != nil { // taken by the store meanwhile
			c.rangeMu.Unlock()
			return held, nil
		}
		if f := c.fetchingAt(n); f != nil {
			c.rangeMu.Unlock()
			select {
			case <-f.done:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			if errors.Is(f.err, ErrUnavailable) {
				return nil, f.err // the relay failed it: asked again, it would fail again
			}
			continue // n held now, or not in the answer (a gap, the size limit, a refused block)
		}
		from := n
		for withAsked && c.asking[from-1] > 0 && c.wanted(from-1) {
			from--
		}
		to := n + 1
		for to < from+fetchRange && c.wanted(to) {
			to++
		}
		f := &rangeFetch{from: from, to: to, done: make(chan struct{})}
		c.fetching = append(c.fetching, f)
		c.rangeMu.Unlock()

		held, err := c.fetchRange(ctx, client, f, n)
		f.err = err
		c.rangeMu.Lock()
		c.fetching = slices.DeleteFunc(c.fetching, func(g *rangeFetch) bool { return g == f })
		c.rangeMu.Unlock()
		close(f.done)
		if held != nil || !errors.Is(err, ethereum.NotFound) || from == n {
			return held, err
		}
		withAsked = false
	}
}

// fetchingAt is the range in flight that covers height n, if any (c.rangeMu held).
func (c *Client) fetchingAt(n uint64) *rangeFetch {
	for _, f := range c.fetching {
		if f.from <= n && n < f.to {
			return f
		}
	}
	return nil
}

// wanted reports whether a range may ask for height h: nothing holds it or fetches it, and the node did not take
// it from ahead lately (c.rangeMu held).
func (c *Client) wanted(h uint64) bool {
	_, ahead := c.ahead[h]
	_, taken := c.taken[h]
	return !ahead && !taken && c.fetchingAt(h) == nil && c.store.Latest(h) == nil
}

// markTaken remembers that the node took height h from ahead, within maxAhead heights: a range from a height below
// it (a retry) does not ask for it again (c.rangeMu held).
func (c *Client) markTaken(h uint64) {
	if c.taken == nil {
		c.taken = make(map[uint64]struct{})
	}
	c.taken[h] = struct{}{}
	for len(c.taken) > maxAhead {
		delete(c.taken, lowestKey(c.taken))
	}
}

// lowestKey is the lowest height of a non-empty set.
func lowestKey[V any](m map[uint64]V) uint64 {
	lowest := uint64(math.MaxUint64)
	for h := range m {
		lowest = min(lowest, h)
	}
	return lowest
}

// fetchRange fetches the blocks of f, verifies them, holds them in the store or (below its window) keeps them in
// ahead, and returns the one at height n. A block that is malformed, badly signed or not at its height is refused
// (counted) and skipped: each block carries a signature of its own. One at or below the safe head is dropped.
func (c *Client) fetchRange(ctx context.Context, client *api.RelayClient, f *rangeFetch, n uint64) (*Held, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	start := c.clock.Now()
	msgs, err := client.EnvelopesByRangeRaw(ctx, f.from, f.to-f.from)
	arrived := c.clock.Now()
	c.metrics.RecordSourceRequest("relay_envelopes", arrived.Sub(start))
	switch {
	case err != nil:
		return nil, fmt.Errorf("%w: %s: %w", ErrUnavailable, c.cfg.Name, err)
	case uint64(len(msgs)) > f.to-f.from:
		return nil, c.refuse(fmt.Errorf("%w: relay %s answered %d blocks for %d", ErrBadInput, c.cfg.Name, len(msgs), f.to-f.from))
	}
	got, gotErr := (*Held)(nil), fmt.Errorf("relay %s: block %d: %w", c.cfg.Name, n, ethereum.NotFound) // a gap, or the size limit
	for i, msg := range msgs {
		h := f.from + uint64(i)
		held, err := c.verifyFetched(msg, h, arrived)
		switch {
		case h == n:
			got, gotErr = held, err
		case err != nil: // refused (counted), or at or below the safe head
		case c.store.Latest(h) != held: // below the store's window: kept until asked for
			c.keepAhead(h, held)
		}
	}
	return got, gotErr
}

// verifyFetched decodes and verifies a block fetched for height n, whose answer arrived at arrived, and holds it: in
// the store, or, below its window (we are far behind), as a block of its own.
func (c *Client) verifyFetched(msg []byte, n uint64, arrived time.Time) (*Held, error) {
	signed, err := DecodeEnvelope(msg)
	if err != nil {
		return nil, c.refuse(err)
	}
	if got := uint64(signed.Envelope.ExecutionPayload.BlockNumber); got != n {
		return nil, c.refuse(fmt.Errorf("%w: relay %s answered block %d for %d", ErrBadInput, c.cfg.Name, got, n))
	}
	held, err := c.accept(signed, arrived)
	if errors.Is(err, ErrBelowWindow) {
		// Older than every height held (we are far behind): verified, handed on without holding it.
		return NewHeld(signed, c.cfg.Name, arrived), nil
	}
	return held, err
}

// keepAhead keeps a block fetched by range until the node asks for it, within maxAhead blocks: beyond it the lowest
// go.
func (c *Client) keepAhead(n uint64, held *Held) {
	c.rangeMu.Lock()
	defer c.rangeMu.Unlock()
	if c.ahead == nil {
		c.ahead = make(map[uint64]*Held)
	}
	c.ahead[n] = held
	delete(c.taken, n)
	for len(c.ahead) > maxAhead {
		delete(c.ahead, lowestKey(c.ahead))
	}
}

// rangeUnsupported reports whether err says the relay does not serve relay_envelopesByRange (a relay from before
// it): the client then fetches one block a call, as before.
func rangeUnsupported(err error) bool {
	var rpcErr rpc.Error
	return errors.As(err, &rpcErr) && rpcErr.ErrorCode() == -32601 // method not found
}
