package plugin

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/log"
	"github.com/ethereum/go-ethereum/rpc"
	"github.com/stretchr/testify/require"

	opmetrics "github.com/ethereum-optimism/optimism/op-node/metrics"
	"github.com/ethereum-optimism/optimism/op-node/rollup"
	"github.com/ethereum-optimism/optimism/op-node/rollup/derive"
	"github.com/ethereum-optimism/optimism/op-node/rollup/engine"
	"github.com/ethereum-optimism/optimism/op-node/rollup/status"
	opsync "github.com/ethereum-optimism/optimism/op-node/rollup/sync"
	"github.com/ethereum-optimism/optimism/op-service/clock"
	"github.com/ethereum-optimism/optimism/op-service/eth"
	"github.com/ethereum-optimism/optimism/op-service/event"
	"github.com/ethereum-optimism/optimism/op-service/testlog"
	"github.com/ethereum-optimism/optimism/op-service/testutils"

	"github.com/op-replicator/op-replicator/driverhook"
	"github.com/op-replicator/op-replicator/plugin/api"
	"github.com/op-replicator/op-replicator/plugin/internal/testkit"
	"github.com/op-replicator/op-replicator/plugin/relay"
)

// The real-engine harness: the replicator drives op-node's own engine controller (engine.EngineController, the
// patched tree), on op-node's event system drained by a goroutine that plays the driver's event loop, with op-node's
// status tracker (status.StatusTracker) registered on it, as driver.NewDriver wires them. Only the execution engine
// behind the controller is fake (fakeEL): op-geth's engine API over the blocks of testkit's chain, without executing
// them. Derivation is not run; what it does to the engine is done through the controller's own entry points, on the
// loop, as the attributes handler does it: consolidation (TryUpdatePendingSafe, TryUpdateLocalSafe) and building a
// block from L1 (a BuildStartEvent, which the controller takes through the EL's build, seal and insertion). Gossip
// goes through the controller's unsafe-payload queue (AddUnsafePayload). The replicator is given the event system as
// Deps.Events: its watcher observes the controller's events there, and its halt's rewind runs on the loop, from its
// own deriver (loopRewinder), as in op-node.

// elBlock is a block the fake execution engine holds.
type elBlock struct {
	ref  eth.L2BlockRef
	root common.Hash
}

// fakeEL is the execution engine behind the engine controller (engine.ExecEngine) and, read-only, the replicator's
// L2 chain (driverhook.L2Chain, op-node's engine client). It answers as op-geth does, without executing: NewPayload
// is VALID on a known parent (SYNCING on an unknown one, INVALID for the blocks in invalid); a forkchoice update
// makes its head canonical, but leaves the head alone when it names a canonical ancestor of it (op-geth then changes
// nothing; debug_setHead, setHead here, rewinds it); a forkchoice update with attributes starts the build of the
// block set by willBuild on that parent, which GetPayload returns.
type fakeEL struct {
	cfg *rollup.Config
	// ec is the controller it serves. The controller calls the engine with its lock held, so NewPayload may read
	// the controller's safe head.
	ec *engine.EngineController

	mu        sync.Mutex
	known     map[common.Hash]elBlock // every block it holds, canonical or not
	canon     []common.Hash           // canon[n] is canonical block n
	safe      common.Hash
	finalized common.Hash
	invalid   map[common.Hash]bool
	down      error                                         // every NewPayload fails with it (the engine API not reachable)
	toBuild   map[common.Hash]*eth.ExecutionPayloadEnvelope // by parent hash: what a build on that parent seals
	builds    map[eth.PayloadID]*eth.ExecutionPayloadEnvelope

	// newPayloads is every block given to NewPayload, in order; fcus every forkchoice update's state; belowSafe the
	// blocks given to NewPayload at or below the controller's safe head.
	newPayloads []eth.L2BlockRef
	fcus        []eth.ForkchoiceState
	belowSafe   []eth.BlockID
	// onNewPayload, if set, runs at each NewPayload before anything else, without the EL's lock (the controller's
	// is held).
	onNewPayload func(ref eth.L2BlockRef)
}

