package source

import (
	"context"
	"math/big"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/stretchr/testify/require"

	"github.com/op-replicator/op-replicator/driverhook"
	"github.com/op-replicator/op-replicator/plugin/internal/testkit"
)

// pollSim runs a headSchedule against a source whose block n (timestamp genesis + n block times) becomes its head
// at its timestamp + availableAt(n), in virtual time, the first poll start after block 0 appeared, and reports for
// each block how long after it became the head the schedule's polls saw it, and how many polls that took.
func pollSim(t *testing.T, blockTime, start time.Duration, blocks int, availableAt func(n int) time.Duration) (late []time.Duration, polls []int) {
	t.Helper()
	genesis := time.Unix(1_800_000_000, 0)
	stamp := func(n int) time.Time { return genesis.Add(time.Duration(n) * blockTime) }
	appears := func(n int) time.Time { return stamp(n).Add(availableAt(n)) }
	schedule := newHeadSchedule(blockTime, driverhook.DefaultPollInterval)
	head, seen, count := 0, 0, 0
	now := appears(0).Add(start)
	for seen < blocks {
		for head+1 <= blocks && !appears(head+1).After(now) {
			head++
		}
		count++
		isNew := head != seen
		if isNew {
			late = append(late, now.Sub(appears(head)))
			polls = append(polls, count)
			seen, count = head, 0
		}
		wait := schedule.observe(now, stamp(head), isNew)
		require.Positive(t, wait)
		require.LessOrEqual(t, wait, max(driverhook.DefaultPollInterval, blockTime))
		now = now.Add(wait)
	}
	return late, polls
}

// An http source's head is polled around when its next block is due: once the schedule has seen a few blocks, each
// is found within two poll steps of becoming the head, not half a poll interval late, with fewer than two polls a
// block on average (none at the poll interval while the head is not due: 1 s blocks polled every 500 ms would take
// 2.5); for 1 s and 2 s blocks, heads sealed before their timestamp (op-node's sequencer), after it, a clock 700 ms
// off, and whenever polling starts.
func TestHeadSchedulePollsWhenTheNextBlockIsDue(t *testing.T) {
	for name, available := range map[string]func(n int) time.Duration{
		// op-node seals ahead of the timestamp: the head appears before it, a few ms apart from block to block
		"sealed before its timestamp": func(n int) time.Duration { return -30*time.Millisecond + time.Duration(n%5)*time.Millisecond },
		"our clock 700 ms behind":     func(n int) time.Duration { return -700 * time.Millisecond },
		"50 ms after its timestamp":   func(n int) time.Duration { return 50*time.Millisecond + time.Duration(n%7)*3*time.Millisecond },
		"300 ms after its timestamp":  func(n int) time.Duration { return 300 * time.Millisecond },
	} {
		for _, blockTime := range []time.Duration{time.Second, 2 * time.Second} {
			for _, start := range []time.Duration{0, 3 * time.Millisecond, 170 * time.Millisecond, 420 * time.Millisecond, 999 * time.Millisecond} {
				late, polls := pollSim(t, blockTime, start, 100, available)
				const warmUp = 10
				total := 0
				for i := warmUp; i < len(late); i++ {
					require.Less(t, late[i], 2*pollStep, "%s, %s blocks, start +%s: block %d found late", name, blockTime, start, i+1)
					total += polls[i]
				}
				perBlock := float64(total) / float64(len(late)-warmUp)
				require.LessOrEqual(t, perBlock, 1.75,
					"%s, %s blocks, start +%s: polls per block (%v)", name, blockTime, start, polls[warmUp:])
			}
		}
	}
}

