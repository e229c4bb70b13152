//go:build soak

package e2e

import (
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/rpc"

	"github.com/ethereum-optimism/optimism/op-service/eth"

	"github.com/op-replicator/op-replicator/e2e/devnet"
	"github.com/op-replicator/op-replicator/e2e/dsl"
	"github.com/op-replicator/op-replicator/plugin/api"
)

// The soak (make soak): a devnet under transaction load for OP_REPLICATOR_SOAK_DURATION, with faults injected on a
// schedule, invariants checked every second, and the replicator op-node's resources sampled. docs/soak.md describes
// it; soak_report_test.go prints what it saw.

const (
	soakDurationEnv     = "OP_REPLICATOR_SOAK_DURATION"
	soakReportEnv       = "OP_REPLICATOR_SOAK_REPORT"
	defaultSoakDuration = 30 * time.Minute

	// soakCheckPeriod is how often the invariants are checked and the replicator's resources sampled.
	soakCheckPeriod = time.Second
	// soakQuiet is the pause after a fault has been recovered from: the chain runs undisturbed, the checks go on.
	soakQuiet = 4 * time.Second
	// soakRecoveryTimeout bounds how long a replicator may take to replicate the sequencer's head after a fault.
	soakRecoveryTimeout = time.Minute
	// soakEffectTimeout bounds how long a fault may take to have its effect (a halt, a relay's blocks refused).
	soakEffectTimeout = 45 * time.Second
	// soakRelayReadTimeout is the replicator's --replicator.read-timeout. The hostile relay is silent between its
	// faults; with the default (12 s) the replicator would reconnect to it, with a growing backoff, the whole soak
	// long, and a misbehaviour could fall into the backoff. A long timeout keeps the subscription up.
	soakRelayReadTimeout = time.Hour
	// soakDowntime is how long a process restarted by a fault stays down, as a supervisor would take to restart it.
	soakDowntime = 5 * time.Second
	// soakHaltHeld is how long a halt is held before the soak resumes the replicator: long enough for the checks
	// to see, several times over, that op-geth serves only derived blocks meanwhile.
	soakHaltHeld = 10 * time.Second
	// soakGapContext is how many blocks before a fault the no-gap check starts at.
	soakGapContext = 32
	// replayedBlocks is how many old signed blocks the hostile relay replays each time, besides a conflicting pair.
	replayedBlocks = 200
	// oversizedPadding is the junk transaction that makes the hostile relay's oversized block: hex-encoded, its
	// message is about 48 MiB, above the 32 MiB a replicator reads of one websocket message.
	oversizedPadding = 24 << 20
)

// TestSoak runs the soak. See docs/soak.md.
func TestSoak(t *testing.T) {
	duration := defaultSoakDuration
	if v := os.Getenv(soakDurationEnv); v != "" {
		var err error
		duration, err = time.ParseDuration(v)
		require.NoError(t, err, "%s=%q", soakDurationEnv, v)
	}
	s := startSoak(t)
	defer s.report(duration)
	stopChecks := s.startChecks()
	defer stopChecks() // before the report, also when the soak stops early: nothing may check after the test
	s.run(duration)
	stopChecks()
	require.Zero(t, s.violationCount(), "invariant violations: see the report")
}

// soak is one soak run: the devnet, its nodes, and what was seen.
type soak struct {
	t *testing.T
	d *devnet.Devnet
	// seq is the sequencer's op-geth, the reference chain.
	seq *devnet.EL
	// rep is the replicator under test: its source is the sequencer's op-geth behind proxy, and hostile, a relay
	// that is silent except for its faults. It runs the whole soak (its resources are sampled); its op-geth is
	// restarted under it.
	rep     *devnet.Node
	proxy   *devnet.Proxy
	hostile *fakeRelay
	// sentry is a gossip follower serving a relay: a public relay, restarted by relay churn and attacked by the
	// hostile client.
	sentry     *devnet.Node
	sentryPort int
	// down is a downstream replicator following the sentry's relay and the sequencer's: its op-node is killed.
	down *devnet.Node
	txs  *devnet.TxGen

	forger        *ecdsa.PrivateKey // signs the hostile relay's forged blocks
	oversized     any               // the hostile relay's oversized block, built once
	oversizedSize int
	startHead     uint64
	started       time.Time

	mu         sync.Mutex
	fault      *soakFault // the fault in progress, nil between faults
	injected   map[string]*faultStats
	halts      []haltRecord
	seenHalts  map[string]bool // node + since
	violations []violation
	checks     map[string]int
	resources  []resourceSample
	traffic    []string // what the hostile relay and client sent, one line each
}