func newFakeEL(cfg *rollup.Config) *fakeEL {
	genesis := eth.L2BlockRef{Hash: testkit.Genesis.Hash, L1Origin: cfg.Genesis.L1, Time: cfg.Genesis.L2Time}
	return &fakeEL{cfg: cfg, known: map[common.Hash]elBlock{genesis.Hash: {ref: genesis}}, canon: []common.Hash{genesis.Hash},
		safe: genesis.Hash, finalized: genesis.Hash, invalid: map[common.Hash]bool{},
		toBuild: map[common.Hash]*eth.ExecutionPayloadEnvelope{}, builds: map[eth.PayloadID]*eth.ExecutionPayloadEnvelope{}}
}

var _ engine.ExecEngine = (*fakeEL)(nil)
var _ driverhook.L2Chain = (*fakeEL)(nil)

// seed makes blocks the canonical chain from block 1 on, as a node that synced them before.
func (el *fakeEL) seed(blocks []testkit.Block) {
	el.mu.Lock()
	defer el.mu.Unlock()
	el.canon = el.canon[:1]
	for _, b := range blocks {
		el.known[b.Ref.Hash] = elBlock{ref: b.Ref, root: common.Hash(b.Env.ExecutionPayload.StateRoot)}
		el.canon = append(el.canon, b.Ref.Hash)
	}
}

// setHead rewinds the canonical chain to block n and forgets the blocks above it, as debug_setHead does.
func (el *fakeEL) setHead(n uint64) {
	el.mu.Lock()
	defer el.mu.Unlock()
	for _, h := range el.canon[n+1:] {
		delete(el.known, h)
	}
	el.canon = el.canon[:n+1]
}

// willBuild has the next build on env's parent seal env: the block derivation builds there.
func (el *fakeEL) willBuild(env *eth.ExecutionPayloadEnvelope) {
	el.mu.Lock()
	defer el.mu.Unlock()
	el.toBuild[env.ExecutionPayload.ParentHash] = env
}

func (el *fakeEL) setInvalid(hash common.Hash) {
	el.mu.Lock()
	defer el.mu.Unlock()
	el.invalid[hash] = true
}

func (el *fakeEL) setDown(err error) {
	el.mu.Lock()
	defer el.mu.Unlock()
	el.down = err
}

func (el *fakeEL) setOnNewPayload(f func(ref eth.L2BlockRef)) {
	el.mu.Lock()
	defer el.mu.Unlock()
	el.onNewPayload = f
}

func (el *fakeEL) head() eth.L2BlockRef {
	el.mu.Lock()
	defer el.mu.Unlock()
	return el.known[el.canon[len(el.canon)-1]].ref
}

// chain is the canonical chain from block 1 on.
func (el *fakeEL) chain() []eth.L2BlockRef {
	el.mu.Lock()
	defer el.mu.Unlock()
	out := make([]eth.L2BlockRef, 0, len(el.canon)-1)
	for _, h := range el.canon[1:] {
		out = append(out, el.known[h].ref)
	}
	return out
}

// inserted is every block given to NewPayload from the i-th call on.
func (el *fakeEL) inserted(from int) []eth.L2BlockRef {
	el.mu.Lock()
	defer el.mu.Unlock()
	return append([]eth.L2BlockRef(nil), el.newPayloads[from:]...)
}

func (el *fakeEL) newPayloadCount() int {
	el.mu.Lock()
	defer el.mu.Unlock()
	return len(el.newPayloads)
}

// forkchoiceUpdates is every forkchoice update's state from the i-th on.
func (el *fakeEL) forkchoiceUpdates(from int) []eth.ForkchoiceState {
	el.mu.Lock()
	defer el.mu.Unlock()
	return append([]eth.ForkchoiceState(nil), el.fcus[from:]...)
}

func (el *fakeEL) fcuCount() int {
	el.mu.Lock()
	defer el.mu.Unlock()
	return len(el.fcus)
}

