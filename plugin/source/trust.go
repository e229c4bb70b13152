package source

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"

	"github.com/ethereum-optimism/optimism/op-service/eth"

	"github.com/op-replicator/op-replicator/driverhook"
	"github.com/op-replicator/op-replicator/plugin/relay"
)

// Trust is explicit per source. A relay source is authenticated: every block it delivers carries the sequencer's
// signature, checked before it is held in the store (with gossip's). An RPC source is trusted for content: its
// block is self-consistent (hash, execution, derivation rules) but nothing shows the sequencer chose its user
// transactions. So an unsigned block never wins over a signed one: where a signed block is held at a height, it is
// what is served there, and an RPC source that served another block at that height is set aside (it proves
// nothing, so nothing halts). --replicator.require-signature serves only signed blocks (an RPC source's block waits
// until the signed one is held); --replicator.quorum N serves an unsigned block only once N RPC sources served
// its hash, and sets RPC sources that disagree aside.
type trust struct {
	store            *relay.Store // signed blocks held (relay sources, gossip); nil: none
	requireSignature bool
	quorum           int // 0 or 1: no quorum
}

// Setting aside: a source caught once is set aside for setAsideBase, each time again for twice as long as the time
// before, up to setAsideMax. Its answers are not asked for meanwhile (its head neither).
const (
	setAsideBase = time.Minute
	setAsideMax  = time.Hour
)

// isSigned reports whether a source's blocks carry the sequencer's signature.
func isSigned(s Source) bool {
	_, ok := s.(relaySource)
	return ok
}

// signedAt returns the signed block held at height n, the sequencer's current one there (relay.Store.Latest).
func (t *trust) signedAt(n uint64) *relay.Held {
	if t.store == nil {
		return nil
	}
	return t.store.Latest(n)
}

// signedArrivals wakes the loop when a signed block is held (relay.Listener).
type signedArrivals struct{ heads chan struct{} }

func (a signedArrivals) Offer(*relay.Held) {
	select {
	case a.heads <- struct{}{}:
	default:
	}
}

// unsignedAnswer is a block RPC sources served at a height where no signed block was held yet: once the signed one
// arrives, sources that served another block are set aside (seen).
type unsignedAnswer struct {
	hash    common.Hash
	sources []int
}

// seen compares the signed block now held at a height with what RPC sources served there before it arrived.
func (m *Multi) seen(held *relay.Held) {
	u, ok := m.unsigned.Get(held.Number())
	if !ok {
		return
	}
	m.unsigned.Remove(held.Number())
	if u.hash != held.Hash() {
		m.setAside(fmt.Sprintf("served block %s at height %d where the sequencer signed %s", u.hash, held.Number(),
			held.Hash()), u.sources...)
	}
}

// check weighs an unsigned block from source i against the signed blocks held: a signed block at its height wins
// (and source i is set aside if it served another block); with signatures required and none held yet, the block
// waits (ethereum.NotFound: the round waits for the signed one, whose arrival wakes the loop).
func (m *Multi) check(env *eth.ExecutionPayloadEnvelope, from ...int) (*eth.ExecutionPayloadEnvelope, error) {
	p := env.ExecutionPayload
	if held := m.trust.signedAt(uint64(p.BlockNumber)); held != nil {
		if signed, err := held.Signed(); err == nil { // else spilled and unreadable: not held
			if held.Hash() != p.BlockHash {
				m.setAside(fmt.Sprintf("served block %s where the sequencer signed %s", p.ID(), held.Hash()), from...)
			}
			return signed.Envelope, nil
		}
	}
	m.unsigned.Add(uint64(p.BlockNumber), unsignedAnswer{hash: p.BlockHash, sources: from})
	if m.trust.requireSignature {
		return nil, fmt.Errorf("%w: block %s awaits the sequencer's signature (--%s)", ethereum.NotFound, p.ID(),
			driverhook.RequireSignatureFlagName)
	}
	return env, nil
}