// soakFault is one fault of the schedule.
type soakFault struct {
	name   string
	target *devnet.Node
	// expectHalt is the halt reason the fault causes on target, if it causes one. The soak resumes every halted
	// replicator after each fault; a halt nobody expects is a violation.
	expectHalt api.Reason
	// inject injects the fault and ends it, returning once it has had its effect.
	inject func()
}

type faultStats struct {
	target       string
	count        int
	longest      time.Duration // of the fault itself
	slowestRecov time.Duration // from the end of the fault to every replicator at the sequencer's head again
}

type haltRecord struct {
	node, reason, detail, fault string
	since                       time.Time
	expected                    bool
}

type violation struct {
	invariant, detail string
	at                time.Time
}

type resourceSample struct {
	at         time.Time
	rss        uint64
	goroutines float64
	fds        int
}

// Invariants, as the report names them.
const (
	invSafeNeverRewritten = "no block at or below safe ever rewritten"
	invHaltHeld           = "while halted, op-geth's latest is a derived block"
	invNoGap              = "after every recovery, no gap"
	invHaltsExpected      = "halts only where a fault causes one"
)

func startSoak(t *testing.T) *soak {
	seqRelay := dsl.FreePort(t)
	sys := dsl.Start(t, devnet.Config{SequencerArgs: dsl.RelayArgs(seqRelay)})
	d := sys.Net
	s := &soak{
		t: t, d: d, seq: d.Sequencer.EL,
		forger:    mustKey(t),
		injected:  make(map[string]*faultStats),
		seenHalts: make(map[string]bool),
		checks:    make(map[string]int),
	}
	s.txs = sys.StartTxLoad(sys.Sequencer.EL)
	s.proxy = sys.NewProxy(s.seq.HTTP)
	s.hostile = startFakeRelay(t, d.L2.Rollup, s.seq.HTTP, s.forger)
	s.hostile.set(func(f *fakeRelay) { f.silent = true })
	rep := sys.AddReplicator("replicator", devnet.WithSource(s.proxy.URL+","+s.hostile.URL),
		devnet.WithHaltPolicy("manual"), devnet.WithMetrics(),
		devnet.WithNodeArgs("--replicator.read-timeout", soakRelayReadTimeout.String()))
	s.sentryPort = sys.FreePort()
	sentry := sys.AddFollower("sentry", devnet.RoleGossipFollower, devnet.WithNodeArgs(dsl.RelayArgs(s.sentryPort)...))
	down := sys.AddReplicator("downstream", devnet.WithHaltPolicy("manual"),
		devnet.WithSource(dsl.RelaySource(s.sentryPort)+","+dsl.RelaySource(seqRelay)))
	rep.WaitReplicating(sys.Sequencer.EL, 5)
	down.WaitReachesHead(sys.Sequencer.EL)
	s.rep, s.sentry, s.down = rep.Node.Node, sentry.Node, down.Node.Node
	head, err := s.seq.BlockNumber(t.Context())
	require.NoError(t, err)
	s.startHead, s.started = head, time.Now()
	t.Logf("soak devnet up at block %d; logs in %s", head, d.LogDir())
	return s
}

// replicators are the nodes whose halts and recoveries the soak checks.
func (s *soak) replicators() []*devnet.Node { return []*devnet.Node{s.rep, s.down} }