func (el *fakeEL) insertedAtOrBelowSafe() []eth.BlockID {
	el.mu.Lock()
	defer el.mu.Unlock()
	return append([]eth.BlockID(nil), el.belowSafe...)
}

func (el *fakeEL) NewPayload(_ context.Context, payload *eth.ExecutionPayload, _ *common.Hash) (*eth.PayloadStatusV1, error) {
	ref, err := derive.PayloadToBlockRef(el.cfg, payload)
	if err != nil {
		return nil, fmt.Errorf("fake EL: %w", err)
	}
	el.mu.Lock()
	hook := el.onNewPayload
	el.mu.Unlock()
	if hook != nil {
		hook(ref)
	}
	safe := el.ec.SafeL2Head() // the controller holds its lock while it calls the engine
	el.mu.Lock()
	defer el.mu.Unlock()
	if el.down != nil {
		return nil, el.down
	}
	el.newPayloads = append(el.newPayloads, ref)
	if ref.Number <= safe.Number {
		el.belowSafe = append(el.belowSafe, ref.ID())
	}
	if el.invalid[ref.Hash] {
		parent := payload.ParentHash
		return &eth.PayloadStatusV1{Status: eth.ExecutionInvalid, LatestValidHash: &parent}, nil
	}
	if _, ok := el.known[payload.ParentHash]; !ok {
		return &eth.PayloadStatusV1{Status: eth.ExecutionSyncing}, nil
	}
	el.known[ref.Hash] = elBlock{ref: ref, root: common.Hash(payload.StateRoot)}
	hash := ref.Hash
	return &eth.PayloadStatusV1{Status: eth.ExecutionValid, LatestValidHash: &hash}, nil
}

func (el *fakeEL) ForkchoiceUpdate(_ context.Context, fc *eth.ForkchoiceState, attr *eth.PayloadAttributes) (*eth.ForkchoiceUpdatedResult, error) {
	el.mu.Lock()
	defer el.mu.Unlock()
	el.fcus = append(el.fcus, *fc)
	head, ok := el.known[fc.HeadBlockHash]
	if !ok {
		return &eth.ForkchoiceUpdatedResult{PayloadStatus: eth.PayloadStatusV1{Status: eth.ExecutionSyncing}}, nil
	}
	if !el.canonicalLocked(head.ref) {
		el.reorgLocked(head.ref)
	}
	if _, ok := el.known[fc.SafeBlockHash]; ok {
		el.safe = fc.SafeBlockHash
	}
	if _, ok := el.known[fc.FinalizedBlockHash]; ok {
		el.finalized = fc.FinalizedBlockHash
	}
	res := &eth.ForkchoiceUpdatedResult{PayloadStatus: eth.PayloadStatusV1{Status: eth.ExecutionValid, LatestValidHash: &head.ref.Hash}}
	if attr != nil {
		env := el.toBuild[head.ref.Hash]
		if env == nil || uint64(env.ExecutionPayload.Timestamp) != uint64(attr.Timestamp) {
			return nil, fmt.Errorf("fake EL: no block to build on %s at time %d", head.ref.ID(), attr.Timestamp)
		}
		id := eth.PayloadID{byte(len(el.builds) + 1)}
		el.builds[id] = env
		res.PayloadID = &id
	}
	return res, nil
}

func (el *fakeEL) GetPayload(_ context.Context, info eth.PayloadInfo) (*eth.ExecutionPayloadEnvelope, error) {
	el.mu.Lock()
	defer el.mu.Unlock()
	env, ok := el.builds[info.ID]
	if !ok {
		return nil, fmt.Errorf("fake EL: unknown payload %s", info.ID)
	}
	return env, nil
}

func (el *fakeEL) canonicalLocked(ref eth.L2BlockRef) bool {
	return ref.Number < uint64(len(el.canon)) && el.canon[ref.Number] == ref.Hash
}

