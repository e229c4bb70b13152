package source

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/ethereum/go-ethereum"

	"github.com/ethereum-optimism/optimism/op-service/eth"
)

// An http source has no newHeads subscription: polled at the poll interval, each block would be found half an
// interval late on average (250 ms by default). It is polled instead around when its next block is due (for that
// block itself while its heads are live: pollHeads).
// op-node's sequencer seals a block shortly before its timestamp and one every block time, so the next head is due
// at the last one's timestamp plus the block time plus the offset at which this source's heads appear: the median
// of the offsets (first seen minus timestamp) of the last headOffsetsKept heads found by a poll after one that
// missed them or before they were due, which takes in the sequencer's sealing lead, its own insert and any skew between our clock and the
// sequencer's (zero until one is measured).
//
// The first poll for a head goes half a pollStep before it is due, and earlier still (twice as early each time)
// while first polls keep finding it: the heads come earlier than measured. A poll that misses is followed pollStep
// later, for up to a poll interval, then at twice the last wait, up to the poll interval (a source or sequencer that
// stalled). Until the next head is due the schedule waits, once it has measured the offset, up to a block time: the
// poll interval's polls would find nothing but a head that came early, which its first polls finding the head
// already there tell (it then polls at the poll interval again until it measures the offset anew); every other wait
// is at most the poll interval. A head far from wall-clock time (a sequencer catching up, a clock off by more than
// two block times) is polled at the poll interval, as before. Each new head is announced as a newHeads notification
// is (the early fetch of its block, then the loop's wake-up). In the steady state this is about one and a half polls
// a block, around its arrival, the last of which is the block's fetch.

const (
	// pollStep is how soon a poll that found no new head where one was due is followed.
	pollStep = 10 * time.Millisecond
	// headOffsetsKept is how many measured offsets the schedule takes the median of.
	headOffsetsKept = 32
	// earlyHits consecutive first polls that found their head make the schedule poll at the poll interval again
	// until its head is due (waitUntilDue).
	earlyHits = 3
)

// headSchedule says when to poll a source for its head next.
type headSchedule struct {
	blockTime, pollInterval time.Duration
	offsets                 []time.Duration // measured offsets (first seen minus timestamp), oldest first
	live                    bool            // the last head was near wall-clock time
	due                     time.Time       // when the next head is due (live only)
	hits                    int             // consecutive heads the first poll found
	missing                 bool            // a poll since the head was due missed it
	missedFor, lastWait     time.Duration
}

func newHeadSchedule(blockTime, pollInterval time.Duration) *headSchedule {
	return &headSchedule{blockTime: blockTime, pollInterval: pollInterval}
}

// observe takes a successful poll at now, which found a head with timestamp stamp (new: not the head the last poll
// found), and returns how long to wait before the next poll.
func (h *headSchedule) observe(now, stamp time.Time, isNew bool) time.Duration {
	if !isNew {
		switch {
		case !h.live:
			return h.wait(h.pollInterval)
		case now.Before(h.due): // polled early (a due time beyond the poll interval)
			return h.waitUntilDue(h.due.Sub(now))
		case !h.missing:
			h.missing, h.missedFor = true, 0
			return h.wait(pollStep)
		}
		h.missedFor += h.lastWait
		if h.missedFor < h.pollInterval {
			return h.wait(pollStep)
		}
		return h.wait(2 * h.lastWait)
	}
	offset := now.Sub(stamp)
	// Found after a miss, or before it was due: the offset is measured (an upper bound, within the last wait).
	measured := h.missing || (h.live && now.Before(h.due))
	firstHit := h.live && !measured
	h.missing = false
	if h.live = h.blockTime > 0 && offset.Abs() <= 2*h.blockTime; !h.live {
		return h.wait(h.pollInterval)
	}
	switch {
	case measured:
		if len(h.offsets) == headOffsetsKept {
			h.offsets = slices.Delete(h.offsets, 0, 1)
		}
		h.offsets = append(h.offsets, offset)
		h.hits = 0
	case firstHit:
		h.hits++
	}
	var median time.Duration
	if len(h.offsets) > 0 {
		median = slices.Sorted(slices.Values(h.offsets))[len(h.offsets)/2]
	}
	lead := min(pollStep/2<<min(h.hits, 16), h.blockTime/2)
	h.due = stamp.Add(h.blockTime + median - lead)
	return h.waitUntilDue(h.due.Sub(now))
}

