package plugin

import (
	"context"

	"github.com/ethereum-optimism/optimism/op-service/eth"
)

// prefetchDepth is how many blocks are requested from the source at once while catching up: while one block is
// verified and inserted, the next ones are already on their way.
const prefetchDepth = 8

// prefetcher fetches the blocks from..to from a source with up to prefetchDepth requests in flight, and hands
// them out in order. It holds at most prefetchDepth blocks.
type prefetcher struct {
	ctx     context.Context
	cancel  context.CancelFunc
	src     Source
	next    uint64 // the next block to start fetching
	to      uint64
	pending []chan fetched // in block order
}

type fetched struct {
	env *eth.ExecutionPayloadEnvelope
	err error
}

func newPrefetcher(ctx context.Context, src Source, from, to uint64) *prefetcher {
	ctx, cancel := context.WithCancel(ctx)
	p := &prefetcher{ctx: ctx, cancel: cancel, src: src, next: from, to: to}
	p.fill()
	return p
}

// fill starts requests until prefetchDepth are in flight or every block is asked for.
func (p *prefetcher) fill() {
	for len(p.pending) < prefetchDepth && p.next <= p.to {
		ch := make(chan fetched, 1)
		go func(n uint64) {
			env, err := p.src.Payload(p.ctx, n)
			ch <- fetched{env: env, err: err}
		}(p.next)
		p.pending = append(p.pending, ch)
		p.next++
	}
}

// Next returns the next block in order (the source's error for it, if any), and false once every block was
// handed out.
func (p *prefetcher) Next() (*eth.ExecutionPayloadEnvelope, error, bool) {
	if len(p.pending) == 0 {
		return nil, nil, false
	}
	var f fetched
	select {
	case f = <-p.pending[0]:
	case <-p.ctx.Done():
		return nil, p.ctx.Err(), true
	}
	p.pending = p.pending[1:]
	p.fill()
	return f.env, f.err, true
}

// Ready is Next for a block already fetched: it returns false at once if the next block is still on its way (or
// every block was handed out).
func (p *prefetcher) Ready() (*eth.ExecutionPayloadEnvelope, error, bool) {
	if len(p.pending) == 0 {
		return nil, nil, false
	}
	select {
	case f := <-p.pending[0]:
		p.pending = p.pending[1:]
		p.fill()
		return f.env, f.err, true
	default:
		return nil, nil, false
	}
}

// Close cancels the requests still in flight; their results are dropped.
func (p *prefetcher) Close() { p.cancel() }