// reorgLocked makes ref the head: its ancestors down to the canonical chain replace the canonical blocks above it.
func (el *fakeEL) reorgLocked(ref eth.L2BlockRef) {
	var branch []common.Hash
	for cur := ref; !el.canonicalLocked(cur); cur = el.known[cur.ParentHash].ref {
		branch = append(branch, cur.Hash)
	}
	el.canon = el.canon[:ref.Number+1-uint64(len(branch))]
	for i := len(branch) - 1; i >= 0; i-- {
		el.canon = append(el.canon, branch[i])
	}
}

func (el *fakeEL) L2BlockRefByLabel(_ context.Context, label eth.BlockLabel) (eth.L2BlockRef, error) {
	el.mu.Lock()
	defer el.mu.Unlock()
	switch label {
	case eth.Unsafe:
		return el.known[el.canon[len(el.canon)-1]].ref, nil
	case eth.Safe:
		return el.known[el.safe].ref, nil
	case eth.Finalized:
		return el.known[el.finalized].ref, nil
	}
	return eth.L2BlockRef{}, fmt.Errorf("fake EL: unexpected label %s", label)
}

func (el *fakeEL) L2BlockRefByNumber(_ context.Context, n uint64) (eth.L2BlockRef, error) {
	el.mu.Lock()
	defer el.mu.Unlock()
	if n >= uint64(len(el.canon)) {
		return eth.L2BlockRef{}, ethereum.NotFound
	}
	return el.known[el.canon[n]].ref, nil
}

func (el *fakeEL) L2BlockRefByHash(_ context.Context, hash common.Hash) (eth.L2BlockRef, error) {
	el.mu.Lock()
	defer el.mu.Unlock()
	b, ok := el.known[hash]
	if !ok {
		return eth.L2BlockRef{}, ethereum.NotFound
	}
	return b.ref, nil
}

func (el *fakeEL) InfoByNumber(ctx context.Context, n uint64) (eth.BlockInfo, error) {
	ref, err := el.L2BlockRefByNumber(ctx, n)
	if err != nil {
		return nil, err
	}
	el.mu.Lock()
	defer el.mu.Unlock()
	return &testutils.MockBlockInfo{InfoHash: ref.Hash, InfoParentHash: ref.ParentHash, InfoNum: ref.Number,
		InfoTime: ref.Time, InfoRoot: el.known[ref.Hash].root}, nil
}

func (el *fakeEL) InfoByLabel(ctx context.Context, label eth.BlockLabel) (eth.BlockInfo, error) {
	ref, err := el.L2BlockRefByLabel(ctx, label)
	if err != nil {
		return nil, err
	}
	return el.InfoByNumber(ctx, ref.Number)
}

func (el *fakeEL) SystemConfigByL2Hash(context.Context, common.Hash) (eth.SystemConfig, error) {
	return testkit.SystemConfig, nil
}

// opNodeLoop is op-node's driver event loop (driver.Driver.eventLoop) as far as the engine controller needs one:
// op-node's event system on its global synchronous executor, drained on a goroutine of its own whenever events are
// queued, and the calls the driver runs on that loop (do).
type opNodeLoop struct {
	sys   *event.Sys
	exec  *event.GlobalSyncExec
	calls chan loopCall
	done  chan struct{}
}

type loopCall struct {
	f    func()
	done chan struct{}
}

func startOpNodeLoop(t *testing.T, lgr log.Logger) *opNodeLoop {
	ctx, cancel := context.WithCancel(context.Background())
	exec := event.NewGlobalSynchronous(ctx)
	l := &opNodeLoop{sys: event.NewSystem(lgr, exec), exec: exec, calls: make(chan loopCall), done: make(chan struct{})}
	go l.run(ctx)
	t.Cleanup(func() {
		cancel()
		<-l.done
		l.sys.Stop()
	})
	return l
}

func (l *opNodeLoop) run(ctx context.Context) {
	defer close(l.done)
	for {
		select {
		case <-ctx.Done():
			return
		case c := <-l.calls:
			// As the driver serves its requests: the events queued before run first, then the call, then the
			// events it emitted, before it answers. (Drain fails only once the loop stops.)
			_ = l.exec.Drain()
			c.f()
			_ = l.exec.Drain()
			close(c.done)
		case <-l.exec.Await():
			if err := l.exec.Drain(); err != nil {
				return
			}
		}
	}
}

