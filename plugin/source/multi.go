package source

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ethereum-optimism/optimism/op-service/clock"
	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/log"
	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/op-replicator/op-replicator/plugin/api"
	"github.com/op-replicator/op-replicator/plugin/relay"

	"github.com/ethereum-optimism/optimism/op-service/eth"
)

// sourceHealth is one source's standing (api.SourceHealth), when it last failed, and how often it was set aside.
type sourceHealth struct {
	api.SourceHealth
	failedAt time.Time
	strikes  int
}

// healthy: no error since the last success.
func (h *sourceHealth) healthy() bool { return h.LastOK != nil && !h.failedAt.After(*h.LastOK) }

// asideAt: the source is set aside at now.
func (h *sourceHealth) asideAt(now time.Time) bool {
	return h.SetAsideUntil != nil && now.Before(*h.SetAsideUntil)
}

// Multi fans several sources into one: the head is the highest any source has, and a block is taken from
// the first source that has it, healthy sources first, so one source failing loses no block. Blocks from relays
// are deduplicated in the envelope store (the first valid copy wins). What an unsigned (RPC) source serves is
// weighed against signed blocks and the other RPC sources (trust, trust.go); a source caught serving a
// contradicted block is set aside for a while.
type Multi struct {
	sources []Source
	trust   trust
	log     log.Logger
	metrics Metricer
	clock   clock.Clock
	heads   chan struct{}
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup

	mu       sync.Mutex
	health   []sourceHealth
	servedBy *lru.Cache[common.Hash, string]    // which source served a recent block
	unsigned *lru.Cache[uint64, unsignedAnswer] // what RPC sources served at recent heights without a signed block
	asking   []bool                             // a head request to the source is in flight
}

// RecentBlocks is how many recent blocks Multi remembers the source of (ServedBy): more than the pipeline fetches
// between a block's fetch and its insertion (a batch, and the blocks fetched ahead of it), twice over. The pipeline
// checks at compile time that it fetches no more than half of it (plugin/pipeline.go).
const RecentBlocks = 80

var _ Source = (*Multi)(nil)

func NewMulti(sources []Source, m Metricer, clk clock.Clock) *Multi {
	ctx, cancel := context.WithCancel(context.Background())
	servedBy, _ := lru.New[common.Hash, string](RecentBlocks) // only fails for a non-positive size
	unsigned, _ := lru.New[uint64, unsignedAnswer](RecentBlocks)
	ms := &Multi{sources: sources, log: log.Root(), metrics: m, clock: clk, heads: make(chan struct{}, 1), ctx: ctx, cancel: cancel,
		health: make([]sourceHealth, len(sources)), asking: make([]bool, len(sources)), servedBy: servedBy, unsigned: unsigned}
	for i, s := range sources {
		ms.health[i].Name = s.Name()
		ms.health[i].Signed = isSigned(s)
	}
	return ms
}

// withTrust sets how unsigned blocks are weighed (trust), and the logger that reports sources set aside.
func (m *Multi) withTrust(lgr log.Logger, t trust) *Multi {
	m.log, m.trust = lgr, t
	return m
}

// Start starts every source, and forwards their new heads (and, with signatures required, the signed blocks
// arriving in the store: the block waiting for its signature can go in), until Stop. A source that fails to start
// stops them all.
func (m *Multi) Start(ctx context.Context) error {
	if m.trust.requireSignature && m.trust.store != nil {
		m.trust.store.Subscribe(math.MaxUint64, signedArrivals{m.heads})
	}
	for _, s := range m.sources {
		if err := s.Start(ctx); err != nil {
			return errors.Join(fmt.Errorf("source %s: %w", s.Name(), err), m.Stop(ctx))
		}
		m.wg.Add(1)
		go m.forwardHeads(m.ctx, s)
	}
	return nil
}

func (m *Multi) forwardHeads(ctx context.Context, s Source) {
	defer m.wg.Done()
	for {
		select {
		case <-s.NewHeads():
			select {
			case m.heads <- struct{}{}:
			default:
			}
		case <-ctx.Done():
			return
		}
	}
}

func (m *Multi) Name() string {
	names := make([]string, len(m.sources))
	for i, s := range m.sources {
		names[i] = s.Name()
	}
	return strings.Join(names, ",")
}

func (m *Multi) NewHeads() <-chan struct{} { return m.heads }

// Health returns every source's standing.
func (m *Multi) Health() []api.SourceHealth {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]api.SourceHealth, len(m.health))
	now := m.clock.Now()
	for i, h := range m.health {
		out[i] = h.SourceHealth
		if !h.asideAt(now) {
			out[i].SetAsideUntil, out[i].SetAsideReason = nil, ""
		}
	}
	return out
}

func (m *Multi) record(i int, head *eth.BlockID, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	h := &m.health[i]
	now := m.clock.Now()
	if errors.Is(err, relay.ErrNoBlockYet) {
		return // a relay still making its first subscription: neither a failure nor an answer
	}
	if err != nil && !errors.Is(err, ethereum.NotFound) {
		h.Errors++
		h.LastError, h.failedAt = err.Error(), now
		m.metrics.RecordSourceError(h.Name)
		return
	}
	h.LastOK = &now
	if head != nil {
		h.Head = *head
		m.metrics.RecordSourceHead(h.Name, head.Number)
	}
}

// order lists the sources not set aside, healthy first, keeping the configured order otherwise.
func (m *Multi) order() []int {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.clock.Now()
	idx := make([]int, 0, len(m.sources))
	for i := range m.sources {
		if !m.health[i].asideAt(now) {
			idx = append(idx, i)
		}
	}
	slices.SortStableFunc(idx, func(a, b int) int {
		ha, hb := m.health[a].healthy(), m.health[b].healthy()
		switch {
		case ha && !hb:
			return -1
		case hb && !ha:
			return 1
		}
		return 0
	})
	return idx
}

