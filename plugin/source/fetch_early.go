package source

import (
	"context"
	"errors"
	"time"

	"github.com/ethereum/go-ethereum"

	"github.com/ethereum-optimism/optimism/op-service/eth"
)

// earlyFetch is a fetch of the announced block id, started at at; done is closed when env and err are set.
type earlyFetch struct {
	id   eth.BlockID
	at   time.Time
	done chan struct{}
	env  *eth.ExecutionPayloadEnvelope
	err  error
}

// takeEarly returns the outcome of the early fetch of the block at num (waiting for it, up to ctx), if there is one
// to use: of the head the source last announced, started within the last block time, and not a block other than
// the one announced. One that found no
// block (the announcement's race with the block's storage) is not used: the block is asked for again.
func (s *rpcSource) takeEarly(ctx context.Context, num uint64) (*eth.ExecutionPayloadEnvelope, error, bool) {
	f := s.early.Load()
	if f == nil || f.id.Number > num { // none, or a block the loop gets to later
		return nil, nil, false
	}
	// Only the source's latest announced head, fetched within the last block time, is taken from an early fetch.
	n := s.notified.Load()
	expired := s.clock.Since(f.at) > s.blockTime || n == nil || n.id != f.id
	if f.id.Number < num {
		// Behind this request: kept while fresh for a request for its block still to come (the prefetcher asks
		// for several blocks at once, in any order).
		if expired {
			s.early.CompareAndSwap(f, nil)
		}
		return nil, nil, false
	}
	s.early.CompareAndSwap(f, nil) // taken (or expired): the next announcement starts another
	if expired {
		// The loop was halted or behind since, or the source announced another head: what it has at num now is
		// asked for.
		return nil, nil, false
	}
	select {
	case <-f.done:
	case <-ctx.Done():
		return nil, ctx.Err(), true
	}
	switch {
	case errors.Is(f.err, ethereum.NotFound):
		return nil, nil, false
	case f.err != nil:
		return nil, f.err, true
	case f.env.ExecutionPayload.BlockHash != f.id.Hash:
		return nil, nil, false // the source reorged between its announcement and the fetch
	}
	return f.env, nil, true
}

// fetchEarly starts fetching the announced block id, unless the last early fetch is untaken and not superseded by
// id (another block at or below its height).
func (s *rpcSource) fetchEarly(ctx context.Context, id eth.BlockID) {
	f := &earlyFetch{id: id, at: s.clock.Now(), done: make(chan struct{})}
	if !s.putEarly(f) {
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(f.done)
		f.env, f.err = s.payload(ctx, id.Number)
	}()
}

// putEarly makes f the early fetch, unless the last one is untaken and not superseded by f's block (another block
// at or below its height).
func (s *rpcSource) putEarly(f *earlyFetch) bool {
	for {
		cur := s.early.Load()
		if cur != nil && (f.id.Number > cur.id.Number || f.id.Hash == cur.id.Hash) {
			return false
		}
		if s.early.CompareAndSwap(cur, f) {
			return true
		}
	}
}
