package source

import (
	"context"
	"time"

	"github.com/ethereum-optimism/optimism/op-service/eth"
)

// notifiedHead is the head the source last announced (its newHeads subscription, or the http poller), taken at at.
type notifiedHead struct {
	id eth.BlockID
	at time.Time
}

// ForgetHead drops the head last announced: the next Head asks the source (headForgetter).
func (s *rpcSource) ForgetHead() { s.notified.Store(nil) }

func (s *rpcSource) Head(ctx context.Context) (eth.BlockID, error) {
	if n := s.notified.Load(); n != nil && s.clock.Since(n.at) < s.blockTime {
		return n.id, nil
	}
	ctx, done := s.call(ctx, "head")
	defer done()
	info, err := s.l2.InfoByLabel(ctx, eth.Unsafe)
	if err != nil {
		return eth.BlockID{}, err
	}
	return eth.ToBlockID(info), nil
}

// announce takes the source's head as its newHeads subscription (or, over http, its poller) just told it: Head
// answers it for a block time, and a new head's block is fetched early and the loop woken.
func (s *rpcSource) announce(id eth.BlockID, isNew bool, at time.Time) {
	s.announceFetched(id, isNew, at, nil)
}

// announceFetched is announce, for a head whose block env was fetched already (by the http poller) where it is not
// nil: that is the early fetch.
func (s *rpcSource) announceFetched(id eth.BlockID, isNew bool, at time.Time, env *eth.ExecutionPayloadEnvelope) {
	switch {
	case isNew && env != nil:
		done := make(chan struct{})
		close(done)
		s.putEarly(&earlyFetch{id: id, at: at, done: done, env: env})
	case isNew:
		// The fetch is registered before Head can announce the block: the loop's Payload call finds it.
		s.fetchEarly(s.ctx, id)
	}
	s.notified.Store(&notifiedHead{id: id, at: at})
	if isNew {
		select {
		case s.heads <- struct{}{}:
		default: // a wake-up is already pending
		}
	}
}