// do runs f on the loop, once the events queued before are processed, and returns once the events f emitted are
// processed too; false if ctx ended or the loop stopped first (f may then still run).
func (l *opNodeLoop) do(ctx context.Context, f func()) bool {
	c := loopCall{f: f, done: make(chan struct{})}
	select {
	case l.calls <- c:
	case <-ctx.Done():
		return false
	case <-l.done:
		return false
	}
	select {
	case <-c.done:
		return true
	case <-ctx.Done():
		return false
	case <-l.done:
		return false
	}
}

// batchCall is a ProcessPayloads call the replicator made: how many blocks it was given, how many the controller
// inserted, and why it stopped.
type batchCall struct {
	size, inserted int
	err            error
	refs           []eth.L2BlockRef
}

// nodeEngine is the engine controller as op-node's node.go hands it to the replicator (Deps.Engine): the controller
// itself. It records the replicator's batches, and runs beforeBatch, if set, before a batch goes to the controller.
type nodeEngine struct {
	*engine.EngineController

	mu          sync.Mutex
	batches     []batchCall
	inFlight    int // the size of the batch in the controller, if any
	beforeBatch func(refs []eth.L2BlockRef)
}

var _ driverhook.Engine = (*nodeEngine)(nil)

func (e *nodeEngine) ProcessPayloads(ctx context.Context, envs []*eth.ExecutionPayloadEnvelope, refs []eth.L2BlockRef) (int, error) {
	e.mu.Lock()
	hook := e.beforeBatch
	e.mu.Unlock()
	if hook != nil {
		hook(refs)
	}
	e.mu.Lock()
	e.inFlight = len(envs)
	e.mu.Unlock()
	n, err := e.EngineController.ProcessPayloads(ctx, envs, refs)
	e.mu.Lock()
	defer e.mu.Unlock()
	e.inFlight = 0
	e.batches = append(e.batches, batchCall{size: len(envs), inserted: n, err: err, refs: refs})
	return n, err
}

func (e *nodeEngine) setBeforeBatch(f func(refs []eth.L2BlockRef)) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.beforeBatch = f
}

// pending is the size of the batch in the controller (0: none).
func (e *nodeEngine) pending() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.inFlight
}

func (e *nodeEngine) calls() []batchCall {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]batchCall(nil), e.batches...)
}

// elRewinder rewinds the fake EL with debug_setHead, as engineRewinder rewinds this node's op-geth; failWith makes
// it fail.
type elRewinder struct {
	el *fakeEL

	mu          sync.Mutex
	failWith    error
	engineHeads []eth.BlockID
	safes       []eth.L2BlockRef
	offLoop     int  // rewinds not run on op-node's event loop
	other       bool // it rewinds another node: the EL is left alone
}

func (r *elRewinder) Rewind(_ context.Context, safe eth.L2BlockRef, engineHead eth.BlockID) error {
	buf := make([]byte, 64<<10)
	onLoop := bytes.Contains(buf[:runtime.Stack(buf, false)], []byte("(*opNodeLoop).run"))
	r.mu.Lock()
	r.engineHeads = append(r.engineHeads, engineHead)
	r.safes = append(r.safes, safe)
	if !onLoop {
		r.offLoop++
	}
	fail, other := r.failWith, r.other
	r.mu.Unlock()
	if fail != nil {
		return fail
	}
	if other {
		return nil
	}
	r.el.setHead(safe.Number)
	return nil
}

// otherNode makes the rewinder rewind another node than the EL (a --replicator.l2.rpc that names another op-geth).
func (r *elRewinder) otherNode() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.other = true
}

func (r *elRewinder) fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failWith = err
}

func (r *elRewinder) calls() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.engineHeads)
}