// quorumPayload asks every source not set aside for block n at once. A signed answer (a relay's) is served at
// once; unsigned answers are served once trust.quorum of them have one hash. Once every source answered without a
// quorum, the RPC sources that served a block are set aside if they disagree (none can be told from the other: an
// unsigned source proves nothing) and the block waits.
func (m *Multi) quorumPayload(ctx context.Context, n uint64) (*eth.ExecutionPayloadEnvelope, error) {
	order := m.order()
	if len(order) == 0 {
		return nil, fmt.Errorf("%w: every source is set aside", ethereum.NotFound)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	answers := make(chan quorumAnswer, len(order))
	for _, i := range order {
		go func() {
			env, err := m.sources[i].Payload(ctx, n)
			answers <- quorumAnswer{i, env, err}
		}()
	}
	votes := make(map[common.Hash][]int)
	var errs []error
	notFound := false
	for received := 1; received <= len(order); received++ {
		var a quorumAnswer
		select {
		case a = <-answers:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if a.err != nil && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		m.record(a.i, nil, a.err)
		switch {
		case errors.Is(a.err, ethereum.NotFound):
			notFound = true
			continue
		case a.err != nil:
			errs = append(errs, fmt.Errorf("%s: %w", m.sources[a.i].Name(), a.err))
			continue
		}
		m.servedBy.Add(a.env.ExecutionPayload.BlockHash, m.sources[a.i].Name())
		if isSigned(m.sources[a.i]) {
			return a.env, nil
		}
		hash := a.env.ExecutionPayload.BlockHash
		votes[hash] = append(votes[hash], a.i)
		if len(votes[hash]) >= m.trust.quorum {
			var dissent []int
			for h, v := range votes {
				if h != hash {
					dissent = append(dissent, v...)
				}
			}
			m.setAside(dissentReason(n, m.trust.quorum, hash), dissent...)
			if rest := len(order) - received; rest > 0 {
				// The answers still on their way are weighed too: a dissenter is set aside whether it answered before
				// the quorum or after (their requests are cancelled now; a block already fetched still counts).
				m.wg.Add(1)
				go m.weighLate(answers, rest, n, hash)
			}
			return m.check(a.env, votes[hash]...)
		}
	}
	if len(votes) > 1 {
		var all []int
		for _, v := range votes {
			all = append(all, v...)
		}
		m.setAside(fmt.Sprintf("RPC sources served %d different blocks at height %d (--%s %d)",
			len(votes), n, driverhook.QuorumFlagName, m.trust.quorum), all...)
	}
	if len(votes) > 0 || notFound || len(errs) == 0 {
		return nil, fmt.Errorf("%w: no quorum of %d RPC sources for block %d yet", ethereum.NotFound, m.trust.quorum, n)
	}
	return nil, errors.Join(errs...)
}

// quorumAnswer is one source's answer to a quorum's request.
type quorumAnswer struct {
	i   int
	env *eth.ExecutionPayloadEnvelope
	err error
}

func dissentReason(n uint64, quorum int, hash common.Hash) string {
	return fmt.Sprintf("served another block at height %d than a quorum of %d RPC sources (%s)", n, quorum, hash)
}

// weighLate takes the rest answers of a quorum's request that arrive after the quorum was reached, and sets aside the
// unsigned sources among them that served another block than the quorum's hash.
func (m *Multi) weighLate(answers <-chan quorumAnswer, rest int, n uint64, hash common.Hash) {
	defer m.wg.Done()
	for range rest {
		a := <-answers
		if a.err == nil && !isSigned(m.sources[a.i]) && a.env.ExecutionPayload.BlockHash != hash {
			m.setAside(dissentReason(n, m.trust.quorum, hash), a.i)
		}
	}
}

// setAside sets sources aside: their heads and blocks are not asked for until the time is up.
func (m *Multi) setAside(why string, sources ...int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.clock.Now()
	for _, i := range sources {
		h := &m.health[i]
		d := min(setAsideBase<<min(h.strikes, 10), setAsideMax)
		h.strikes++
		until := now.Add(d)
		h.SetAsideUntil, h.SetAsideReason = &until, why
		h.Errors++
		h.LastError, h.failedAt = why, now
		m.metrics.RecordSourceError(h.Name)
		m.log.Error("Setting source aside: it served a block that is contradicted", "source", h.Name, "why", why,
			"until", until)
	}
}
