//go:build soak

package e2e

import (
	"crypto/ecdsa"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ethereum/go-ethereum/rpc"

	"github.com/op-replicator/op-replicator/e2e/devnet"
	"github.com/op-replicator/op-replicator/e2e/dsl"
	"github.com/op-replicator/op-replicator/plugin/api"
)

// The soak (make soak): a devnet under transaction load for OP_REPLICATOR_SOAK_DURATION, with faults injected on a
// schedule, invariants checked every second, and the replicator op-node's resources sampled. docs/soak.md describes
// it. This file sets it up; soak_schedule_test.go runs the faults in turn and recovers from each,
// soak_faults_test.go injects them, soak_invariants_test.go checks what must hold throughout, and
// soak_report_test.go prints what it saw.

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
	t   *testing.T
	sys *dsl.System
	// seq is the sequencer's op-geth, the reference chain.
	seq *dsl.EL
	// rep is the replicator under test: its source is the sequencer's op-geth behind proxy, and hostile, a relay
	// that is silent except for its faults. It runs the whole soak (its resources are sampled); its op-geth is
	// restarted under it.
	rep     *dsl.Replicator
	proxy   *devnet.Proxy
	hostile *fakeRelay
	// sentry is a gossip follower serving a relay: a public relay, restarted by relay churn and attacked by the
	// hostile client.
	sentry     *dsl.Node
	sentryPort int
	// down is a downstream replicator following the sentry's relay and the sequencer's: its op-node is killed.
	down *dsl.Replicator
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
	target *dsl.Node
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

func startSoak(t *testing.T) *soak {
	seqRelay := dsl.FreePort(t)
	sys := dsl.Start(t, devnet.Config{SequencerArgs: dsl.RelayArgs(seqRelay)})
	s := &soak{
		t: t, sys: sys, seq: sys.Sequencer.EL,
		forger:    mustKey(t),
		injected:  make(map[string]*faultStats),
		seenHalts: make(map[string]bool),
		checks:    make(map[string]int),
	}
	s.txs = sys.StartTxLoad(sys.Sequencer.EL)
	s.proxy = sys.NewProxy(s.seq.HTTP)
	s.hostile = startFakeRelay(t, sys.Net.L2.Rollup, s.seq.HTTP, s.forger)
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
	s.rep, s.sentry, s.down = rep, sentry, down
	head := s.seq.NumberAt(rpc.LatestBlockNumber)
	s.startHead, s.started = head, time.Now()
	t.Logf("soak devnet up at block %d; logs in %s", head, sys.Net.LogDir())
	return s
}

// replicators are the nodes whose halts and recoveries the soak checks.
func (s *soak) replicators() []*dsl.Replicator { return []*dsl.Replicator{s.rep, s.down} }
