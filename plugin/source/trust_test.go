package source

import (
	"context"
	"testing"
	"time"

	"github.com/ethereum-optimism/optimism/op-service/clock"
	"github.com/ethereum-optimism/optimism/op-service/eth"
	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/log"
	"github.com/stretchr/testify/require"

	"github.com/op-replicator/op-replicator/plugin/internal/testkit"
	"github.com/op-replicator/op-replicator/plugin/relay"
)

// trustFixture is a genuine chain (the sequencer's, signed), a forged one from height 3 on (a lying RPC source's:
// self-consistent, unsigned), a store of signed blocks and a clock at the chain's time.
type trustFixture struct {
	genuine, forged []testkit.Block
	store           *relay.Store
	clock           *clock.DeterministicClock
}

func newTrustFixture(t *testing.T) *trustFixture {
	cfg := testkit.RollupConfig()
	return &trustFixture{genuine: headerHashed(testkit.BuildChain(t, cfg, 6, 0, 0)), forged: headerHashed(testkit.BuildChain(t, cfg, 6, 5, 3)),
		store: relay.NewStore(16, log.Root(), nil, noopMetrics{}), clock: clock.NewDeterministicClock(time.Unix(1000, 0))}
}

// sign holds the sequencer's signed genuine block n, as a relay source or gossip would.
func (f *trustFixture) sign(t *testing.T, n uint64) {
	cfg := testkit.RollupConfig()
	p := *f.genuine[n-1].Env.ExecutionPayload
	signed := testkit.Sign(t, cfg.L2ChainID, testkit.Key(1), &eth.ExecutionPayloadEnvelope{ExecutionPayload: &p})
	_, _, _, err := f.store.Add(signed, "relay", f.clock.Now())
	require.NoError(t, err)
}

func (f *trustFixture) rpc(blocks []testkit.Block, name string) Source {
	s := testkit.NewSource(blocks)
	s.Set(blocks, uint64(len(blocks)), nil)
	return &namedSource{Source: s, name: name}
}

// headerHashed gives each block its header's hash, as a signed block has (not a linked chain: the Multi does
// not check linkage).
func headerHashed(blocks []testkit.Block) []testkit.Block {
	out := make([]testkit.Block, len(blocks))
	for i, b := range blocks {
		p := *b.Env.ExecutionPayload
		env := &eth.ExecutionPayloadEnvelope{ExecutionPayload: &p}
		p.BlockHash, _ = env.CheckBlockHash()
		ref := b.Ref
		ref.Hash = p.BlockHash
		out[i] = testkit.Block{Env: env, Ref: ref}
	}
	return out
}

func hashAt(blocks []testkit.Block, n uint64) common.Hash { return blocks[n-1].Ref.Hash }

func requirePayload(t *testing.T, m *Multi, n uint64, want common.Hash) {
	t.Helper()
	env, err := m.Payload(context.Background(), n)
	require.NoError(t, err)
	require.Equal(t, want, env.ExecutionPayload.BlockHash)
}

// An unsigned block never wins over a signed one: where a signed block is held, it is served, and the RPC source
// that served another block at that height (before the signed one arrived, or after) is set aside, for a while.
func TestUnsignedNeverWinsOverSigned(t *testing.T) {
	f := newTrustFixture(t)
	m := NewMulti([]Source{f.rpc(f.forged, "liar")}, noopMetrics{}, f.clock).withTrust(log.Root(), trust{store: f.store})
	defer func() { require.NoError(t, m.Stop(context.Background())) }()
	require.False(t, m.Health()[0].Signed)

	requirePayload(t, m, 3, hashAt(f.forged, 3)) // nothing signed held: an RPC source is trusted for content
	f.sign(t, 3)
	requirePayload(t, m, 3, hashAt(f.genuine, 3))
	h := m.Health()[0]
	require.NotNil(t, h.SetAsideUntil, "the source that served another block than the signed one is set aside")
	require.Contains(t, h.SetAsideReason, "where the sequencer signed")

	_, err := m.Payload(context.Background(), 4)
	require.ErrorIs(t, err, ethereum.NotFound, "a source set aside is not asked: the block waits")
	_, err = m.Head(context.Background())
	require.ErrorContains(t, err, "set aside")

	f.clock.AdvanceTime(setAsideBase)
	require.Nil(t, m.Health()[0].SetAsideUntil, "asked again once the time is up")
	requirePayload(t, m, 4, hashAt(f.forged, 4))
	f.sign(t, 4)
	requirePayload(t, m, 4, hashAt(f.genuine, 4)) // caught again once the signed block arrives
	h = m.Health()[0]
	require.Equal(t, f.clock.Now().Add(2*setAsideBase), *h.SetAsideUntil, "twice as long the second time")
}

