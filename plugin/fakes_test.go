package plugin

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/log"
	"github.com/ethereum/go-ethereum/rpc"
	"github.com/stretchr/testify/require"

	optypes "github.com/ethereum-optimism/optimism/op-core/types"
	"github.com/ethereum-optimism/optimism/op-node/rollup"
	"github.com/ethereum-optimism/optimism/op-node/rollup/engine"
	"github.com/ethereum-optimism/optimism/op-service/clock"
	"github.com/ethereum-optimism/optimism/op-service/eth"
	"github.com/ethereum-optimism/optimism/op-service/testlog"
	"github.com/ethereum-optimism/optimism/op-service/testutils"

	"github.com/op-replicator/op-replicator/driverhook"
	"github.com/op-replicator/op-replicator/plugin/api"
	"github.com/op-replicator/op-replicator/plugin/internal/testkit"
	"github.com/op-replicator/op-replicator/plugin/relay"
	"github.com/op-replicator/op-replicator/plugin/source"
)

// The fakes run the test chain of testkit (testkit.BuildChain: L2 block n has L1 origin n/2), served by
// testkit.Source.

// fakeEngine is the engine controller, the local EL and the status tracker in one.
type fakeEngine struct {
	mu        sync.Mutex
	chain     []eth.L2BlockRef // chain[n] is the canonical block n
	roots     map[common.Hash]common.Hash
	safe      uint64
	finalized uint64
	l1Head    eth.L1BlockRef
	l1Safe    eth.L1BlockRef
	l1Final   eth.L1BlockRef
	elSyncing bool
	// sysCfgReads counts SystemConfigByL2Hash calls; statusReads counts SyncStatus calls (one per block verified).
	sysCfgReads atomic.Int64
	statusReads atomic.Int64

	invalid   map[common.Hash]bool // blocks the engine finds INVALID
	insertErr error
	rewinds   int
	held      bool // unsafe input held (HoldUnsafeInput, RewindUnsafeToSafe)
	inserted  int
	// forkchoiceUpdates counts the forkchoice updates insertions made; batches the blocks of each insertion call.
	forkchoiceUpdates int
	batches           []int
	// beforeInsert, if set, runs before each payload inserted (with ProcessPayloads' context,
	// without the engine's lock); belowSafe counts insertions
	// attempted at or below the safe head (refused).
	beforeInsert func(ctx context.Context, ref eth.L2BlockRef)
	belowSafe    int
	// afterRewind, if set, runs once RewindUnsafeToSafe has reset the heads, before it returns (without the lock):
	// what op-node's event loop does right after a rewind, e.g. derivation inserting the next block.
	afterRewind func()
}

func newFakeEngine(cfg *rollup.Config) *fakeEngine {
	genesis := eth.L2BlockRef{Hash: testkit.Genesis.Hash, L1Origin: cfg.Genesis.L1, Time: cfg.Genesis.L2Time}
	return &fakeEngine{chain: []eth.L2BlockRef{genesis}, roots: map[common.Hash]common.Hash{},
		l1Head: testkit.L1Block(1000, 0), invalid: map[common.Hash]bool{}}
}

func (e *fakeEngine) head() eth.L2BlockRef {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.chain[len(e.chain)-1]
}

// setChain replaces the local chain from block 1 on (as derivation or gossip would).
func (e *fakeEngine) setChain(blocks []testkit.Block) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.chain = e.chain[:1]
	for _, b := range blocks {
		e.chain = append(e.chain, b.Ref)
		e.roots[b.Ref.Hash] = common.Hash(b.Env.ExecutionPayload.StateRoot)
	}
}

func (e *fakeEngine) setSafe(n uint64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.safe = n
}

// ProcessPayloads inserts as the engine controller does: a payload at a time, one forkchoice update at the end.
// beforeInsert runs before each payload without the engine's lock (op-node's status stays readable during a batch).
func (e *fakeEngine) ProcessPayloads(ctx context.Context, envs []*eth.ExecutionPayloadEnvelope, refs []eth.L2BlockRef) (int, error) {
	e.mu.Lock()
	if e.held {
		e.mu.Unlock()
		return 0, engine.ErrUnsafeInputHeld
	}
	e.batches = append(e.batches, len(envs))
	hook := e.beforeInsert
	e.mu.Unlock()
	n := 0
	var err error
	for i := range envs {
		if hook != nil {
			hook(ctx, refs[i])
		}
		if err = ctx.Err(); err != nil {
			break
		}
		e.mu.Lock()
		err = e.insertLocked(envs[i], refs[i])
		e.mu.Unlock()
		if err != nil {
			break
		}
		n++
	}
	if n > 0 {
		e.mu.Lock()
		e.forkchoiceUpdates++
		e.mu.Unlock()
	}
	return n, err
}

