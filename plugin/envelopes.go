package plugin

import (
	"encoding/json"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/log"

	"github.com/ethereum-optimism/optimism/op-service/eth"
	opsigner "github.com/ethereum-optimism/optimism/op-service/signer"

	"github.com/op-replicator/op-replicator/driverhook"
)

// maxEnvelopesPerHeight bounds the distinct signed blocks held at one height, as op-node's gossip does (it
// accepts at most 5 blocks per height).
const maxEnvelopesPerHeight = 5

// Why the envelope store refuses a verified signed block. A refused block is not held, so it is never evidence.
var (
	// errReplay: the block is at or below op-node's safe head. L1 settled that height; a signed block there is a
	// replay of history (possibly of a legitimate unsafe reorg long since settled), not equivocation.
	errReplay = errors.New("signed block at or below the safe head: history L1 already settled")
	// errHeightFull: the height holds maxEnvelopesPerHeight blocks already (the first conflicting pair was evidence).
	errHeightFull = errors.New("height holds the most signed blocks allowed")
	// errBelowWindow: the window is full and the block is below every height held; holding it would evict a
	// higher one.
	errBelowWindow = errors.New("signed block below the heights held")
)

// heldEnvelope is a sequencer-signed block the node holds, with where and when it came from.
type heldEnvelope struct {
	Signed  *opsigner.SignedExecutionPayloadEnvelope
	Source  string
	Arrived time.Time

	encodeOnce sync.Once
	encoded    json.RawMessage
	encodeErr  error
}

func (h *heldEnvelope) number() uint64    { return uint64(h.Signed.Envelope.ExecutionPayload.BlockNumber) }
func (h *heldEnvelope) hash() common.Hash { return h.Signed.Envelope.ExecutionPayload.BlockHash }

// json returns the envelope's JSON encoding, computed once for every subscriber it is relayed to.
func (h *heldEnvelope) json() (json.RawMessage, error) {
	h.encodeOnce.Do(func() { h.encoded, h.encodeErr = json.Marshal(h.Signed) })
	return h.encoded, h.encodeErr
}

// envelopeListener is told of every envelope added after it registered. offer must not block.
type envelopeListener interface {
	offer(h *heldEnvelope)
}

// envelopeStore holds verified, sequencer-signed envelopes for a window of the highest block heights seen, by
// number and by hash. When the window is exceeded the lowest height goes, so old blocks, however many are
// replayed, never push out recent ones. A height holds at most maxEnvelopesPerHeight envelopes, in arrival order:
// two validly signed blocks at one height above the safe head are the sequencer equivocating, and the last
// arrived is the sequencer's current block there (after an unsafe reorg). With dropSettled, blocks at or below
// op-node's safe head are refused: this is the one place that check is made. Envelopes must be verified before
// they are added.
type envelopeStore struct {
	window int
	log    log.Logger
	// status gives op-node's safe head (nil: drop nothing); replays counts what it makes the store drop.
	status  driverhook.SyncStatus
	replays Metrics

	mu        sync.Mutex
	heights   []uint64                   // held heights, ascending
	byNumber  map[uint64][]*heldEnvelope // arrival order
	byHash    map[common.Hash]*heldEnvelope
	listeners map[envelopeListener]struct{}
}

// newEnvelopeStore holds window heights (--replicator.relay.window) and every block added within them.
func newEnvelopeStore(window int) *envelopeStore {
	return &envelopeStore{window: max(window, 1), log: log.Root(), replays: NoopMetrics{},
		byNumber: make(map[uint64][]*heldEnvelope), byHash: make(map[common.Hash]*heldEnvelope),
		listeners: make(map[envelopeListener]struct{})}
}

// dropSettled makes Add refuse (errReplay) blocks at or below op-node's safe head as status reports it (a nil
// status, or a zero safe head while unknown, drops nothing), counting them on m; refusals are logged on lgr.
// It returns s, for NewService.
func (s *envelopeStore) dropSettled(lgr log.Logger, status driverhook.SyncStatus, m Metrics) *envelopeStore {
	if lgr != nil {
		s.log = lgr
	}
	if m != nil {
		s.replays = m
	}
	s.status = status
	return s
}

// safeHead is op-node's safe head, or the zero ID while it is unknown (or without a status).
func (s *envelopeStore) safeHead() eth.BlockID {
	if s.status == nil {
		return eth.BlockID{}
	}
	st := s.status.SyncStatus()
	if st == nil {
		return eth.BlockID{}
	}
	return st.SafeL2.ID()
}

