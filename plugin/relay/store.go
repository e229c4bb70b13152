package relay

import (
	"slices"
	"sync"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/log"

	"github.com/ethereum-optimism/optimism/op-node/rollup"
	"github.com/ethereum-optimism/optimism/op-node/rollup/derive"
	"github.com/ethereum-optimism/optimism/op-service/eth"
	opsigner "github.com/ethereum-optimism/optimism/op-service/signer"
)

// maxEnvelopesPerHeight bounds the distinct signed blocks held at one height, as op-node's gossip does (it
// accepts at most 5 blocks per height).
const maxEnvelopesPerHeight = 5

// ReplayAge is gossip's age limit: op-node refuses a gossiped block whose timestamp is more than 60 s behind its
// clock. A signed block that old when it arrives is history, whoever sends it, as is one whose L1 origin is outside
// the sequencing window of our L1 head (JudgeOrigins): it is held and relayed (a node catching up needs it), but it
// is never equivocation evidence, so a replay of old signed blocks cannot halt a node whose safe head is still
// below them (a node just started).
const ReplayAge = 60 * time.Second

// Listener is told of every envelope added after it subscribed. Offer must not block.
type Listener interface {
	Offer(h *Held)
}

// SyncStatus gives op-node's view of the chain heads (op-node's status tracker; driverhook.SyncStatus).
type SyncStatus interface {
	SyncStatus() *eth.SyncStatus
}

// Store holds verified, sequencer-signed envelopes for a window of the highest block heights seen, by number and
// by hash. When the window is exceeded the lowest height goes, so old blocks, however many are replayed, never
// push out recent ones. A height holds at most maxEnvelopesPerHeight envelopes, in arrival order: two validly
// signed blocks at one height above the safe head, the second one younger than ReplayAge, are the sequencer
// equivocating, and the last arrived is the sequencer's current block there (after an unsafe reorg). A block that
// arrives as history at a height already held is a replay: not evidence, and the block followed there is the one
// the chain held above builds on. With a status, blocks at or below op-node's safe head
// are refused: this is the one place that check is made. Envelopes must be verified before they are added. With a
// window on disk (SpillTo), the blocks below the newest heights are held there (spill.go); the logic is the same.
type Store struct {
	window int
	log    log.Logger
	// status gives op-node's safe head (nil: drop nothing); metrics counts what it makes the store drop.
	status  SyncStatus
	metrics Metricer
	// rollup, when set, has blocks whose L1 origin is outside the sequencing window taken as history (JudgeOrigins).
	rollup *rollup.Config

	mu        sync.Mutex
	heights   []uint64           // held heights, ascending
	byNumber  map[uint64][]*Held // arrival order
	byHash    map[common.Hash]*Held
	listeners map[Listener]struct{}

	// disk, when set (SpillTo), holds the blocks below the newest memory heights (window.go, spill.go).
	disk     *diskWindow
	memory   int
	memBytes int64 // heldSize of the blocks in memory
	diskLen  int64 // JSON bytes of the blocks spilled
}

// JudgeOrigins has Add also take a block as history (never evidence) when its L1 origin is outside the sequencing
// window of op-node's L1 head (status): derivation can no longer take a batch for it, whatever this node's clock
// says of its timestamp. It is set before the store is used.
func (s *Store) JudgeOrigins(cfg *rollup.Config) { s.rollup = cfg }

// originOutsideWindow reports whether a block's L1 origin (from its L1-info deposit) is more than the sequencing
// window below op-node's L1 head. Unknown (no status, no L1 head, no readable deposit): false.
func (s *Store) originOutsideWindow(signed *opsigner.SignedExecutionPayloadEnvelope) bool {
	if s.rollup == nil || s.status == nil {
		return false
	}
	st := s.status.SyncStatus()
	p := signed.Envelope.ExecutionPayload
	if st == nil || st.HeadL1 == (eth.L1BlockRef{}) || len(p.Transactions) == 0 {
		return false
	}
	var tx types.Transaction
	if err := tx.UnmarshalBinary(p.Transactions[0]); err != nil {
		return false
	}
	info, err := derive.L1BlockInfoFromBytes(s.rollup, uint64(p.Timestamp), tx.Data())
	if err != nil {
		return false
	}
	return info.Number+s.rollup.SeqWindowSize < st.HeadL1.Number
}

// NewStore holds window heights (--replicator.relay.window) and every block added within them. With a status, Add
// refuses (ErrReplay) blocks at or below op-node's safe head as status reports it (a zero safe head, while unknown,
// drops nothing), counting them on m.
func NewStore(window int, lgr log.Logger, status SyncStatus, m Metricer) *Store {
	return &Store{window: max(window, 1), log: lgr, status: status, metrics: m,
		byNumber: make(map[uint64][]*Held), byHash: make(map[common.Hash]*Held),
		listeners: make(map[Listener]struct{})}
}

// SafeHead is op-node's safe head, or the zero ID while it is unknown (or without a status).
func (s *Store) SafeHead() eth.BlockID {
	if s.status == nil {
		return eth.BlockID{}
	}
	st := s.status.SyncStatus()
	if st == nil {
		return eth.BlockID{}
	}
	return st.SafeL2.ID()
}

// Settled reports whether height n is at or below the safe head (known), and the safe head.
func (s *Store) Settled(n uint64) (eth.BlockID, bool) {
	safe := s.SafeHead()
	return safe, safe != (eth.BlockID{}) && n <= safe.Number
}