// requireCalls requires the rewinder to have been called with these engine heads and safe heads, each time on
// op-node's event loop (under the controller's lock, from the replicator's deriver).
func (r *elRewinder) requireCalls(t *testing.T, engineHeads []eth.BlockID, safes []eth.L2BlockRef) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	require.Equal(t, engineHeads, r.engineHeads, "the EL's heads the rewinder was given")
	require.Equal(t, safes, r.safes, "the safe heads the rewinder was given")
	require.Zero(t, r.offLoop, "a rewind not run on op-node's event loop")
}

// requireSafes requires the rewinder to have been called with these safe heads, each time on op-node's event loop.
func (r *elRewinder) requireSafes(t *testing.T, safes []eth.L2BlockRef) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	require.Equal(t, safes, r.safes, "the safe heads the rewinder was given")
	require.Zero(t, r.offLoop, "a rewind not run on op-node's event loop")
}

// realHarness is a replicator driving op-node's engine controller, on a deterministic clock.
type realHarness struct {
	t        *testing.T
	cfg      *rollup.Config
	el       *fakeEL
	loop     *opNodeLoop
	ec       *engine.EngineController
	engine   *nodeEngine
	tracker  *status.StatusTracker
	derivEm  event.Emitter // derivation's emitter: its builds from L1
	source   *testkit.Source
	l1       *fakeL1
	clock    *clock.DeterministicClock
	rewinder *elRewinder
	rep      *Replicator
	svc      *Service
	logs     *testlog.CapturingHandler
	// safe is the controller's local safe head, as the harness set it (start, consolidate, derive).
	safe eth.L2BlockRef
}

// newRealHarness builds the controller on the fake EL, starting at the genesis (safe and unsafe), and the replicator
// on it; startAt moves the start.
func newRealHarness(t *testing.T, policy driverhook.HaltPolicy, blocks []testkit.Block) *realHarness {
	cfg := testkit.RollupConfig()
	opLog := testlog.Logger(t, log.LevelInfo).New("role", "op-node")
	h := &realHarness{t: t, cfg: cfg, el: newFakeEL(cfg), source: testkit.NewSource(blocks), l1: &fakeL1{},
		clock: clock.NewDeterministicClock(time.Unix(1000, 0))}
	h.loop = startOpNodeLoop(t, opLog)
	// As driver.NewDriver wires them.
	h.tracker = status.NewStatusTracker(opLog, opmetrics.NoopMetrics)
	h.loop.sys.Register("status", h.tracker)
	h.ec = engine.NewEngineController(context.Background(), h.el, opLog, opmetrics.NoopMetrics, cfg,
		&opsync.Config{SyncMode: opsync.CLSync}, &testutils.MockL1Source{}, h.loop.sys.Register("engine-controller", nil), nil)
	h.ec.SetCrossUpdateHandler(h.tracker)
	h.el.ec = h.ec
	h.loop.sys.Register("engine", h.ec)
	h.derivEm = h.loop.sys.Register("derivation", nil)
	h.engine = &nodeEngine{EngineController: h.ec}
	h.rewinder = &elRewinder{el: h.el}

	lgr, logs := testlog.CaptureLogger(t, log.LevelDebug)
	h.logs = logs
	parts := components{source: h.source, evidence: relay.NewEvidenceLog(), rewinder: h.rewinder}
	rcfg := driverhook.CLIConfig{Enabled: true, Sources: []string{"http://sequencer:8545"}, ReadTimeout: time.Second,
		PollInterval: time.Second, RequestTimeout: time.Second, HaltPolicy: policy, HaltDuration: time.Minute}
	deps := driverhook.Deps{Log: lgr, Rollup: cfg, Engine: h.engine, Status: h.tracker, L1: h.l1, L2: h.el,
		Events: h.loop.sys}
	rep, err := newReplicator(rcfg, deps, parts, NoopMetrics{}, h.clock)
	require.NoError(t, err)
	h.rep = rep
	h.svc = &Service{log: lgr, clock: h.clock, rep: rep, store: parts.store, evidence: parts.evidence}

	genesis := h.el.head()
	h.onLoop(func() { h.tracker.OnL1Unsafe(testkit.L1Block(1000, 0)) })
	h.reset(genesis, genesis)
	return h
}