// schedule is one cycle of faults. Each is injected, ended, and recovered from before the next.
func (s *soak) schedule() []*soakFault {
	return []*soakFault{
		{name: "source down (15 s)", target: s.rep, inject: func() {
			s.proxy.SetFailure(devnet.FailDown)
			s.hold(15 * time.Second)
			s.proxy.SetFailure(devnet.FailNone)
		}},
		{name: "source stalled (8 s a request, for 12 s)", target: s.rep, inject: func() {
			s.proxy.SetDelay(8 * time.Second) // beyond the 5 s request timeout
			s.hold(12 * time.Second)
			s.proxy.SetDelay(0)
		}},
		{name: "source tampered", target: s.rep, expectHalt: api.ReasonInvalidPayload, inject: s.tamperSource},
		{name: "op-geth restart (down 5 s)", target: s.rep, inject: func() {
			require.NoError(s.t, s.rep.OpGeth.Stop())
			s.hold(soakDowntime)
			require.NoError(s.t, s.rep.Start(s.t.Context())) // op-geth only: the op-node runs on
		}},
		{name: "op-node SIGKILL (down 5 s)", target: s.down, inject: func() {
			require.NoError(s.t, s.down.OpNode.Kill())
			s.hold(soakDowntime)
			require.NoError(s.t, s.down.Start(s.t.Context()))
		}},
		{name: "relay churn (sentry's op-node down 5 s)", target: s.sentry, inject: func() {
			require.NoError(s.t, s.sentry.OpNode.Stop())
			s.hold(soakDowntime)
			require.NoError(s.t, s.sentry.Start(s.t.Context()))
		}},
		{name: "hostile relay: forged blocks", target: s.rep, inject: func() {
			s.streamHostile("forged", func(f *fakeRelay) { f.key = s.forger })
		}},
		{name: "hostile relay: altered blocks", target: s.rep, inject: func() {
			s.streamHostile("altered", func(f *fakeRelay) {
				f.key = s.d.Keys.SequencerP2P
				f.alter = func(env *eth.ExecutionPayloadEnvelope) { env.ExecutionPayload.GasLimit-- }
			})
		}},
		{name: "hostile relay: replayed history", target: s.rep, inject: s.replayHistory},
		{name: "hostile relay: oversized block", target: s.rep, inject: s.pushOversized},
		{name: "hostile client (20 s)", target: s.sentry, inject: s.attackSentry},
	}
}

// run injects the schedule's faults in turn until duration has passed, and at least the whole schedule once.
func (s *soak) run(duration time.Duration) {
	faults := s.schedule()
	for cycle := 0; ; cycle++ {
		for _, f := range faults {
			if cycle > 0 && time.Since(s.started) >= duration {
				return
			}
			s.inject(f)
			s.hold(soakQuiet)
		}
		if time.Since(s.started) >= duration {
			return
		}
	}
}

// inject runs one fault, then recovers from it: every halted replicator is resumed (the halt recorded, expected or
// not), every replicator must reach the sequencer's head again, and its chain must be the sequencer's, parent by
// parent, from soakGapContext blocks before the fault to that head.
func (s *soak) inject(f *soakFault) {
	s.t.Helper()
	ctx := s.t.Context()
	before := make(map[*devnet.Node]uint64)
	for _, n := range s.replicators() {
		head, err := n.EL.BlockNumber(ctx)
		require.NoError(s.t, err)
		before[n] = head
	}
	s.mu.Lock()
	s.fault = f
	s.mu.Unlock()
	s.t.Logf("fault: %s (%s)", f.name, f.target.Name)
	start := time.Now()
	f.inject()
	took := time.Since(start)

	recoverStart := time.Now()
	for _, n := range s.replicators() {
		s.recoverNode(f, n, before[n])
	}
	recovered := time.Since(recoverStart)

	s.mu.Lock()
	defer s.mu.Unlock()
	s.fault = nil
	fs := s.injected[f.name]
	if fs == nil {
		fs = &faultStats{target: f.target.Name}
		s.injected[f.name] = fs
	}
	fs.count++
	fs.longest = max(fs.longest, took)
	fs.slowestRecov = max(fs.slowestRecov, recovered)
}