// A source whose blocks stop coming is polled every pollStep for a poll interval after the head was due, then less
// and less often, down to the poll interval; a head far from wall-clock time (a sequencer catching up, a clock far
// off) is polled at the poll interval.
func TestHeadScheduleBacksOffToThePollInterval(t *testing.T) {
	const blockTime = time.Second
	interval := driverhook.DefaultPollInterval
	s := newHeadSchedule(blockTime, interval)
	start := time.Unix(1_800_000_000, 0)
	now := start
	wait := s.observe(now, start, true)
	require.Equal(t, driverhook.DefaultPollInterval, wait, "the next block is due in a block time: at most the poll interval")
	for ; now.Add(wait).Before(start.Add(blockTime - pollStep/2)); wait = s.observe(now, start, false) {
		now = now.Add(wait)
	}
	var waits []time.Duration
	for range 70 {
		now = now.Add(wait)
		wait = s.observe(now, start, false)
		waits = append(waits, wait)
	}
	var missed time.Duration
	i := 0
	for ; missed < interval; i++ {
		require.Equal(t, pollStep, waits[i], "poll %d after the head was due", i+1)
		missed += waits[i]
	}
	for want := 2 * pollStep; i < len(waits); i++ {
		require.Equal(t, want, waits[i], "poll %d after the head was due", i+1)
		want = min(2*want, interval)
	}
	require.Equal(t, interval, waits[len(waits)-1])

	s = newHeadSchedule(blockTime, interval)
	require.Equal(t, interval, s.observe(now, now.Add(-time.Hour), true), "a head an hour old")
	require.Equal(t, interval, s.observe(now.Add(time.Millisecond), now.Add(-time.Hour), false))
	require.Equal(t, interval, s.observe(now, now.Add(3*blockTime), true), "a head 3 s ahead of our clock")
}

// An http source's poller announces each new head as a newHeads notification would: Head answers it without a
// request, the loop is woken, and the block is fetched early, so the loop's request for it is not another one.
func TestRPCSourceHTTPPollerAnnouncesHeads(t *testing.T) {
	cfg := testkit.IsthmusRollupConfig()
	first := testkit.IsthmusBlock(t, cfg)
	el := newSourceEL(first)
	src := testRPCSource(t, cfg, el.serve(t, false), nil)
	src.pollInterval = 200 * time.Millisecond // the block timestamps are far from now: polled at the poll interval
	require.NoError(t, src.Start(context.Background()))
	for n := uint64(1); n <= 2; n++ {
		if n > 1 {
			el.mu.Lock()
			el.blocks[n] = blockAt(first, n)
			el.mu.Unlock()
		}
		select {
		case <-src.NewHeads():
		case <-time.After(5 * time.Second):
			t.Fatalf("block %d not announced", n)
		}
		require.Eventually(t, func() bool { return el.rawBlockCalls() == int(n) }, 5*time.Second, time.Millisecond,
			"block %d fetched early", n)
		heads := el.callsOf("eth_getBlockByNumber")
		head, err := src.Head(context.Background())
		require.NoError(t, err)
		require.Equal(t, el.blocks[n].Hash(), head.Hash)
		env, err := src.Payload(context.Background(), n)
		require.NoError(t, err)
		require.Equal(t, el.blocks[n].Hash(), env.ExecutionPayload.BlockHash)
		require.Equal(t, int(n), el.rawBlockCalls(), "block %d asked for again", n)
		require.LessOrEqual(t, el.callsOf("eth_getBlockByNumber")-heads, 1, "Head asked the source (only the poller may have, meanwhile)")
	}
}

// While an http source's heads are live (near wall-clock time), its poller asks for the block after the last head
// it found, not for the head: a poll that finds none is followed by another, and the block it finds is announced
// with its fetch done, so that the loop's request for it asks the source nothing more.
func TestRPCSourceHTTPPollerPollsTheNextBlock(t *testing.T) {
	cfg := testkit.IsthmusRollupConfig()
	first := testkit.IsthmusBlock(t, cfg)
	blockTime := time.Duration(cfg.BlockTime) * time.Second
	stamped := func(n uint64, at time.Time) *types.Block {
		h := types.CopyHeader(first.Header())
		h.Number, h.Time = new(big.Int).SetUint64(n), uint64(at.Unix())
		return types.NewBlockWithHeader(h).WithBody(*first.Body())
	}
	// Block 1 sealed a block time before now, give or take a second's rounding: block 2 is due about now.
	el := newSourceEL(stamped(1, time.Now().Add(-blockTime)))
	src := testRPCSource(t, cfg, el.serve(t, false), nil)
	require.NoError(t, src.Start(context.Background()))
	waitAnnounced := func(n uint64) {
		select {
		case <-src.NewHeads():
		case <-time.After(5 * time.Second):
			t.Fatalf("block %d not announced", n)
		}
	}
	waitAnnounced(1)
	env, err := src.Payload(context.Background(), 1)
	require.NoError(t, err)
	require.Equal(t, el.blocks[1].Hash(), env.ExecutionPayload.BlockHash)
	headPolls, raw := el.callsOf("eth_getBlockByNumber"), el.rawBlockCalls()
	require.Equal(t, 1, headPolls, "block 1 found by a head poll")

	// The poller asks for block 2 before there is one...
	require.Eventually(t, func() bool { return el.rawBlockCalls() >= raw+2 }, 5*time.Second, time.Millisecond,
		"block 2 polled for, twice")
	el.mu.Lock()
	el.blocks[2] = stamped(2, time.Now())
	el.mu.Unlock()
	// ...and announces it once it is there, fetched.
	waitAnnounced(2)
	head, err := src.Head(context.Background())
	require.NoError(t, err)
	require.Equal(t, el.blocks[2].Hash(), head.Hash)
	raw = el.rawBlockCalls()
	env, err = src.Payload(context.Background(), 2)
	require.NoError(t, err)
	require.Equal(t, el.blocks[2].Hash(), env.ExecutionPayload.BlockHash)
	require.Equal(t, raw, el.rawBlockCalls(), "block 2 asked for again")
	require.Equal(t, headPolls, el.callsOf("eth_getBlockByNumber"), "the head polled while it was live")
}

