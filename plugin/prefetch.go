package plugin

import (
	"context"

	"github.com/ethereum-optimism/optimism/op-service/eth"
	"github.com/op-replicator/op-replicator/plugin/source"
)

// prefetchDepth is how many blocks are fetched ahead at the head of the chain, where a round has a block or a few.
// Far behind, a round fetches two batches ahead (catchUpDepth), so that a whole batch is on its way while the engine
// executes the one before it.
const (
	prefetchDepth = 8
	catchUpDepth  = 2 * maxBatch
)

// maxInFlight bounds the requests one prefetcher has at the source at once, however deep it fetches ahead (the
// sources keep as many connections).
const maxInFlight = source.MaxInFlight

// prefetcher fetches the blocks from..to from a source, up to depth blocks ahead of the one handed out last with at
// most maxInFlight requests at once, and hands them out in order. It holds at most depth blocks.
type prefetcher struct {
	ctx     context.Context
	cancel  context.CancelFunc
	src     source.Source
	depth   int
	slots   chan struct{} // a request holds a slot while it is at the source
	next    uint64        // the next block to start fetching
	to      uint64
	pending []chan fetched // in block order
}

type fetched struct {
	env *eth.ExecutionPayloadEnvelope
	err error
}

func newPrefetcher(ctx context.Context, src source.Source, from, to uint64, depth int) *prefetcher {
	ctx, cancel := context.WithCancel(ctx)
	p := &prefetcher{ctx: ctx, cancel: cancel, src: src, depth: depth, slots: make(chan struct{}, maxInFlight),
		next: from, to: to}
	p.fill()
	return p
}

// fill starts requests until depth blocks are held or in flight, or every block is asked for. A request waits for a
// slot; slots are taken in block order.
func (p *prefetcher) fill() {
	for len(p.pending) < p.depth && p.next <= p.to {
		ch := make(chan fetched, 1)
		go func(n uint64) {
			select {
			case p.slots <- struct{}{}:
			case <-p.ctx.Done():
				ch <- fetched{err: p.ctx.Err()}
				return
			}
			env, err := p.src.Payload(p.ctx, n)
			ch <- fetched{env: env, err: err}
			<-p.slots
		}(p.next)
		p.pending = append(p.pending, ch)
		p.next++
	}
}

// Pending is the channel the next block in order arrives on, nil once every block was handed out. Whoever receives
// from it calls Advance.
func (p *prefetcher) Pending() <-chan fetched {
	if len(p.pending) == 0 {
		return nil
	}
	return p.pending[0]
}

// Advance moves past the block just received from Pending, and starts fetching the ones now within depth.
func (p *prefetcher) Advance() {
	p.pending = p.pending[1:]
	p.fill()
}

// Next returns the next block in order (the source's error for it, if any), and false once every block was
// handed out.
func (p *prefetcher) Next() (*eth.ExecutionPayloadEnvelope, error, bool) {
	next := p.Pending()
	if next == nil {
		return nil, nil, false
	}
	var f fetched
	select {
	case f = <-next:
	case <-p.ctx.Done():
		return nil, p.ctx.Err(), true
	}
	p.Advance()
	return f.env, f.err, true
}

// Ready is Next for a block already fetched: it returns false at once if the next block is still on its way (or
// every block was handed out).
func (p *prefetcher) Ready() (*eth.ExecutionPayloadEnvelope, error, bool) {
	select {
	case f := <-p.Pending():
		p.Advance()
		return f.env, f.err, true
	default:
		return nil, nil, false
	}
}

// Close cancels the requests still in flight; their results are dropped. It may be called from any goroutine.
func (p *prefetcher) Close() { p.cancel() }