// startAt makes blocks the EL's chain (a node that synced them before) and resets the controller onto it, the safe
// head at block safe, as op-node finds its heads at start-up.
func (h *realHarness) startAt(blocks []testkit.Block, safe uint64) {
	h.el.seed(blocks)
	unsafe := h.el.head()
	safeRef, err := h.el.L2BlockRefByNumber(context.Background(), safe)
	require.NoError(h.t, err)
	h.reset(unsafe, safeRef)
}

func (h *realHarness) reset(unsafe, safe eth.L2BlockRef) {
	genesis, err := h.el.L2BlockRefByNumber(context.Background(), 0)
	require.NoError(h.t, err)
	h.onLoop(func() { h.ec.ForceReset(context.Background(), unsafe, safe, safe, genesis) })
	h.safe = safe
	require.Equal(h.t, unsafe, h.tracker.SyncStatus().UnsafeL2)
	require.Equal(h.t, safe, h.tracker.SyncStatus().SafeL2)
}

// onLoop runs f on op-node's event loop, after the events queued so far, and returns once the events it emitted
// are processed.
func (h *realHarness) onLoop(f func()) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.True(h.t, h.loop.do(ctx, f), "op-node's event loop did not run the call")
}

// settle waits until op-node's event loop has processed the events queued so far.
func (h *realHarness) settle() { h.onLoop(func() {}) }

// unsafeHead is the controller's own unsafe head, read on the loop (the controller reads it unlocked too). Not while
// a round runs.
func (h *realHarness) unsafeHead() eth.L2BlockRef {
	var head eth.L2BlockRef
	h.onLoop(func() { head = h.ec.UnsafeL2Head() })
	return head
}

// consolidate has derivation consolidate the unsafe chain up to block n, a block at a time, as the attributes
// handler does on the loop when the block it derived matches the unsafe one (pending safe, then local safe).
func (h *realHarness) consolidate(n uint64) {
	var err error
	h.onLoop(func() { err = h.consolidateOnLoop(n) })
	require.NoError(h.t, err)
}

// consolidateOnLoop is consolidate, run on the loop.
func (h *realHarness) consolidateOnLoop(n uint64) error {
	// A call that takes the controller's lock, as the attributes handler's calls do: it waits for a batch in flight,
	// whose blocks the EL makes canonical at its end.
	_ = h.ec.IsEngineInitialELSyncing()
	for i := h.safe.Number + 1; i <= n; i++ {
		ref, err := h.el.L2BlockRefByNumber(context.Background(), i)
		if err != nil {
			return fmt.Errorf("consolidating block %d: %w", i, err)
		}
		from := testkit.L1Block(ref.L1Origin.Number+1, 0)
		h.ec.TryUpdatePendingSafe(context.Background(), ref, true, from)
		h.ec.TryUpdateLocalSafe(context.Background(), ref, true, from)
		h.safe = ref
	}
	return nil
}

// derive has derivation build b from L1 on its parent, as the attributes handler does when the unsafe chain has no
// block to consolidate (or one that does not match): a BuildStartEvent, which the controller takes through the EL's
// build, the seal and the insertion, and which makes b the unsafe and the local safe head.
func (h *realHarness) derive(b testkit.Block) {
	parent, err := h.el.L2BlockRefByHash(context.Background(), b.Ref.ParentHash)
	require.NoError(h.t, err)
	h.onLoop(func() { h.deriveOnLoop(parent, b) })
	require.Equal(h.t, b.Ref, h.unsafeHead(), "derivation's block was not inserted")
}

// deriveOnLoop is derive, run on the loop.
func (h *realHarness) deriveOnLoop(parent eth.L2BlockRef, b testkit.Block) {
	h.el.willBuild(b.Env)
	h.derivEm.Emit(context.Background(), engine.BuildStartEvent{Attributes: &derive.AttributesWithParent{
		Attributes: &eth.PayloadAttributes{Timestamp: b.Env.ExecutionPayload.Timestamp, NoTxPool: true,
			GasLimit: &b.Env.ExecutionPayload.GasLimit},
		Parent: parent, Concluding: true, DerivedFrom: testkit.L1Block(b.Ref.L1Origin.Number+1, 0)}})
	h.safe = b.Ref
}