// Add holds a verified envelope. It returns the envelope as held (the earlier copy if the block was held already,
// with added false) and, unless the block is history (IsHistory), the envelopes already held at that height with
// another hash (equivocation evidence); or, with nothing held, why the block was refused: ErrReplay, ErrHeightFull
// or ErrBelowWindow.
func (s *Store) Add(signed *opsigner.SignedExecutionPayloadEnvelope, source string, now time.Time) (held *Held, added bool, conflicts []*Held, err error) {
	h := NewHeld(signed, source, now)
	h.History = IsHistory(signed, now) || s.originOutsideWindow(signed) // read before s.mu: op-node's status
	n := h.Number()
	// Read before taking s.mu: the status is op-node's, with locks of its own.
	if safe, ok := s.Settled(n); ok {
		s.metrics.RecordReplayDropped()
		s.log.Debug("Dropping replayed signed block at or below the safe head", "block", signed.ID(), "safe", safe,
			"source", source)
		return nil, false, nil, ErrReplay
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if prev, ok := s.byHash[h.Hash()]; ok {
		return prev, false, nil, nil
	}
	atHeight, heldHeight := s.byNumber[n]
	switch {
	case len(atHeight) >= maxEnvelopesPerHeight:
		s.log.Debug("Refusing signed block: its height is full", "block", signed.ID(), "held", len(atHeight),
			"source", source)
		return nil, false, nil, ErrHeightFull
	case !heldHeight && len(s.heights) >= s.window && n < s.heights[0]:
		s.log.Debug("Refusing signed block below the heights held", "block", signed.ID(), "lowest", s.heights[0],
			"source", source)
		return nil, false, nil, ErrBelowWindow
	}
	if h.History && heldHeight {
		s.metrics.RecordReplayDropped()
		s.log.Debug("Holding an old signed block beside another at its height: a replay, not evidence",
			"block", signed.ID(), "age", now.Sub(time.Unix(int64(signed.Envelope.ExecutionPayload.Timestamp), 0)),
			"source", source)
	} else {
		conflicts = s.loaded(atHeight)
	}
	if !heldHeight {
		i, _ := slices.BinarySearch(s.heights, n)
		s.heights = slices.Insert(s.heights, i, n)
		for len(s.heights) > s.window {
			s.evictLowest()
		}
	}
	s.byNumber[n] = append(atHeight, h)
	s.byHash[h.Hash()] = h
	s.memBytes += h.size
	for l := range s.listeners {
		l.Offer(h)
	}
	s.spillBelowMemory(n)
	s.recordBytes()
	return h, true, conflicts, nil
}

func (s *Store) evictLowest() {
	n := s.heights[0]
	s.heights = slices.Delete(s.heights, 0, 1)
	for _, h := range s.byNumber[n] {
		delete(s.byHash, h.Hash())
		s.forget(h)
	}
	delete(s.byNumber, n)
}

// Window is how many heights the store holds: the highest ones seen.
func (s *Store) Window() int { return s.window }

// ByNumber returns the envelopes held at a height, first arrived first.
func (s *Store) ByNumber(n uint64) []*Held {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.byNumber[n])
}

// Latest returns the sequencer's current block at a height, the one to follow and to relay, or nil. Where several
// are held, it is the last arrived (after an unsafe reorg the first one is the orphan), unless the last arrived as
// history (a replay): then it is the one the block followed at the next height builds on, or nil while none does.
func (s *Store) Latest(n uint64) *Held {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.latest(n)
}

func (s *Store) latest(n uint64) *Held {
	held := s.byNumber[n]
	switch {
	case len(held) == 0:
		return nil
	case len(held) == 1 || !held[len(held)-1].History:
		return held[len(held)-1]
	}
	// A replay beside the block first held here, which arrived first unknown: the one the block followed at the next
	// height builds on, or none yet (the caller waits for the chain above, or asks a relay). The recursion goes up
	// only while heights hold replays.
	if child := s.latest(n + 1); child != nil {
		for _, h := range held {
			if h.Hash() == child.ParentHash() {
				return h
			}
		}
	}
	return nil
}

// ByHash returns the envelope held with that block hash, or nil.
func (s *Store) ByHash(hash common.Hash) *Held {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.byHash[hash]
}

// Head returns the highest height held (0 if none).
func (s *Store) Head() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.heights) == 0 {
		return 0
	}
	return s.heights[len(s.heights)-1]
}

// Len returns how many heights are held.
func (s *Store) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.heights)
}

// Subscribe registers l for every envelope added from now on, and returns, atomically with that, the envelopes
// already held from height from on (the latest arrived at each height), in ascending order: replaying them and
// then what l is offered misses nothing and repeats nothing.
func (s *Store) Subscribe(from uint64, l Listener) []*Held {
	s.mu.Lock()
	defer s.mu.Unlock()
	i, _ := slices.BinarySearch(s.heights, from)
	replay := make([]*Held, 0, len(s.heights)-i)
	for _, n := range s.heights[i:] {
		if h := s.latest(n); h != nil {
			replay = append(replay, h)
		}
	}
	s.listeners[l] = struct{}{}
	return replay
}

// Unsubscribe stops offering envelopes to l.
func (s *Store) Unsubscribe(l Listener) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.listeners, l)
}
