package plugin

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/op-replicator/op-replicator/plugin/source"
	"github.com/stretchr/testify/require"

	"github.com/ethereum-optimism/optimism/op-service/eth"
)

// slowFirstSource answers later blocks sooner, and counts requests in flight.
type slowFirstSource struct {
	source.Source
	inFlight, maxInFlight atomic.Int64
	missing               uint64        // a block the source does not have
	hold                  chan struct{} // if set, block 1 is answered once it is closed
	mu                    sync.Mutex
	asked                 []uint64
}

func (s *slowFirstSource) Payload(ctx context.Context, n uint64) (*eth.ExecutionPayloadEnvelope, error) {
	cur := s.inFlight.Add(1)
	defer s.inFlight.Add(-1)
	for old := s.maxInFlight.Load(); cur > old && !s.maxInFlight.CompareAndSwap(old, cur); old = s.maxInFlight.Load() {
	}
	s.mu.Lock()
	s.asked = append(s.asked, n)
	s.mu.Unlock()
	select {
	case <-time.After(time.Duration(100-n%100) * 100 * time.Microsecond):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if n == 1 && s.hold != nil {
		select {
		case <-s.hold:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if n == s.missing {
		return nil, ethereum.NotFound
	}
	return &eth.ExecutionPayloadEnvelope{ExecutionPayload: &eth.ExecutionPayload{BlockNumber: eth.Uint64Quantity(n)}}, nil
}

func TestPrefetcherHandsOutInOrder(t *testing.T) {
	src := &slowFirstSource{}
	p := newPrefetcher(context.Background(), src, 1, 40, prefetchDepth)
	defer p.Close()
	for want := uint64(1); want <= 40; want++ {
		env, err, ok := p.Next()
		require.True(t, ok)
		require.NoError(t, err)
		require.Equal(t, want, uint64(env.ExecutionPayload.BlockNumber))
	}
	_, _, ok := p.Next()
	require.False(t, ok, "every block was handed out")
	require.LessOrEqual(t, src.maxInFlight.Load(), int64(prefetchDepth))
	require.Greater(t, src.maxInFlight.Load(), int64(1), "blocks are fetched concurrently")
}

func TestPrefetcherErrorsAndClose(t *testing.T) {
	src := &slowFirstSource{missing: 3}
	p := newPrefetcher(context.Background(), src, 1, 100, prefetchDepth)
	for want := uint64(1); want <= 2; want++ {
		_, err, _ := p.Next()
		require.NoError(t, err)
	}
	_, err, ok := p.Next()
	require.True(t, ok)
	require.ErrorIs(t, err, ethereum.NotFound, "the source's error for the block, in its place")
	p.Close()
	require.Eventually(t, func() bool { return src.inFlight.Load() == 0 }, time.Second, time.Millisecond, "Close cancels the requests in flight")
	src.mu.Lock()
	defer src.mu.Unlock()
	require.LessOrEqual(t, len(src.asked), 3+prefetchDepth, "no more than prefetchDepth blocks beyond the one handed out")
}

func TestPrefetcherReadyHandsOutFetchedBlocksInOrder(t *testing.T) {
	src := &slowFirstSource{hold: make(chan struct{})}
	p := newPrefetcher(context.Background(), src, 1, 3, prefetchDepth)
	defer p.Close()
	require.Eventually(t, func() bool { return len(p.pending) == 3 && len(p.pending[1]) == 1 && len(p.pending[2]) == 1 },
		time.Second, time.Millisecond, "blocks 2 and 3 are fetched")
	// Block 1 comes last: Ready hands out nothing before it.
	_, _, ok := p.Ready()
	require.False(t, ok, "a block handed out before block 1")
	close(src.hold)
	for !ok {
		_, _, ok = p.Ready()
	}
	for want := uint64(2); want <= 3; want++ {
		env, err, ok := p.Ready()
		require.True(t, ok)
		require.NoError(t, err)
		require.Equal(t, want, uint64(env.ExecutionPayload.BlockNumber))
	}
	_, _, ok = p.Ready()
	require.False(t, ok, "every block was handed out")
}

// Far behind, the prefetcher holds up to two batches ahead but keeps at most maxInFlight requests at the source.
func TestPrefetcherCatchUpDepthBoundsRequestsInFlight(t *testing.T) {
	src := &slowFirstSource{}
	p := newPrefetcher(context.Background(), src, 1, 300, catchUpDepth)
	defer p.Close()
	for want := uint64(1); want <= 300; want++ {
		env, err, ok := p.Next()
		require.True(t, ok)
		require.NoError(t, err)
		require.Equal(t, want, uint64(env.ExecutionPayload.BlockNumber))
		src.mu.Lock()
		asked := len(src.asked)
		src.mu.Unlock()
		require.LessOrEqual(t, asked, int(want)+catchUpDepth, "no more than catchUpDepth blocks beyond the one handed out")
	}
	require.LessOrEqual(t, src.maxInFlight.Load(), int64(maxInFlight))
	require.Greater(t, src.maxInFlight.Load(), int64(prefetchDepth), "deeper than at the head")
}