// failed takes a poll that failed: the next poll is at the poll interval, for the head (not live), and the head it
// finds is not measured.
func (h *headSchedule) failed() time.Duration {
	h.missing, h.live = false, false
	return h.wait(h.pollInterval)
}

// waitUntilDue bounds the wait for the next head's due time: to a block time once the schedule knows when heads come
// (it measured their offset, and its first polls are not finding heads there already, which would mean they come
// earlier than it knows), else to the poll interval, whose polls find a head that came early.
func (h *headSchedule) waitUntilDue(d time.Duration) time.Duration {
	if len(h.offsets) == 0 || h.hits >= earlyHits {
		return h.wait(d)
	}
	h.lastWait = min(max(d, pollStep), max(h.pollInterval, h.blockTime))
	return h.lastWait
}

// wait bounds a wait to [pollStep, pollInterval] and remembers it.
func (h *headSchedule) wait(d time.Duration) time.Duration {
	h.lastWait = min(max(d, pollStep), h.pollInterval)
	return h.lastWait
}

// pollHeads polls an http source on a headSchedule, announcing each new head, until ctx ends. While its heads are
// live (near wall-clock time) and the loop took the last head's block, the poll is for the block after the last head
// found, itself (debug_getRawBlock, an empty answer while there is none): a block found is announced with its fetch
// done (the early fetch), which spares the source a request per block and the block a round trip. Otherwise (at
// first, after a failure, heads far from wall-clock time, a loop that is halted or behind and has not taken the last
// block) the poll asks for the head, whose block is then fetched early if the last one was taken. A poll that finds
// no next block announces nothing: the head it last announced expires after a block time (rpcSource.Head then asks
// the source), so that a source whose head went back or was replaced at the same height is not hidden, and
// ForgetHead holds. A failed poll is retried at the poll interval; meanwhile the loop's Head asks the source itself
// (and reports its error).
func (s *rpcSource) pollHeads(ctx context.Context, pollInterval time.Duration) {
	defer s.wg.Done()
	schedule := newHeadSchedule(s.blockTime, pollInterval)
	var (
		last      eth.BlockID
		lastStamp time.Time
	)
	timer := s.clock.NewTimer(0)
	defer func() { timer.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.Ch():
		}
		var (
			id      eth.BlockID
			stamp   time.Time
			env     *eth.ExecutionPayloadEnvelope
			err     error
			missing bool
		)
		if schedule.live && last != (eth.BlockID{}) && s.early.Load() == nil {
			env, err = s.payloadAs(ctx, last.Number+1, "poll")
			switch {
			case errors.Is(err, ethereum.NotFound): // not there yet
				id, stamp, env, err, missing = last, lastStamp, nil, nil, true
			case err == nil:
				id, stamp = env.ExecutionPayload.ID(), time.Unix(int64(env.ExecutionPayload.Timestamp), 0)
			}
		} else {
			callCtx, done := s.call(ctx, "head")
			var info eth.BlockInfo
			if info, err = s.l2.InfoByLabel(callCtx, eth.Unsafe); err == nil {
				id, stamp = eth.ToBlockID(info), time.Unix(int64(info.Time()), 0)
			}
			done()
		}
		var wait time.Duration
		if err != nil {
			s.notified.Store(nil)
			wait = schedule.failed()
		} else {
			now := s.clock.Now()
			isNew := id != last
			last, lastStamp = id, stamp
			if !missing {
				s.announceFetched(id, isNew, now, env)
			}
			wait = schedule.observe(now, stamp, isNew)
		}
		timer = s.clock.NewTimer(wait)
	}
}
