package source

import (
	"context"

	"github.com/ethereum/go-ethereum/core/types"

	"github.com/ethereum-optimism/optimism/op-service/eth"
	"github.com/ethereum-optimism/optimism/op-service/retry"
)

// subscribeHeads keeps a newHeads subscription open, re-subscribing with backoff, and turns each head into a
// wake-up. Polling stays on regardless: a silent subscription delays blocks by one poll interval at most.
func (s *rpcSource) subscribeHeads(ctx context.Context) {
	defer s.wg.Done()
	backoff := retry.Exponential()
	for attempt := 0; ctx.Err() == nil; attempt++ {
		ch := make(chan *types.Header, 16)
		sub, err := s.rpc.Subscribe(ctx, "eth", ch, "newHeads")
		if err == nil {
			attempt = 0
			err = s.forwardHeads(ctx, ch, sub.Err())
			sub.Unsubscribe()
		}
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("Source head subscription failed, polling meanwhile", "source", s.name, "err", err)
		select {
		case <-s.clock.After(backoff.Duration(attempt)):
		case <-ctx.Done():
			return
		}
	}
}

func (s *rpcSource) forwardHeads(ctx context.Context, ch <-chan *types.Header, subErr <-chan error) error {
	for {
		select {
		case h := <-ch:
			s.announce(eth.BlockID{Hash: h.Hash(), Number: h.Number.Uint64()}, true, s.clock.Now())
		case err := <-subErr:
			s.notified.Store(nil)
			return err
		case <-ctx.Done():
			return nil
		}
	}
}
