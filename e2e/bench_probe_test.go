//go:build bench

package e2e

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/rpc"
)

// fetchProbe is the floor of the sequencer-RPC path on this machine, measured alongside it: a bare client of the
// sequencer's op-geth (the test's own) that, for each newHeads notification, asks for the block as the websocket
// replicator does (debug_getRawBlock) and times the answer from the notification's arrival. A replicator can do no
// better than this before its own verification and the local insert.
type fetchProbe struct {
	mu    sync.Mutex
	times map[uint64]time.Duration
	stop  func()
}

func startFetchProbe(t *testing.T, ws string) *fetchProbe {
	ctx, cancel := context.WithCancel(t.Context())
	c, err := rpc.DialContext(ctx, ws)
	require.NoError(t, err)
	heads := make(chan *types.Header, 16)
	sub, err := c.Subscribe(ctx, "eth", heads, "newHeads")
	require.NoError(t, err)
	p := &fetchProbe{times: make(map[uint64]time.Duration)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case h := <-heads:
				at := time.Now()
				var raw hexutil.Bytes
				if err := c.CallContext(ctx, &raw, "debug_getRawBlock", hexutil.EncodeUint64(h.Number.Uint64())); err != nil {
					continue
				}
				took := time.Since(at)
				p.mu.Lock()
				p.times[h.Number.Uint64()] = took
				p.mu.Unlock()
			case <-sub.Err():
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	p.stop = func() {
		cancel()
		<-done
		sub.Unsubscribe()
		c.Close()
	}
	t.Cleanup(p.stop)
	return p
}

// percentiles returns the p50, p90 and p99 of the fetches of blocks from..to, and how many there were.
func (p *fetchProbe) percentiles(from, to uint64) (p50, p90, p99 time.Duration, n int) {
	p.mu.Lock()
	var xs []time.Duration
	for num, d := range p.times {
		if num >= from && num <= to {
			xs = append(xs, d)
		}
	}
	p.mu.Unlock()
	if len(xs) == 0 {
		return 0, 0, 0, 0
	}
	slices.Sort(xs)
	at := func(q float64) time.Duration { return xs[int(q/100*float64(len(xs)-1))] }
	return at(50), at(90), at(99), len(xs)
}