// A poll for the next block that finds none announces nothing: the head last announced expires after a block time,
// and Head then asks the source, which may have gone back (or replaced its head). ForgetHead is not undone by it.
func TestRPCSourceHTTPPollerMissIsNoAnnouncement(t *testing.T) {
	cfg := testkit.IsthmusRollupConfig()
	cfg.BlockTime = 1
	first := testkit.IsthmusBlock(t, cfg)
	h := types.CopyHeader(first.Header())
	h.Time = uint64(time.Now().Unix())
	el := newSourceEL(types.NewBlockWithHeader(h).WithBody(*first.Body()))
	src := testRPCSource(t, cfg, el.serve(t, false), nil)
	require.NoError(t, src.Start(context.Background()))
	select {
	case <-src.NewHeads():
	case <-time.After(5 * time.Second):
		t.Fatal("block 1 not announced")
	}
	_, err := src.Payload(context.Background(), 1)
	require.NoError(t, err)
	heads := el.callsOf("eth_getBlockByNumber")
	src.ForgetHead()
	raw := el.rawBlockCalls()
	require.Eventually(t, func() bool { return el.rawBlockCalls() >= raw+2 }, 5*time.Second, time.Millisecond,
		"block 2 polled for, twice")
	// The source goes back: it has no block at all now.
	el.mu.Lock()
	delete(el.blocks, 1)
	el.mu.Unlock()
	_, err = src.Head(context.Background())
	require.ErrorIs(t, err, ethereum.NotFound, "Head answered a forgotten head the poller did not find again")
	require.Equal(t, heads+1, el.callsOf("eth_getBlockByNumber"), "Head asked the source")
}

// While the loop has not taken the last block the poller found (halted, or behind), the poller asks for the head,
// not for each next block: a halted replicator costs its source a head request per poll, not a block.
func TestRPCSourceHTTPPollerPollsTheHeadWhileTheBlockIsNotTaken(t *testing.T) {
	cfg := testkit.IsthmusRollupConfig()
	cfg.BlockTime = 1
	first := testkit.IsthmusBlock(t, cfg)
	stamped := func(n uint64, at time.Time) *types.Block {
		h := types.CopyHeader(first.Header())
		h.Number, h.Time = new(big.Int).SetUint64(n), uint64(at.Unix())
		return types.NewBlockWithHeader(h).WithBody(*first.Body())
	}
	el := newSourceEL(stamped(1, time.Now()))
	src := testRPCSource(t, cfg, el.serve(t, false), nil)
	src.pollInterval = 50 * time.Millisecond
	require.NoError(t, src.Start(context.Background()))
	for n := uint64(1); n <= 3; n++ {
		if n > 1 {
			el.mu.Lock()
			el.blocks[n] = stamped(n, time.Now())
			el.mu.Unlock()
		}
		select {
		case <-src.NewHeads():
		case <-time.After(5 * time.Second):
			t.Fatalf("block %d not announced", n)
		}
		head, err := src.Head(context.Background())
		require.NoError(t, err)
		require.Equal(t, el.blocks[n].Hash(), head.Hash)
	}
	require.Equal(t, 1, el.rawBlockCalls(), "blocks fetched that the loop did not ask for (only block 1's early fetch)")
}
