package dsl

import (
	"context"
	"crypto/ecdsa"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/op-replicator/op-replicator/e2e/devnet"
)

const (
	// TxRate is the transactions per second the scenarios send to the sequencer.
	TxRate = 20
	// SamplePeriod is how often SampleFor samples a property that must hold over a window.
	SamplePeriod = 200 * time.Millisecond
	// ReplicationTimeout bounds how long a replicator may take to start replicating, or to catch up with its
	// source's head again after a restart, an outage or a halt.
	ReplicationTimeout = 30 * time.Second
	// HaltTimeout bounds how long a replicator may take to notice a disagreement and halt.
	HaltTimeout = 30 * time.Second
	// SafeGrace is how long another node may take to reach a safe head a node already has. Every node derives its
	// safe head from L1 on its own and polls L1 at its own phase (every second), so a follower can be first by up
	// to about a second. A replicator counting replicated blocks as safe would be ahead by many blocks until the
	// next batch.
	SafeGrace = 2 * devnet.L1BlockTime
)

// base is what every wrapper holds: the test, and assertions that fail it.
type base struct {
	t       testing.TB
	require *require.Assertions
}

func newBase(t testing.TB) base { return base{t: t, require: require.New(t)} }

func (c base) ctx() context.Context { return c.t.Context() }

// System is a devnet under test: L1, the sequencer and its batcher, and the nodes a test adds.
type System struct {
	base
	// Net is the devnet itself, for what the DSL does not cover (keys, the rollup config, L1, signer rotation).
	Net *devnet.Devnet
	// Sequencer is the sequencer node; L1 is L1's execution client.
	Sequencer *Node
	L1        *EL
}

// Start starts a devnet for the test (devnet.Start): stopped at the end of the test, its logs printed if it failed.
func Start(t testing.TB, cfg devnet.Config) *System {
	t.Helper()
	d := devnet.Start(t, cfg)
	s := &System{base: newBase(t), Net: d}
	s.L1 = s.el(d.L1.EL)
	s.Sequencer = s.node(d.Sequencer)
	return s
}

// For is the same devnet with checks that fail t instead, a subtest of the test that started it: its nodes and the
// nodes added through it fail t, and what it cleans up is cleaned up at the end of t.
func (s *System) For(t testing.TB) *System {
	c := &System{base: newBase(t), Net: s.Net}
	c.L1 = c.el(s.Net.L1.EL)
	c.Sequencer = c.node(s.Net.Sequencer)
	return c
}

func (s *System) el(el *devnet.EL) *EL { return &EL{base: s.base, EL: el, sys: s} }

func (s *System) node(n *devnet.Node) *Node {
	return &Node{base: s.base, Node: n, EL: s.el(n.EL), sys: s}
}

// AddFollower adds a follower of the sequencer with role (devnet.Devnet.AddFollower).
func (s *System) AddFollower(name string, role devnet.Role, opts ...devnet.FollowerOption) *Node {
	s.t.Helper()
	n, err := s.Net.AddFollower(s.ctx(), name, role, opts...)
	s.require.NoError(err, "add %s", name)
	return s.node(n)
}

// AddReplicator adds a replicator (by default its source is the sequencer's op-geth over HTTP).
func (s *System) AddReplicator(name string, opts ...devnet.FollowerOption) *Replicator {
	s.t.Helper()
	return s.Replicator(s.AddFollower(name, devnet.RoleReplicator, opts...))
}

// StartRefused starts a follower whose op-node must refuse to start (devnet.Devnet.StartRefused), and returns the
// op-node's last log lines.
func (s *System) StartRefused(name string, role devnet.Role, opts ...devnet.FollowerOption) string {
	s.t.Helper()
	logTail, err := s.Net.StartRefused(s.ctx(), name, role, opts...)
	s.require.NoError(err, "start %s", name)
	return logTail
}

// Replicator is the replicator running on n.
func (s *System) Replicator(n *Node) *Replicator { return &Replicator{Node: n, API: n.CL.Replicator} }