// recoverNode resumes n if it is halted, waits until it has replicated the sequencer's head, and checks the chain
// from soakGapContext blocks before before (its head when the fault began) to there.
func (s *soak) recoverNode(f *soakFault, n *devnet.Node, before uint64) {
	s.t.Helper()
	ctx := s.t.Context()
	var st *api.Status
	require.NoError(s.t, s.d.WaitFor(ctx, soakRecoveryTimeout, n.Name+"'s replicator_status", func(ctx context.Context) (bool, error) {
		var err error
		st, err = n.CL.Replicator.Status(ctx)
		return err == nil, err
	}))
	if st.State == api.StateHalted {
		s.recordHalt(n, st, f)
		require.NoError(s.t, n.CL.Replicator.Resume(ctx))
	}
	target, err := s.seq.BlockID(ctx, rpc.LatestBlockNumber)
	require.NoError(s.t, err)
	if err := s.d.WaitFor(ctx, soakRecoveryTimeout, fmt.Sprintf("%s to replicate up to block %d after %s", n.Name, target.Number, f.name),
		func(ctx context.Context) (bool, error) {
			// Replicated, not only derived: derivation may have got there first after a long fault, but the
			// replicator must be replicating the sequencer's new blocks again.
			st, err := n.CL.Replicator.Status(ctx)
			if err != nil || st.State != api.StateRunning || st.LastReplicated.Number < target.Number {
				return false, err
			}
			got, err := n.EL.BlockID(ctx, rpc.BlockNumber(target.Number))
			return err == nil && got == target, nil
		}); err != nil {
		s.violate(invNoGap, fmt.Sprintf("%s did not recover from %s: %v", n.Name, f.name, err))
		s.t.FailNow() // what follows would only fail on this again
	}
	from := before - min(before, soakGapContext)
	s.count(invNoGap)
	if err := s.checkNoGap(ctx, n, max(from, 1), target.Number); err != nil {
		s.violate(invNoGap, fmt.Sprintf("%s after %s: %v", n.Name, f.name, err))
	}
}

// checkNoGap checks that n's blocks from..to are the sequencer's and each one's parent is the block before it.
func (s *soak) checkNoGap(ctx context.Context, n *devnet.Node, from, to uint64) error {
	links, err := blockLinks(ctx, n.EL, devnet.NumberRange(from, to))
	if err != nil {
		return err
	}
	want, err := s.seq.HashesAt(ctx, devnet.NumberRange(from, to))
	if err != nil {
		return err
	}
	for i, l := range links {
		if l.Hash != want[i] {
			return fmt.Errorf("block %d is %s, the sequencer's is %s", from+uint64(i), l.Hash, want[i])
		}
		if i > 0 && l.ParentHash != links[i-1].Hash {
			return fmt.Errorf("block %d's parent is %s, not block %d (%s)", from+uint64(i), l.ParentHash, from+uint64(i)-1, links[i-1].Hash)
		}
	}
	return nil
}

type blockLink struct {
	Hash       common.Hash `json:"hash"`
	ParentHash common.Hash `json:"parentHash"`
}

// blockLinks returns the hash and parent hash of el's blocks at nums, in one batch; a block el does not have is an
// error.
func blockLinks(ctx context.Context, el *devnet.EL, nums []uint64) ([]blockLink, error) {
	results := make([]*blockLink, len(nums))
	batch := make([]rpc.BatchElem, len(nums))
	for i, n := range nums {
		batch[i] = rpc.BatchElem{Method: "eth_getBlockByNumber", Args: []any{hexutil.EncodeUint64(n), false}, Result: &results[i]}
	}
	if err := el.RPC.BatchCallContext(ctx, batch); err != nil {
		return nil, fmt.Errorf("batch eth_getBlockByNumber at %s: %w", el.HTTP, err)
	}
	links := make([]blockLink, len(nums))
	for i, elem := range batch {
		if elem.Error != nil {
			return nil, fmt.Errorf("block %d at %s: %w", nums[i], el.HTTP, elem.Error)
		}
		if results[i] == nil {
			return nil, fmt.Errorf("no block %d at %s: a gap", nums[i], el.HTTP)
		}
		links[i] = *results[i]
	}
	return links, nil
}

