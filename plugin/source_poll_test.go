package plugin

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/op-replicator/op-replicator/driverhook"
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