// AddSequencer starts a second, unconnected sequencer (a conflicting chain; devnet.Devnet.AddSequencer).
func (s *System) AddSequencer(name string) *Node {
	s.t.Helper()
	n, err := s.Net.AddSequencer(s.ctx(), name)
	s.require.NoError(err, "add %s", name)
	return s.node(n)
}

// NewProxy starts a devnet.Proxy in front of upstream, closed at the end of the test.
func (s *System) NewProxy(upstream string) *devnet.Proxy {
	s.t.Helper()
	p, err := devnet.NewProxy(upstream)
	s.require.NoError(err)
	s.t.Cleanup(func() { _ = p.Close() })
	return p
}

// DialEL is a client of any execution-engine RPC, e.g. of a Proxy, to see what it serves; closed at the end of
// the test.
func (s *System) DialEL(url string) *EL {
	s.t.Helper()
	el, err := devnet.DialEL(url)
	s.require.NoError(err)
	s.t.Cleanup(el.Close)
	return s.el(el)
}

// StartTxLoad sends TxRate transfers a second to el, from every funded account, until the end of the test.
func (s *System) StartTxLoad(el *EL) *devnet.TxGen {
	s.t.Helper()
	return s.StartTxLoadFrom(el, s.Net.Keys.L2Accounts, TxRate)
}

// StartTxLoadFrom sends rate transfers a second to el from the accounts of keys until the end of the test.
func (s *System) StartTxLoadFrom(el *EL, keys []*ecdsa.PrivateKey, rate float64) *devnet.TxGen {
	s.t.Helper()
	txs, err := devnet.StartTxGen(s.ctx(), el.EL, keys, rate)
	s.require.NoError(err)
	s.t.Cleanup(txs.Stop)
	return txs
}

// SetBatching starts or stops the batcher.
func (s *System) SetBatching(on bool) {
	s.t.Helper()
	s.require.NoError(s.Net.SetBatching(s.ctx(), on))
}

// FreePort returns a free port of 127.0.0.1 the devnet has not handed out (for a relay listener).
func (s *System) FreePort() int {
	s.t.Helper()
	p, err := s.Net.FreePort()
	s.require.NoError(err)
	return p
}

// WaitFor polls cond (devnet.Devnet.WaitFor) until it holds, failing the test after timeout or on a devnet fault.
func (s *System) WaitFor(timeout time.Duration, what string, cond func(ctx context.Context) (bool, error)) {
	s.t.Helper()
	s.require.NoError(s.Net.WaitFor(s.ctx(), timeout, what, cond))
}

// Hold lets d pass, failing at once on a devnet fault: how long a fault lasts, not a wait for a condition.
func (s *System) Hold(d time.Duration) {
	s.t.Helper()
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		s.require.NoError(s.Net.Err(), "devnet fault")
		select {
		case <-s.ctx().Done():
			s.t.FailNow()
		case <-time.After(min(100*time.Millisecond, time.Until(end))):
		}
	}
}

// SampleFor calls check every SamplePeriod for window (and at least twice: at the start and at the end), failing
// at once on a devnet fault. It returns how many samples were taken.
func (s *System) SampleFor(window time.Duration, check func()) int {
	s.t.Helper()
	end := time.Now().Add(window)
	ticker := time.NewTicker(SamplePeriod)
	defer ticker.Stop()
	for n := 1; ; n++ {
		s.require.NoError(s.Net.Err(), "devnet fault")
		check()
		if !time.Now().Before(end) {
			return n
		}
		select {
		case <-s.ctx().Done():
			s.t.Fatal("test context ended while sampling")
		case <-ticker.C:
		}
	}
}

// FreePort returns a free port of 127.0.0.1 before a devnet exists (e.g. for the sequencer's relay).
func FreePort(t testing.TB) int {
	t.Helper()
	p, err := devnet.FreePort()
	require.NoError(t, err)
	return p
}