// derive inserts b as derivation does: unsafe input held or not.
func (e *fakeEngine) derive(b testkit.Block) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.chain = append(e.chain, b.Ref)
	e.roots[b.Ref.Hash] = common.Hash(b.Env.ExecutionPayload.StateRoot)
}

func (e *fakeEngine) insertLocked(env *eth.ExecutionPayloadEnvelope, ref eth.L2BlockRef) error {
	if e.insertErr != nil {
		return e.insertErr
	}
	if env.ExecutionPayload.ParentHash != e.chain[len(e.chain)-1].Hash {
		return engine.ErrStaleBuild
	}
	if e.invalid[ref.Hash] {
		return engine.ErrPayloadInvalid
	}
	if ref.Number <= e.safe {
		e.belowSafe++
		return fmt.Errorf("test engine: insert at or below safe %d: %s", e.safe, ref.ID())
	}
	e.chain = append(e.chain, ref)
	e.roots[ref.Hash] = common.Hash(env.ExecutionPayload.StateRoot)
	e.inserted++
	return nil
}

func (e *fakeEngine) HoldUnsafeInput(hold bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.held = hold
}

func (e *fakeEngine) RewindUnsafeToSafe(ctx context.Context, rewindEngine func(context.Context, eth.L2BlockRef) error) (eth.L2BlockRef, error) {
	e.mu.Lock()
	e.held = true
	safe := e.chain[e.safe]
	e.mu.Unlock()
	if rewindEngine != nil { // op-geth's own RPCs (this engine, as the L2 chain), which the controller lock does not take
		if err := rewindEngine(ctx, safe); err != nil {
			return e.head(), err // fails closed: op-node's heads stay on the engine's chain
		}
	}
	e.mu.Lock()
	e.rewinds++
	e.chain = e.chain[:e.safe+1]
	head, afterRewind := e.chain[e.safe], e.afterRewind
	e.mu.Unlock()
	if afterRewind != nil {
		afterRewind()
	}
	return head, nil
}

// setHead rewinds the chain to block n, as debug_setHead does to op-geth's (an engineRewinder of this engine).
func (e *fakeEngine) setHead(n uint64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.chain = e.chain[:n+1]
}

func (e *fakeEngine) IsEngineInitialELSyncing() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.elSyncing
}

func (e *fakeEngine) SyncStatus() *eth.SyncStatus {
	e.statusReads.Add(1)
	e.mu.Lock()
	defer e.mu.Unlock()
	return &eth.SyncStatus{
		HeadL1:      e.l1Head,
		SafeL1:      e.l1Safe,
		FinalizedL1: e.l1Final,
		UnsafeL2:    e.chain[len(e.chain)-1],
		SafeL2:      e.chain[min(e.safe, uint64(len(e.chain)-1))],
		FinalizedL2: e.chain[min(e.finalized, uint64(len(e.chain)-1))],
	}
}

func (e *fakeEngine) L2BlockRefByLabel(_ context.Context, label eth.BlockLabel) (eth.L2BlockRef, error) {
	st := e.SyncStatus()
	switch label {
	case eth.Unsafe:
		return st.UnsafeL2, nil
	case eth.Safe:
		return st.SafeL2, nil
	case eth.Finalized:
		return st.FinalizedL2, nil
	}
	return eth.L2BlockRef{}, fmt.Errorf("test engine: unexpected label %s", label)
}

func (e *fakeEngine) L2BlockRefByHash(_ context.Context, hash common.Hash) (eth.L2BlockRef, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, ref := range e.chain {
		if ref.Hash == hash {
			return ref, nil
		}
	}
	return eth.L2BlockRef{}, ethereum.NotFound
}

func (e *fakeEngine) L2BlockRefByNumber(_ context.Context, n uint64) (eth.L2BlockRef, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if n >= uint64(len(e.chain)) {
		return eth.L2BlockRef{}, ethereum.NotFound
	}
	return e.chain[n], nil
}

