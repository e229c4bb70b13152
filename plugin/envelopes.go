package plugin

import (
	"cmp"
	"encoding/json"
	"slices"
	"sync"
	"time"

	"github.com/ethereum/go-ethereum/common"
	lru "github.com/hashicorp/golang-lru/v2"

	opsigner "github.com/ethereum-optimism/optimism/op-service/signer"
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

// envelopeStore holds a bounded window of recent block heights of verified, sequencer-signed envelopes, by number
// and by hash. A height may hold more than one envelope: two validly signed blocks at one height are the
// sequencer equivocating. Envelopes must be verified before they are added.
type envelopeStore struct {
	mu        sync.Mutex
	byNumber  *lru.Cache[uint64, []*heldEnvelope]
	byHash    map[common.Hash]*heldEnvelope
	listeners map[envelopeListener]struct{}
}

func newEnvelopeStore(window int) *envelopeStore {
	s := &envelopeStore{byHash: make(map[common.Hash]*heldEnvelope), listeners: make(map[envelopeListener]struct{})}
	// Evictions happen inside Add, under s.mu.
	s.byNumber, _ = lru.NewWithEvict[uint64, []*heldEnvelope](window, func(_ uint64, held []*heldEnvelope) {
		for _, h := range held {
			delete(s.byHash, h.hash())
		}
	})
	return s
}

// Add holds a verified envelope. It returns the envelope as held (the earlier copy if the block was held already,
// with added false), and the envelopes already held at that height with another hash.
func (s *envelopeStore) Add(signed *opsigner.SignedExecutionPayloadEnvelope, source string, now time.Time) (held *heldEnvelope, added bool, conflicts []*heldEnvelope) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := &heldEnvelope{Signed: signed, Source: source, Arrived: now}
	if prev, ok := s.byHash[h.hash()]; ok {
		return prev, false, nil
	}
	atHeight, _ := s.byNumber.Get(h.number())
	conflicts = slices.Clone(atHeight)
	s.byNumber.Add(h.number(), append(atHeight, h))
	s.byHash[h.hash()] = h
	for l := range s.listeners {
		l.offer(h)
	}
	return h, true, conflicts
}

// ByNumber returns the envelopes held at a height, first arrived first.
func (s *envelopeStore) ByNumber(n uint64) []*heldEnvelope {
	s.mu.Lock()
	defer s.mu.Unlock()
	held, _ := s.byNumber.Peek(n)
	return slices.Clone(held)
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
	keys := s.byNumber.Keys()
	if len(keys) == 0 {
		return 0
	}
	return slices.Max(keys)
}

// Len returns how many heights are held.
func (s *envelopeStore) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.byNumber.Len()
}

// Subscribe registers l for every envelope added from now on, and returns, atomically with that, the envelopes
// already held from height from on (the first held at each height), in ascending order: replaying them and then
// what l is offered misses nothing and repeats nothing.
func (s *envelopeStore) Subscribe(from uint64, l envelopeListener) []*heldEnvelope {
	s.mu.Lock()
	defer s.mu.Unlock()
	var replay []*heldEnvelope
	for _, n := range s.byNumber.Keys() {
		if n < from {
			continue
		}
		if held, ok := s.byNumber.Peek(n); ok && len(held) > 0 {
			replay = append(replay, held[0])
		}
	}
	slices.SortFunc(replay, func(a, b *heldEnvelope) int { return cmp.Compare(a.number(), b.number()) })
	s.listeners[l] = struct{}{}
	return replay
}

// Unsubscribe stops offering envelopes to l.
func (s *envelopeStore) Unsubscribe(l envelopeListener) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.listeners, l)
}