// hold lets d pass, failing at once on a devnet fault. It is how long a fault lasts, not a wait for a condition.
func (s *soak) hold(d time.Duration) {
	s.t.Helper()
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		require.NoError(s.t, s.d.Err(), "devnet fault")
		select {
		case <-s.t.Context().Done():
			s.t.FailNow()
		case <-time.After(min(100*time.Millisecond, time.Until(end))):
		}
	}
}

// waitFor is Devnet.WaitFor with soakEffectTimeout, failing the soak if the condition never holds: a fault that
// has no effect means the soak no longer tests what it says.
func (s *soak) waitFor(what string, cond func(ctx context.Context) (bool, error)) {
	s.t.Helper()
	require.NoError(s.t, s.d.WaitFor(s.t.Context(), soakEffectTimeout, what, cond))
}

// tamperSource makes the proxy serve blocks with wrong state roots from two blocks above the sequencer's head, until
// the replicator has halted on one; the halt is held for soakHaltHeld (the checks watch op-geth meanwhile), and
// ended by the recovery that follows every fault.
func (s *soak) tamperSource() {
	head, err := s.seq.BlockNumber(s.t.Context())
	require.NoError(s.t, err)
	s.proxy.TamperFrom(head + 2)
	defer s.proxy.StopTampering()
	s.waitFor("the replicator to halt on a tampered block", func(ctx context.Context) (bool, error) {
		st, err := s.rep.CL.Replicator.Status(ctx)
		return err == nil && st.State == api.StateHalted, err
	})
	s.hold(soakHaltHeld)
}

// streamHostile has the hostile relay stream the sequencer's new blocks, changed by misbehave, until it has sent
// three; then it is silent again, and the replicator must have refused every block it sent
// (errors_total{kind="bad-signature"}).
func (s *soak) streamHostile(what string, misbehave func(f *fakeRelay)) {
	refused := func(ctx context.Context) (float64, error) {
		return s.rep.MetricValue(ctx, dsl.MetricErrors, "kind", dsl.ErrorKindBadSignature)
	}
	before, _ := refused(s.t.Context()) // no series before the first refusal
	sent := s.hostile.blocksSent()
	s.hostile.set(func(f *fakeRelay) {
		misbehave(f)
		f.silent = false
	})
	s.waitFor("the hostile relay to send three "+what+" blocks", func(context.Context) (bool, error) {
		return s.hostile.blocksSent() >= sent+3, nil
	})
	s.hostile.set(func(f *fakeRelay) { f.key, f.alter, f.silent = s.forger, nil, true })
	sent = s.hostile.blocksSent() - sent
	s.waitFor(fmt.Sprintf("the replicator to refuse the %d %s blocks", sent, what), func(ctx context.Context) (bool, error) {
		v, err := refused(ctx)
		return err == nil && v >= before+float64(sent), nil
	})
	s.addTraffic(fmt.Sprintf("hostile relay, %s: %d blocks sent, all refused", what, sent))
}

// replayHistory has the hostile relay replay history the sequencer really signed, below the replicator's safe head:
// a pair of different blocks at one height (as an old unsafe reorg would have left) and replayedBlocks others. They
// must be dropped as replays, never taken as equivocation evidence.
func (s *soak) replayHistory() {
	ctx := s.t.Context()
	s.waitFor("the replicator to subscribe to the hostile relay", func(context.Context) (bool, error) {
		return s.hostile.subscribers() > 0, nil
	})
	safe, err := s.rep.EL.BlockID(ctx, rpc.SafeBlockNumber)
	require.NoError(s.t, err)
	require.Greater(s.t, safe.Number, uint64(soakGapContext), "the replicator's safe head is too low to replay below it")
	top := safe.Number - 20 // well below the safe head, which only moves up
	s.hostile.set(func(f *fakeRelay) { f.key = s.d.Keys.SequencerP2P })
	genuine, err := s.hostile.signed(ctx, top)
	require.NoError(s.t, err)
	msgs := []any{genuine, oldVariant(s.t, s.hostile, top, 0)}
	for i := range replayedBlocks {
		msgs = append(msgs, oldVariant(s.t, s.hostile, 1+uint64(i)%top, i+1))
	}
	s.hostile.set(func(f *fakeRelay) { f.key = s.forger })

	dropped := func(ctx context.Context) (float64, error) {
		return s.rep.MetricValue(ctx, dsl.MetricReplaysDropped)
	}
	before, _ := dropped(ctx)
	require.Positive(s.t, s.hostile.push(msgs...), "the hostile relay lost its subscriber")
	s.waitFor("the replays to be dropped", func(ctx context.Context) (bool, error) {
		v, err := dropped(ctx)
		return err == nil && v >= before+float64(len(msgs)), nil
	})
	evidence, err := s.rep.CL.Replicator.EquivocationEvidence(ctx)
	require.NoError(s.t, err)
	s.count(invHaltsExpected)
	if len(evidence) > 0 {
		first, _ := json.Marshal(evidence[0])
		s.violate(invHaltsExpected, fmt.Sprintf("replayed history was taken as equivocation evidence: %s", first))
	}
	s.addTraffic(fmt.Sprintf("hostile relay, replayed: %d signed blocks at or below height %d (safe head %d), a conflicting pair among them", len(msgs), top, safe.Number))
}