// With --replicator.require-signature, an RPC source's block is served only once the signed block with its hash is
// held; the signed block's arrival wakes the loop.
func TestRequireSignature(t *testing.T) {
	f := newTrustFixture(t)
	m := NewMulti([]Source{f.rpc(f.genuine, "rpc")}, noopMetrics{}, f.clock).
		withTrust(log.Root(), trust{store: f.store, requireSignature: true})
	require.NoError(t, m.Start(context.Background()))
	defer func() { require.NoError(t, m.Stop(context.Background())) }()

	_, err := m.Payload(context.Background(), 2)
	require.ErrorIs(t, err, ethereum.NotFound)
	require.ErrorContains(t, err, "awaits the sequencer's signature")
	f.sign(t, 2)
	select {
	case <-m.NewHeads():
	case <-time.After(5 * time.Second):
		t.Fatal("a signed block held did not wake the loop")
	}
	env, err := m.Payload(context.Background(), 2)
	require.NoError(t, err)
	require.Equal(t, hashAt(f.genuine, 2), env.ExecutionPayload.BlockHash)
	require.Nil(t, m.Health()[0].SetAsideUntil)

	// A lying source's block never goes in, and it is set aside once the signed one arrives.
	liar := NewMulti([]Source{f.rpc(f.forged, "liar")}, noopMetrics{}, f.clock).
		withTrust(log.Root(), trust{store: f.store, requireSignature: true})
	defer func() { require.NoError(t, liar.Stop(context.Background())) }()
	_, err = liar.Payload(context.Background(), 3)
	require.ErrorIs(t, err, ethereum.NotFound)
	f.sign(t, 3)
	requirePayload(t, liar, 3, hashAt(f.genuine, 3))
	require.NotNil(t, liar.Health()[0].SetAsideUntil)
}

// With --replicator.quorum 2, an unsigned block is served once two RPC sources served its hash; a source that
// served another is set aside. Two sources disagreeing with no quorum are both set aside, and the block waits:
// nothing halts.
func TestQuorum(t *testing.T) {
	f := newTrustFixture(t)
	m := NewMulti([]Source{f.rpc(f.forged, "liar"), f.rpc(f.genuine, "a"), f.rpc(f.genuine, "b")}, noopMetrics{}, f.clock).
		withTrust(log.Root(), trust{store: f.store, quorum: 2})
	defer func() { require.NoError(t, m.Stop(context.Background())) }()
	requirePayload(t, m, 2, hashAt(f.genuine, 2)) // the same block on every source
	require.Nil(t, m.Health()[0].SetAsideUntil)
	requirePayload(t, m, 3, hashAt(f.genuine, 3))
	// Set aside whether its answer came before the quorum's or after it.
	require.Eventually(t, func() bool { return m.Health()[0].SetAsideUntil != nil }, 5*time.Second, time.Millisecond,
		"the source that served another block than the quorum's")
	require.Contains(t, m.Health()[0].SetAsideReason, "than a quorum of 2")
	requirePayload(t, m, 4, hashAt(f.genuine, 4)) // two sources left: still a quorum

	// A dissenter whose block arrives after the quorum was reached (its request already cancelled) is set aside too.
	gate := make(chan struct{})
	late := NewMulti([]Source{&lateSource{Source: f.rpc(f.forged, "late liar"), gate: gate}, f.rpc(f.genuine, "a"),
		f.rpc(f.genuine, "b")}, noopMetrics{}, f.clock).withTrust(log.Root(), trust{store: f.store, quorum: 2})
	defer func() { require.NoError(t, late.Stop(context.Background())) }()
	requirePayload(t, late, 3, hashAt(f.genuine, 3))
	require.Nil(t, late.Health()[0].SetAsideUntil, "not answered yet")
	close(gate)
	require.Eventually(t, func() bool { return late.Health()[0].SetAsideUntil != nil }, 5*time.Second, time.Millisecond,
		"a dissenter answering after the quorum")

	split := NewMulti([]Source{f.rpc(f.forged, "x"), f.rpc(f.genuine, "y")}, noopMetrics{}, f.clock).
		withTrust(log.Root(), trust{store: f.store, quorum: 2})
	defer func() { require.NoError(t, split.Stop(context.Background())) }()
	requirePayload(t, split, 2, hashAt(f.genuine, 2))
	_, err := split.Payload(context.Background(), 4)
	require.ErrorIs(t, err, ethereum.NotFound)
	for _, h := range split.Health() {
		require.NotNil(t, h.SetAsideUntil, "%s: sources that disagree are set aside", h.Name)
		require.Contains(t, h.SetAsideReason, "different blocks")
	}
	// A signed block held wins over any of them.
	f.sign(t, 4)
	requirePayload(t, split, 4, hashAt(f.genuine, 4))
}

// lateSource answers once gate is closed, even if the request was cancelled meanwhile: a block that was already
// on its way.
type lateSource struct {
	Source
	gate <-chan struct{}
}

func (s *lateSource) Payload(_ context.Context, n uint64) (*eth.ExecutionPayloadEnvelope, error) {
	<-s.gate
	return s.Source.Payload(context.Background(), n)
}

// namedSource is a source under another name.
type namedSource struct {
	Source
	name string
}

func (n *namedSource) Name() string { return n.name }