// settled reports whether height n is at or below the safe head (known), and the safe head.
func (s *envelopeStore) settled(n uint64) (eth.BlockID, bool) {
	safe := s.safeHead()
	return safe, safe != (eth.BlockID{}) && n <= safe.Number
}

// Add holds a verified envelope. It returns the envelope as held (the earlier copy if the block was held already,
// with added false) and the envelopes already held at that height with another hash (equivocation evidence), or,
// with nothing held, why the block was refused: errReplay, errHeightFull or errBelowWindow.
func (s *envelopeStore) Add(signed *opsigner.SignedExecutionPayloadEnvelope, source string, now time.Time) (held *heldEnvelope, added bool, conflicts []*heldEnvelope, err error) {
	h := &heldEnvelope{Signed: signed, Source: source, Arrived: now}
	n := h.number()
	// Read before taking s.mu: the status is op-node's, with locks of its own.
	if safe, ok := s.settled(n); ok {
		s.replays.RecordReplayDropped()
		s.log.Debug("Dropping replayed signed block at or below the safe head", "block", signed.ID(), "safe", safe,
			"source", source)
		return nil, false, nil, errReplay
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if prev, ok := s.byHash[h.hash()]; ok {
		return prev, false, nil, nil
	}
	atHeight, heldHeight := s.byNumber[n]
	switch {
	case len(atHeight) >= maxEnvelopesPerHeight:
		s.log.Debug("Refusing signed block: its height is full", "block", signed.ID(), "held", len(atHeight),
			"source", source)
		return nil, false, nil, errHeightFull
	case !heldHeight && len(s.heights) >= s.window && n < s.heights[0]:
		s.log.Debug("Refusing signed block below the heights held", "block", signed.ID(), "lowest", s.heights[0],
			"source", source)
		return nil, false, nil, errBelowWindow
	}
	conflicts = slices.Clone(atHeight)
	if !heldHeight {
		i, _ := slices.BinarySearch(s.heights, n)
		s.heights = slices.Insert(s.heights, i, n)
		for len(s.heights) > s.window {
			s.evictLowest()
		}
	}
	s.byNumber[n] = append(atHeight, h)
	s.byHash[h.hash()] = h
	for l := range s.listeners {
		l.offer(h)
	}
	return h, true, conflicts, nil
}

func (s *envelopeStore) evictLowest() {
	n := s.heights[0]
	s.heights = slices.Delete(s.heights, 0, 1)
	for _, h := range s.byNumber[n] {
		delete(s.byHash, h.hash())
	}
	delete(s.byNumber, n)
}

// ByNumber returns the envelopes held at a height, first arrived first.
func (s *envelopeStore) ByNumber(n uint64) []*heldEnvelope {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.byNumber[n])
}

// Latest returns the envelope that arrived last at a height, or nil: the sequencer's current block there, the
// one to follow and to relay (after an unsafe reorg the first one is the orphan).
func (s *envelopeStore) Latest(n uint64) *heldEnvelope {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.latest(n)
}

func (s *envelopeStore) latest(n uint64) *heldEnvelope {
	if held := s.byNumber[n]; len(held) > 0 {
		return held[len(held)-1]
	}
	return nil
}

// ByHash returns the envelope held with that block hash, or nil.
func (s *envelopeStore) ByHash(hash common.Hash) *heldEnvelope {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.byHash[hash]
}

// Head returns the highest height held (0 if none).
func (s *envelopeStore) Head() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.heights) == 0 {
		return 0
	}
	return s.heights[len(s.heights)-1]
}

// Len returns how many heights are held.
func (s *envelopeStore) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.heights)
}

// Subscribe registers l for every envelope added from now on, and returns, atomically with that, the envelopes
// already held from height from on (the latest arrived at each height), in ascending order: replaying them and
// then what l is offered misses nothing and repeats nothing.
func (s *envelopeStore) Subscribe(from uint64, l envelopeListener) []*heldEnvelope {
	s.mu.Lock()
	defer s.mu.Unlock()
	i, _ := slices.BinarySearch(s.heights, from)
	replay := make([]*heldEnvelope, 0, len(s.heights)-i)
	for _, n := range s.heights[i:] {
		replay = append(replay, s.latest(n))
	}
	s.listeners[l] = struct{}{}
	return replay
}

// Unsubscribe stops offering envelopes to l.
func (s *envelopeStore) Unsubscribe(l envelopeListener) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.listeners, l)
}