// headForgetter is a source whose Head may answer with the head it last announced (rpcSource).
type headForgetter interface{ ForgetHead() }

// ForgetHead has every source that answers Head with the head it last announced ask instead, next time.
func (m *Multi) ForgetHead() {
	for _, s := range m.sources {
		if f, ok := s.(headForgetter); ok {
			f.ForgetHead()
		}
	}
}

// Head asks every source at once and returns the highest head; it fails only if every source fails. Once a source
// answered, sources that were not healthy are not waited for: a blackholed source costs the others nothing after
// its first timeout. Its request goes on in the background (one at a time), and its answer is recorded for the
// next round.
func (m *Multi) Head(ctx context.Context) (eth.BlockID, error) {
	type answer struct {
		head    eth.BlockID
		err     error
		healthy bool // the source was healthy when asked
	}
	answers := make(chan answer, len(m.sources))
	asked, waitFor := 0, 0 // sources asked; healthy ones among them
	m.mu.Lock()
	now := m.clock.Now()
	for i, s := range m.sources {
		if m.asking[i] || m.health[i].asideAt(now) {
			continue // still waiting for its previous answer, or set aside
		}
		m.asking[i] = true
		healthy := m.health[i].healthy()
		asked++
		if healthy {
			waitFor++
		}
		go func() {
			// Not cut short when the round ends: each request has the source's own timeout.
			head, err := s.Head(context.WithoutCancel(ctx))
			m.record(i, &head, err)
			m.mu.Lock()
			m.asking[i] = false
			m.mu.Unlock()
			answers <- answer{head: head, err: err, healthy: healthy}
		}()
	}
	m.mu.Unlock()
	var best eth.BlockID
	var errs []error
	ok := false
	for received := 0; received < asked && (waitFor > 0 || !ok); received++ {
		var a answer
		select {
		case a = <-answers:
		case <-ctx.Done():
			return eth.BlockID{}, ctx.Err()
		}
		if a.healthy {
			waitFor--
		}
		if a.err != nil {
			errs = append(errs, a.err)
			continue
		}
		if !ok || a.head.Number > best.Number {
			best, ok = a.head, true
		}
	}
	if !ok {
		if len(errs) == 0 {
			return eth.BlockID{}, errors.New("no source answered: every source is set aside or still busy with an earlier request")
		}
		// A relay with no block yet (relay.ErrNoBlockYet) says why only when no source failed: the caller waits for
		// it, but not when another source's failure is the answer.
		if failed := slices.DeleteFunc(slices.Clone(errs), func(err error) bool {
			return errors.Is(err, relay.ErrNoBlockYet)
		}); len(failed) > 0 {
			errs = failed
		}
		return eth.BlockID{}, errors.Join(errs...)
	}
	return best, nil
}

// Payload returns the block at height n: a signed block held there (from a relay or gossip) if any; else, with a
// quorum, the block enough RPC sources agree on; else the first answer, healthy sources first. An unsigned block
// is weighed against the signed blocks held (trust.check) before it is returned.
func (m *Multi) Payload(ctx context.Context, n uint64) (*eth.ExecutionPayloadEnvelope, error) {
	if held := m.trust.signedAt(n); held != nil {
		if signed, err := held.Signed(); err == nil { // else spilled and unreadable: not held
			m.seen(held)
			return signed.Envelope, nil
		}
	}
	if m.trust.quorum > 1 {
		return m.quorumPayload(ctx, n)
	}
	var from int
	env, err := firstOf(ctx, m, func(i int, s Source) (*eth.ExecutionPayloadEnvelope, error) {
		env, err := s.Payload(ctx, n)
		if err == nil {
			from = i
			m.servedBy.Add(env.ExecutionPayload.BlockHash, s.Name())
		}
		return env, err
	})
	if err != nil || isSigned(m.sources[from]) {
		return env, err
	}
	return m.check(env, from)
}

// ServedBy names the source that served a recent block ("" if none did).
func (m *Multi) ServedBy(hash common.Hash) string {
	name, _ := m.servedBy.Get(hash)
	return name
}

// firstOf returns the first answer, healthy sources first. If no source has the block but one answered that it
// does not have it (yet), the result is ethereum.NotFound (wait, do not back off); the failures of the others are
// in their health. Only when every source failed are the errors returned.
//
// A request cancelled by the caller (a round ended, with blocks still being fetched ahead) says nothing of the
// source: it is not recorded, and no other source is asked.
func firstOf[T any](ctx context.Context, m *Multi, f func(int, Source) (T, error)) (T, error) {
	var zero T
	var errs []error
	notFound := false
	order := m.order()
	if len(order) == 0 {
		return zero, fmt.Errorf("%w: every source is set aside", ethereum.NotFound)
	}
	for _, i := range order {
		v, err := f(i, m.sources[i])
		if err != nil && ctx.Err() != nil {
			return zero, ctx.Err()
		}
		m.record(i, nil, err)
		switch {
		case err == nil:
			return v, nil
		case errors.Is(err, ethereum.NotFound):
			notFound = true
		default:
			errs = append(errs, fmt.Errorf("%s: %w", m.sources[i].Name(), err))
		}
	}
	if notFound {
		return zero, ethereum.NotFound
	}
	return zero, errors.Join(errs...)
}

// Stop stops every source, whatever ctx says; ctx bounds each wait. Their errors are joined.
func (m *Multi) Stop(ctx context.Context) error {
	m.cancel()
	err := waitGroup(ctx, &m.wg, "sources' heads")
	for _, s := range m.sources {
		err = errors.Join(err, s.Stop(ctx))
	}
	return err
}