func (e *fakeEngine) SystemConfigByL2Hash(context.Context, common.Hash) (eth.SystemConfig, error) {
	e.sysCfgReads.Add(1)
	return testkit.SystemConfig, nil
}

func (e *fakeEngine) InfoByLabel(ctx context.Context, label eth.BlockLabel) (eth.BlockInfo, error) {
	ref, err := e.L2BlockRefByLabel(ctx, label)
	if err != nil {
		return nil, err
	}
	return e.InfoByNumber(ctx, ref.Number)
}

func (e *fakeEngine) InfoByNumber(ctx context.Context, n uint64) (eth.BlockInfo, error) {
	ref, err := e.L2BlockRefByNumber(ctx, n)
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return &testutils.MockBlockInfo{InfoHash: ref.Hash, InfoNum: ref.Number, InfoRoot: e.roots[ref.Hash]}, nil
}

// fakeL1 is our L1 view: canonical blocks are fork 0 unless reorged.
type fakeL1 struct {
	mu     sync.Mutex
	reorgs map[uint64]byte // number -> fork now canonical
	err    error
	// deposits are the receipts of L1 blocks with user deposits (none elsewhere).
	deposits map[uint64]optypes.Receipts
}

func (l *fakeL1) L1BlockRefByNumber(_ context.Context, n uint64) (eth.L1BlockRef, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return eth.L1BlockRef{}, l.err
	}
	return testkit.L1Block(n, l.reorgs[n]), nil
}

// InfoByHash serves the header of any L1 block l1Block can make, canonical or not.
func (l *fakeL1) InfoByHash(_ context.Context, hash common.Hash) (eth.BlockInfo, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return nil, l.err
	}
	n := uint64(hash[2])<<8 | uint64(hash[3])
	if ref := testkit.L1Block(n, hash[1]); ref.Hash == hash {
		return testkit.L1Info(ref), nil
	}
	return nil, ethereum.NotFound
}

// FetchReceipts serves L1 blocks without SystemConfig updates, and without deposits unless set.
func (l *fakeL1) FetchReceipts(ctx context.Context, hash common.Hash) (eth.BlockInfo, optypes.Receipts, error) {
	info, err := l.InfoByHash(ctx, hash)
	if err != nil {
		return nil, nil, err
	}
	return info, l.deposits[info.NumberU64()], nil
}

func (l *fakeL1) reorg(from uint64, fork byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.reorgs == nil {
		l.reorgs = map[uint64]byte{}
	}
	for n := from; n < from+1000; n++ {
		l.reorgs[n] = fork
	}
}

// harness is a replicator wired to fakes, on a deterministic clock.
type harness struct {
	t      *testing.T
	cfg    *rollup.Config
	source *testkit.Source
	engine *fakeEngine
	l1     *fakeL1
	clock  *clock.DeterministicClock
	svc    *Service
	rep    *Replicator
	logs   *testlog.CapturingHandler
}

// harnessOption changes what a harness's replicator is built from.
type harnessOption func(h *harness, parts *components, m *Metricer)

// withSource makes the replicator's source src(h) instead of h.source.
func withSource(src func(h *harness) source.Source) harnessOption {
	return func(h *harness, parts *components, _ *Metricer) { parts.source = src(h) }
}

// withStore gives the replicator (and the service) the envelope store store(h).
func withStore(store func(h *harness) *relay.Store) harnessOption {
	return func(h *harness, parts *components, _ *Metricer) { parts.store = store(h) }
}

// plainStore is an envelope store of window heights that drops nothing.
func plainStore(window int) func(*harness) *relay.Store {
	return func(h *harness) *relay.Store { return relay.NewStore(window, log.Root(), nil, relay.NoopMetrics{}) }
}

// withStateFile gives the replicator a state file, restored from as NewService does at start-up.
func withStateFile(path string) harnessOption {
	return func(_ *harness, parts *components, _ *Metricer) { parts.state = &stateFile{path: path} }
}

// withRewinder gives the replicator the rewinder rw(h) of op-geth's own chain.
func withRewinder(rw func(h *harness) rewinder) harnessOption {
	return func(h *harness, parts *components, _ *Metricer) { parts.rewinder = rw(h) }
}

// rewinderFunc is a rewinder of a function.
type rewinderFunc func(ctx context.Context, safe eth.L2BlockRef, engineHead eth.BlockID) error