// pushOversized has the hostile relay send a block larger than a replicator reads of one websocket message. The
// replicator drops the connection (nothing is parsed) and subscribes again.
func (s *soak) pushOversized() {
	if s.oversized == nil {
		s.oversized, s.oversizedSize = s.buildOversized()
	}
	s.waitFor("the replicator to subscribe to the hostile relay", func(context.Context) (bool, error) {
		return s.hostile.subscribers() > 0, nil
	})
	require.Positive(s.t, s.hostile.push(s.oversized), "the hostile relay lost its subscriber")
	s.waitFor("the replicator to drop its connection to the hostile relay", func(context.Context) (bool, error) {
		return s.hostile.subscribers() == 0, nil
	})
	s.waitFor("the replicator to subscribe to the hostile relay again", func(context.Context) (bool, error) {
		return s.hostile.subscribers() > 0, nil
	})
	s.addTraffic(fmt.Sprintf("hostile relay, oversized: one block of %.1f MiB", float64(s.oversizedSize)/(1<<20)))
}

// buildOversized returns the sequencer's latest block with a junk transaction of oversizedPadding bytes, its hash
// recomputed, signed with the forger's key, and the size of its JSON.
func (s *soak) buildOversized() (any, int) {
	ctx := s.t.Context()
	head, err := s.seq.BlockNumber(ctx)
	require.NoError(s.t, err)
	env, err := s.hostile.l2.PayloadByNumber(ctx, head)
	require.NoError(s.t, err)
	junk := make(eth.Data, oversizedPadding)
	for i := range junk {
		junk[i] = byte(i)
	}
	env.ExecutionPayload.Transactions = append(env.ExecutionPayload.Transactions, junk)
	env.ExecutionPayload.BlockHash, _ = env.CheckBlockHash()
	signed, err := s.hostile.sign(ctx, env)
	require.NoError(s.t, err)
	msg, err := json.Marshal(signed)
	require.NoError(s.t, err)
	return json.RawMessage(msg), len(msg)
}

// attackSentry runs the hostile client of TestRelayWithstandsHostileClient against the sentry's relay, which the
// downstream replicator follows, for 20 s.
func (s *soak) attackSentry() {
	const window = 20 * time.Second
	ctx := s.t.Context()
	h, err := devnet.StartHostileClient(ctx, "http://127.0.0.1:"+strconv.Itoa(s.sentryPort), hostileAttack)
	require.NoError(s.t, err)
	defer h.Stop()
	var maxLag uint64
	end := time.Now().Add(window)
	for time.Now().Before(end) {
		s.hold(lagSamplePeriod)
		if lag, err := blocksBehind(ctx, s.down.EL, s.seq); err == nil {
			maxLag = max(maxLag, lag)
		}
	}
	st := h.Stats()
	s.addTraffic(fmt.Sprintf("hostile client, %s: %s; downstream at most %d blocks behind the sequencer meanwhile", window, st, maxLag))
	require.NotZero(s.t, st.TooMany, "the sentry's relay refused nothing with HTTP 429")
}

