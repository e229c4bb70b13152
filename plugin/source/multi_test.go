package source

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ethereum-optimism/optimism/op-service/clock"
	"github.com/ethereum/go-ethereum"
	"github.com/op-replicator/op-replicator/plugin/internal/testkit"
	"github.com/op-replicator/op-replicator/plugin/relay"
	"github.com/stretchr/testify/require"
)

func TestMultiSourceFailover(t *testing.T) {
	blocks := testkit.BuildChain(t, testkit.RollupConfig(), 6, 0, 0)
	down, up := testkit.NewSource(blocks), testkit.NewSource(blocks)
	down.Set(blocks, 6, errors.New("connection refused"))
	up.Set(blocks, 5, nil)
	m := NewMulti([]Source{down, up}, noopMetrics{}, clock.SystemClock)
	defer func() { require.NoError(t, m.Stop(context.Background())) }()
	ctx := context.Background()

	head, err := m.Head(ctx)
	require.NoError(t, err, "one source failing is not a failure")
	require.Equal(t, blocks[4].Ref.ID(), head)
	env, err := m.Payload(ctx, 3)
	require.NoError(t, err)
	require.Equal(t, blocks[2].Ref.Hash, env.ExecutionPayload.BlockHash)
	_, err = m.Payload(ctx, 6)
	require.ErrorIs(t, err, ethereum.NotFound, "the healthy source does not have it and the other one failed")

	// No source was healthy yet when Head asked: it returned with the first answer, and the failing source's went on
	// in the background. Counted once it is recorded (with the failure at block 6).
	require.Eventually(t, func() bool { return m.Health()[0].Errors == 2 }, 5*time.Second, time.Millisecond)
	calls := down.Calls
	_, err = m.Payload(ctx, 4)
	require.NoError(t, err)
	require.Equal(t, calls, down.Calls, "a failing source is asked after the healthy ones")

	health := m.Health()
	require.Len(t, health, 2)
	require.Positive(t, health[0].Errors)
	require.Contains(t, health[0].LastError, "connection refused")
	require.Equal(t, blocks[4].Ref.ID(), health[1].Head)
	require.NotNil(t, health[1].LastOK)

	up.Set(blocks, 5, errors.New("down too"))
	_, err = m.Head(ctx)
	require.Error(t, err)
}

// A request the caller cancels (a round ending with blocks still fetched ahead) is no failure of the source, and
// is not passed on to the other sources.
func TestCancelledRequestIsNoSourceFailure(t *testing.T) {
	blocks := testkit.BuildChain(t, testkit.RollupConfig(), 4, 0, 0)
	a, b := testkit.NewSource(blocks), testkit.NewSource(blocks)
	a.Slow = true
	m := NewMulti([]Source{a, b}, noopMetrics{}, clock.SystemClock)
	defer func() { require.NoError(t, m.Stop(context.Background())) }()
	ctx, cancel := context.WithCancel(context.Background())
	go cancel()
	_, err := m.Payload(ctx, 2)
	require.ErrorIs(t, err, context.Canceled)
	for _, h := range m.Health() {
		require.Zero(t, h.Errors, "%s counted a failure", h.Name)
	}
	b.Mu.Lock()
	defer b.Mu.Unlock()
	require.Zero(t, b.Calls, "the request went on to the next source")
}

// A relay still making its first subscription (relay.ErrNoBlockYet) is neither a failure nor an answer: Head says
// so when it is all there is, and another source's failure beside it is what Head returns; a block asked for goes
// on to the next source without a failure counted.
func TestMultiRelayWithNoBlockYet(t *testing.T) {
	blocks := testkit.BuildChain(t, testkit.RollupConfig(), 3, 0, 0)
	starting, down := testkit.NewSource(blocks), testkit.NewSource(blocks)
	starting.Set(blocks, 3, fmt.Errorf("%w: relay: subscribing", relay.ErrNoBlockYet))
	down.Set(blocks, 3, errors.New("connection refused"))
	ctx := context.Background()

	m := NewMulti([]Source{starting}, noopMetrics{}, clock.SystemClock)
	defer func() { require.NoError(t, m.Stop(ctx)) }()
	_, err := m.Head(ctx)
	require.ErrorIs(t, err, relay.ErrNoBlockYet)
	require.Zero(t, m.Health()[0].Errors, "no failure counted")
	require.Nil(t, m.Health()[0].LastOK, "no answer either")

	both := NewMulti([]Source{starting, down}, noopMetrics{}, clock.SystemClock)
	defer func() { require.NoError(t, both.Stop(ctx)) }()
	_, err = both.Head(ctx)
	require.ErrorContains(t, err, "connection refused")
	require.NotErrorIs(t, err, relay.ErrNoBlockYet, "a failure is not waited for")

	// Asked for a block while another source gave the head: the next source answers, and nothing is counted.
	up := testkit.NewSource(blocks)
	up.Set(blocks, 3, nil)
	either := NewMulti([]Source{starting, up}, noopMetrics{}, clock.SystemClock)
	defer func() { require.NoError(t, either.Stop(ctx)) }()
	env, err := either.Payload(ctx, 2)
	require.NoError(t, err)
	require.Equal(t, blocks[1].Env.ExecutionPayload.BlockHash, env.ExecutionPayload.BlockHash)
	require.Zero(t, either.Health()[0].Errors, "no failure counted for the relay still subscribing")
}
