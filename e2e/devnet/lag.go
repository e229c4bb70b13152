package devnet

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/ethclient"
)

const (
	// lagWindow is how many recent lags a LagMeter keeps.
	lagWindow = 4096
	// maxLag is the largest lag measured: blocks only one engine got for longer are forgotten.
	maxLag = 10 * time.Minute
	// resubscribeDelay is the pause before a LagMeter re-subscribes to an engine it lost.
	resubscribeDelay = 500 * time.Millisecond
)

// LagMeter measures how long after the reference engine a follower's engine gets each block: it
// subscribes to newHeads over websocket on both and, for every block hash seen by both, records the
// arrival time at the follower minus the arrival time at the reference. It re-subscribes after an engine
// restart.
type LagMeter struct {
	mu      sync.Mutex
	arrived [2]map[common.Hash]time.Time // arrival times at the reference (0) and the follower (1)
	numbers map[common.Hash]uint64       // the numbers of the blocks in arrived
	lags    []BlockLag                   // the most recent lags, oldest first

	cancel context.CancelFunc
	done   sync.WaitGroup
}

// BlockLag is one block's lag.
type BlockLag struct {
	Number uint64
	Lag    time.Duration
}

// StartLagMeter starts measuring the lag of the engine at followerWS behind the one at referenceWS.
func StartLagMeter(referenceWS, followerWS string) *LagMeter {
	ctx, cancel := context.WithCancel(context.Background())
	m := &LagMeter{
		arrived: [2]map[common.Hash]time.Time{make(map[common.Hash]time.Time), make(map[common.Hash]time.Time)},
		numbers: make(map[common.Hash]uint64),
		cancel:  cancel,
	}
	for i, url := range []string{referenceWS, followerWS} {
		m.done.Add(1)
		go m.follow(ctx, i, url)
	}
	return m
}

// Stop ends the subscriptions and waits for them to close.
func (m *LagMeter) Stop() {
	m.cancel()
	m.done.Wait()
}

// Last returns the lag of the most recent block both engines have, and false if there is none yet.
func (m *LagMeter) Last() (time.Duration, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.lags) == 0 {
		return 0, false
	}
	return m.lags[len(m.lags)-1].Lag, true
}

// Lags returns the recent lags, oldest first.
func (m *LagMeter) Lags() []BlockLag {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.lags)
}

// Percentile returns the p-th percentile (0 to 100) of the recent lags, and false if there are none.
func (m *LagMeter) Percentile(p float64) (time.Duration, bool) {
	m.mu.Lock()
	lags := make([]time.Duration, len(m.lags))
	for i, l := range m.lags {
		lags[i] = l.Lag
	}
	m.mu.Unlock()
	if len(lags) == 0 {
		return 0, false
	}
	slices.Sort(lags)
	return lags[int(p/100*float64(len(lags)-1))], true
}

// follow records arrivals at one engine until ctx ends, re-subscribing whenever the subscription fails.
func (m *LagMeter) follow(ctx context.Context, side int, url string) {
	defer m.done.Done()
	for ctx.Err() == nil {
		_ = m.subscribe(ctx, side, url) // the engine is down or restarting: try again
		select {
		case <-ctx.Done():
		case <-time.After(resubscribeDelay):
		}
	}
}

func (m *LagMeter) subscribe(ctx context.Context, side int, url string) error {
	client, err := ethclient.DialContext(ctx, url)
	if err != nil {
		return err
	}
	defer client.Close()
	heads := make(chan *types.Header, 64)
	sub, err := client.SubscribeNewHead(ctx, heads)
	if err != nil {
		return err
	}
	defer sub.Unsubscribe()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-sub.Err():
			return err
		case h := <-heads:
			m.record(side, h.Hash(), h.Number.Uint64(), time.Now())
		}
	}
}

func (m *LagMeter) record(side int, hash common.Hash, number uint64, at time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.arrived[side][hash] = at
	m.numbers[hash] = number
	other, ok := m.arrived[1-side][hash]
	if !ok {
		if len(m.arrived[side]) > lagWindow {
			for h, t := range m.arrived[side] {
				if at.Sub(t) > maxLag { // e.g. a block that was reorged out before the other engine got it
					delete(m.arrived[side], h)
					delete(m.numbers, h)
				}
			}
		}
		return
	}
	ref, follower := other, at
	if side == 0 {
		ref, follower = at, other
	}
	delete(m.arrived[0], hash)
	delete(m.arrived[1], hash)
	delete(m.numbers, hash)
	m.lags = append(m.lags, BlockLag{Number: number, Lag: follower.Sub(ref)})
	if len(m.lags) > lagWindow {
		m.lags = m.lags[1:]
	}
}