func (s *soak) addTraffic(line string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.traffic = append(s.traffic, line)
}

// recordHalt records a halt once (by node and start), as expected if the fault in progress causes it on that node.
func (s *soak) recordHalt(n *devnet.Node, st *api.Status, f *soakFault) {
	key := n.Name + "@" + st.Since.String()
	s.mu.Lock()
	if s.seenHalts[key] {
		s.mu.Unlock()
		return
	}
	s.seenHalts[key] = true
	h := haltRecord{node: n.Name, reason: string(st.HaltReason), detail: st.HaltDetail, since: st.Since, fault: "(none)"}
	if f != nil {
		h.fault = f.name
		h.expected = f.target == n && f.expectHalt == st.HaltReason
	}
	s.halts = append(s.halts, h)
	s.checks[invHaltsExpected]++
	s.mu.Unlock()
	s.t.Logf("%s halted (%s: %s) during %s", n.Name, st.HaltReason, st.HaltDetail, h.fault)
	if !h.expected {
		s.violate(invHaltsExpected, fmt.Sprintf("%s halted %s (%s) during %s", n.Name, st.HaltReason, st.HaltDetail, h.fault))
	}
}

func (s *soak) violate(invariant, detail string) {
	s.t.Errorf("invariant violated: %s: %s", invariant, detail)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.violations = append(s.violations, violation{invariant: invariant, detail: detail, at: time.Now()})
}

func (s *soak) count(invariant string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checks[invariant]++
}

func (s *soak) violationCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.violations)
}

func (s *soak) currentFault() *soakFault {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fault
}