// gossip hands env to op-node as P2P gossip does (the controller's unsafe-payload queue, taken on the loop) and
// waits until the loop has processed it.
func (h *realHarness) gossip(env *eth.ExecutionPayloadEnvelope) {
	h.ec.AddUnsafePayload(context.Background(), env)
	h.settle()
}

func (h *realHarness) round() time.Duration {
	return h.rep.runRound(context.Background())
}

func (h *realHarness) requireRunning() {
	h.t.Helper()
	st := h.rep.halt.Status()
	require.Equal(h.t, api.StateRunning, st.State, "halted: %s %s", st.Reason, st.Detail)
}

// requireHeads requires op-node's unsafe head (the controller's, the status tracker's) and the EL's head to be ref.
func (h *realHarness) requireHeads(ref eth.L2BlockRef, msg string) {
	h.t.Helper()
	require.Equal(h.t, ref, h.tracker.SyncStatus().UnsafeL2, "SyncStatus' unsafe head: %s", msg) // before the loop is asked
	require.Equal(h.t, ref, h.unsafeHead(), "the controller's unsafe head: %s", msg)
	require.Equal(h.t, ref, h.el.head(), "the EL's head: %s", msg)
}

// requireHalted requires a halt for reason that rewound op-node's and the EL's heads to the safe head.
func (h *realHarness) requireHalted(reason api.Reason) {
	h.t.Helper()
	st := h.rep.halt.Status()
	require.Equal(h.t, api.StateHalted, st.State)
	require.Equal(h.t, reason, st.Reason, st.Detail)
	require.Equal(h.t, h.safe, h.tracker.SyncStatus().SafeL2)
	h.requireHeads(h.safe, "not rewound to the safe head")
	require.NotNil(h.t, h.logs.FindLog(testlog.NewLevelFilter(log.LevelError),
		testlog.NewMessageContainsFilter("Replicator halted")), "halt must be logged at error level")
}

// requireChain requires the EL's canonical chain to be blocks.
func (h *realHarness) requireChain(blocks []testkit.Block) {
	h.t.Helper()
	chain := h.el.chain()
	require.Len(h.t, chain, len(blocks))
	for i, b := range blocks {
		require.Equal(h.t, b.Ref, chain[i], "block %d", i+1)
	}
}

// requireNothingAtOrBelowSafe requires that no block went to the EL at or below the controller's safe head.
func (h *realHarness) requireNothingAtOrBelowSafe() {
	h.t.Helper()
	require.Empty(h.t, h.el.insertedAtOrBelowSafe(), "blocks inserted at or below the safe head")
}

// catchUp runs rounds until the EL's head is block n, each round leaving the replicator running.
func (h *realHarness) catchUp(n uint64) {
	h.t.Helper()
	for i := 0; h.el.head().Number < n; i++ {
		require.Less(h.t, i, 100, "no progress: the EL's head is %s", h.el.head().ID())
		h.round()
		h.requireRunning()
	}
}

// client serves h's replicator namespace (admin methods included) in process, and returns a client of it.
func (h *realHarness) client() *api.Client {
	srv := rpc.NewServer()
	for _, a := range api.APIs(h.svc, true) {
		require.NoError(h.t, srv.RegisterName(a.Namespace, a.Service))
	}
	c := rpc.DialInProc(srv)
	h.t.Cleanup(func() { c.Close(); srv.Stop() })
	return api.NewClient(c)
}

// numbers are the numbers of refs.
func numbers(refs []eth.L2BlockRef) []uint64 {
	out := make([]uint64, len(refs))
	for i, r := range refs {
		out[i] = r.Number
	}
	return out
}

// span is the numbers from..to.
func span(from, to uint64) []uint64 {
	var out []uint64
	for n := from; n <= to; n++ {
		out = append(out, n)
	}
	return out
}