func (f rewinderFunc) Rewind(ctx context.Context, safe eth.L2BlockRef, engineHead eth.BlockID) error {
	return f(ctx, safe, engineHead)
}

// withMetrics records on m.
func withMetrics(m Metricer) harnessOption {
	return func(_ *harness, _ *components, metrics *Metricer) { *metrics = m }
}

// sharing builds on prev's engine (op-geth keeps its chain), L1, source and clock: prev's node restarted.
func sharing(prev *harness) harnessOption {
	return func(h *harness, parts *components, _ *Metricer) {
		h.source, h.engine, h.l1, h.clock = prev.source, prev.engine, prev.l1, prev.clock
		parts.source = prev.source
	}
}

func newHarness(t *testing.T, policy driverhook.HaltPolicy, blocks []testkit.Block, opts ...harnessOption) *harness {
	cfg := testkit.RollupConfig()
	h := &harness{t: t, cfg: cfg, source: testkit.NewSource(blocks), engine: newFakeEngine(cfg), l1: &fakeL1{},
		clock: clock.NewDeterministicClock(time.Unix(1000, 0))}
	lgr, logs := testlog.CaptureLogger(t, log.LevelDebug)
	h.logs = logs
	parts := components{source: h.source, evidence: relay.NewEvidenceLog()}
	var m Metricer = NoopMetrics{}
	for _, opt := range opts {
		opt(h, &parts, &m)
	}
	rcfg := driverhook.CLIConfig{Enabled: true, Sources: []string{"http://sequencer:8545"}, ReadTimeout: time.Second, PollInterval: time.Second,
		RequestTimeout: time.Second, HaltPolicy: policy, HaltDuration: time.Minute}
	deps := driverhook.Deps{Log: lgr, Rollup: cfg, Engine: h.engine, Status: h.engine, L1: h.l1, L2: h.engine}
	rep, err := newReplicator(rcfg, deps, parts, m, h.clock)
	require.NoError(t, err)
	h.rep = rep
	h.svc = &Service{log: lgr, clock: h.clock, rep: rep, store: parts.store, evidence: parts.evidence}
	return h
}

// round runs one replication round and returns the delay the loop would wait.
func (h *harness) round() time.Duration {
	return h.rep.runRound(context.Background())
}

// reorgL1 replaces our L1 view's blocks from `from` on with fork's, and moves op-node's L1 head onto the fork, as
// op-node does when it sees an L1 reorg.
func (h *harness) reorgL1(from uint64, fork byte) {
	h.l1.reorg(from, fork)
	h.engine.mu.Lock()
	defer h.engine.mu.Unlock()
	h.engine.l1Head = testkit.L1Block(h.engine.l1Head.Number, fork)
}

func (h *harness) requireRunning() {
	h.t.Helper()
	st := h.rep.halt.Status()
	require.Equal(h.t, api.StateRunning, st.State, "halted: %s %s", st.Reason, st.Detail)
}

func (h *harness) requireHalted(reason api.Reason) {
	h.t.Helper()
	st := h.rep.halt.Status()
	require.Equal(h.t, api.StateHalted, st.State)
	require.Equal(h.t, reason, st.Reason, st.Detail)
	require.Equal(h.t, h.engine.safe, h.engine.head().Number, "unsafe head must be rewound to safe")
	require.NotNil(h.t, h.logs.FindLog(testlog.NewLevelFilter(log.LevelError),
		testlog.NewMessageContainsFilter("Replicator halted")), "halt must be logged at error level")
}

// countingMetrics counts the error kinds tests look at.
type countingMetrics struct {
	NoopMetrics
	badSignature, source atomic.Int64
}

func (c *countingMetrics) RecordClientError(err error) { c.RecordError(errorKind(err)) }

func (c *countingMetrics) RecordError(kind ErrKind) {
	switch kind {
	case ErrKindBadSignature:
		c.badSignature.Add(1)
	case ErrKindSource:
		c.source.Add(1)
	}
}

// client serves h's replicator namespace (admin methods included) in process, and returns a client of it: tests
// call the API over the wire, as operators do.
func (h *harness) client() *api.Client {
	srv := rpc.NewServer()
	for _, a := range api.APIs(h.svc, true) {
		require.NoError(h.t, srv.RegisterName(a.Namespace, a.Service))
	}
	c := rpc.DialInProc(srv)
	h.t.Cleanup(func() { c.Close(); srv.Stop() })
	return api.NewClient(c)
}