// startChecks checks the invariants and samples the replicator's resources every soakCheckPeriod, in a goroutine of
// its own, until the returned stop is called (once or more).
func (s *soak) startChecks() (stop func()) {
	ctx, cancel := context.WithCancel(s.t.Context())
	histories := make([]*safeHistory, 0, 4)
	for _, n := range []*devnet.Node{s.d.Sequencer, s.rep, s.sentry, s.down} {
		histories = append(histories, &safeHistory{node: n, hashes: make(map[uint64]common.Hash)})
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		ticker := time.NewTicker(soakCheckPeriod)
		defer ticker.Stop()
		for {
			for _, h := range histories {
				s.checkSafeHistory(ctx, h)
			}
			for _, n := range s.replicators() {
				s.checkHaltHeld(ctx, n)
			}
			s.sampleResources(ctx)
			select {
			case <-ctx.Done():
				return
			case <-ticker.C:
			}
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

// safeHistory is every block hash at or below a node's safe head the soak has seen, by height.
type safeHistory struct {
	node   *devnet.Node
	hashes map[uint64]common.Hash
	next   uint64 // the lowest height not recorded yet
	cursor uint64 // where the rolling re-check of old heights is
}

const (
	// safeRecheckRecent is how many of the highest recorded heights are checked again every second: a rewind below
	// the safe head would hit them first.
	safeRecheckRecent = 64
	// safeRecheckRolling is how many older heights are checked again every second, in turn, so that every recorded
	// height is checked again every few seconds to minutes, however long the soak.
	safeRecheckRolling = 64
	// safeRecordBatch bounds the new heights recorded in one second.
	safeRecordBatch = 512
)

// checkSafeHistory records the hashes of h's node's blocks up to its safe head, and checks that none recorded before
// has changed (or gone). A node that does not answer (restarting) is skipped.
func (s *soak) checkSafeHistory(ctx context.Context, h *safeHistory) {
	safe, err := h.node.EL.BlockID(ctx, rpc.SafeBlockNumber)
	if err != nil {
		return
	}
	var nums []uint64
	for n := h.next; n <= safe.Number && len(nums) < safeRecordBatch; n++ {
		nums = append(nums, n)
	}
	recorded := len(nums)
	for n := h.next - min(h.next, safeRecheckRecent); n < h.next; n++ {
		nums = append(nums, n)
	}
	if h.next > safeRecheckRecent {
		for range safeRecheckRolling {
			nums = append(nums, h.cursor%(h.next-safeRecheckRecent))
			h.cursor++
		}
	}
	hashes, err := optionalHashesAt(ctx, h.node.EL, nums)
	if err != nil {
		return
	}
	s.count(invSafeNeverRewritten)
	for i, n := range nums {
		got := hashes[i]
		if i < recorded {
			if got == nil { // below the safe head the node just reported: a restart in between; next time
				break
			}
			h.hashes[n] = *got
			h.next = n + 1
			continue
		}
		switch want := h.hashes[n]; {
		case got == nil:
			s.violate(invSafeNeverRewritten, fmt.Sprintf("%s no longer has block %d (%s), at or below its safe head", h.node.Name, n, want))
		case *got != want:
			s.violate(invSafeNeverRewritten, fmt.Sprintf("%s rewrote block %d at or below its safe head: %s, was %s", h.node.Name, n, *got, want))
			h.hashes[n] = *got // reported once
		}
	}
}

// optionalHashesAt is devnet.EL.HashesAt with nil for a block el does not have.
func optionalHashesAt(ctx context.Context, el *devnet.EL, nums []uint64) ([]*common.Hash, error) {
	type block struct {
		Hash common.Hash `json:"hash"`
	}
	results := make([]*block, len(nums))
	batch := make([]rpc.BatchElem, len(nums))
	for i, n := range nums {
		batch[i] = rpc.BatchElem{Method: "eth_getBlockByNumber", Args: []any{hexutil.EncodeUint64(n), false}, Result: &results[i]}
	}
	if err := el.RPC.BatchCallContext(ctx, batch); err != nil {
		return nil, err
	}
	hashes := make([]*common.Hash, len(nums))
	for i, elem := range batch {
		if elem.Error != nil {
			return nil, elem.Error
		}
		if results[i] != nil {
			hashes[i] = &results[i].Hash
		}
	}
	return hashes, nil
}

// checkHaltHeld checks, while n is halted (from dsl.RewindDeadline after the halt on), that its op-geth's latest block
// is one derivation produced: not above op-node's pending safe head, and the sequencer's block at that height (as
// dsl.HeadSamples.RequireHaltHeld). It records the halt too. The status is read again afterwards: a look that a resume
// overtook is not a check.
func (s *soak) checkHaltHeld(ctx context.Context, n *devnet.Node) {
	st, err := n.CL.Replicator.Status(ctx)
	if err != nil || st.State != api.StateHalted {
		return
	}
	s.recordHalt(n, st, s.currentFault())
	if time.Since(st.Since) < dsl.RewindDeadline {
		return
	}
	latest, err := n.EL.BlockID(ctx, rpc.LatestBlockNumber)
	if err != nil {
		return
	}
	ss, err := dsl.PendingSafeAfter(ctx, n.CL, latest)
	if err != nil {
		return
	}
	again, err := n.CL.Replicator.Status(ctx)
	if err != nil || again.State != api.StateHalted || !again.Since.Equal(st.Since) {
		return
	}
	s.count(invHaltHeld)
	if latest.Number > ss.PendingSafeL2.Number {
		s.violate(invHaltHeld, fmt.Sprintf("%s halted (%s) since %s: op-geth's latest %s is above the pending safe head %s",
			n.Name, st.HaltReason, time.Since(st.Since).Round(time.Millisecond), latest, ss.PendingSafeL2))
		return
	}
	want, err := s.seq.BlockID(ctx, rpc.BlockNumber(latest.Number))
	if err == nil && want != latest {
		s.violate(invHaltHeld, fmt.Sprintf("%s halted (%s): op-geth's latest %s is not the sequencer's block %s", n.Name, st.HaltReason, latest, want))
	}
}

// sampleResources samples the replicator op-node's resident memory and open file descriptors (/proc) and its
// goroutines (go_goroutines).
func (s *soak) sampleResources(ctx context.Context) {
	res, err := s.rep.OpNode.Resources()
	if err != nil {
		return
	}
	goroutines, err := s.rep.MetricValue(ctx, dsl.MetricGoroutines)
	if err != nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.resources = append(s.resources, resourceSample{at: time.Now(), rss: res.RSS, goroutines: goroutines, fds: res.FDs})
}
