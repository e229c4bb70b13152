package dsl

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/rpc"

	"github.com/ethereum-optimism/optimism/op-service/eth"

	"github.com/op-replicator/op-replicator/e2e/devnet"
)

// Node is an L2 node of the devnet: an op-node and its op-geth. EL is its op-geth as users see it; the embedded
// devnet.Node gives its processes (OpNode, OpGeth, Start, Stop, Kill) and its op-node client (CL).
type Node struct {
	base
	*devnet.Node
	EL  *EL
	sys *System
}

// SyncStatus returns the op-node's optimism_syncStatus.
func (n *Node) SyncStatus() *eth.SyncStatus {
	n.t.Helper()
	ss, err := n.CL.SyncStatus(n.ctx())
	n.require.NoError(err)
	return ss
}

// RequireNoUnsafeBeyondDerived fails unless every block of the node's unsafe chain came from L1 derivation: its
// unsafe head is not above its pending safe head (op-node's derivation progress), in one sync status. This holds
// for a plain L1 verifier, and for a replicator only while it is halted. Right after a start op-node answers with
// heads it has not all found yet (a zero pending safe head): the status is read again until it has.
func (n *Node) RequireNoUnsafeBeyondDerived() {
	n.t.Helper()
	var ss *eth.SyncStatus
	n.sys.WaitFor(startedTimeout, n.Name+"'s heads to be known", func(ctx context.Context) (bool, error) {
		var err error
		ss, err = n.CL.SyncStatus(ctx)
		return err == nil && ss.PendingSafeL2.Hash != (common.Hash{}), err
	})
	n.require.LessOrEqual(ss.UnsafeL2.Number, ss.PendingSafeL2.Number,
		"%s has unsafe blocks that derivation did not produce: unsafe %s, pending safe %s, safe %s",
		n.Name, ss.UnsafeL2, ss.PendingSafeL2, ss.SafeL2)
}

// Connect connects the node's libp2p host to peer's (both need P2P).
func (n *Node) Connect(peer *Node) {
	n.t.Helper()
	n.require.NoError(n.Node.ConnectPeer(n.ctx(), peer.Node))
}

// StartAgain starts the node's stopped or killed processes again and waits for their RPC.
func (n *Node) StartAgain() {
	n.t.Helper()
	n.require.NoError(n.Start(n.ctx()), "start %s", n.Name)
}

// WaitLogged waits until the node's op-node log has a line containing text.
func (n *Node) WaitLogged(text string) {
	n.t.Helper()
	n.sys.WaitFor(ReplicationTimeout, fmt.Sprintf("%q in %s's log", text, n.Name), func(context.Context) (bool, error) {
		b, err := os.ReadFile(n.OpNode.LogPath)
		return err == nil && bytes.Contains(b, []byte(text)), err
	})
}

// Metrics scrapes the op-node's metrics (devnet.WithMetrics), parsed with the Prometheus text parser.
func (n *Node) Metrics() devnet.Metrics {
	n.t.Helper()
	m, err := n.ScrapeMetrics(n.ctx())
	n.require.NoError(err)
	return m
}

// Metric returns the sum of the series of a metric whose labels include the given name-value pairs; there must
// be one.
func (n *Node) Metric(name string, labels ...string) float64 {
	n.t.Helper()
	v, err := n.Metrics().Value(name, labels...)
	n.require.NoError(err)
	return v
}

// HistogramIs is a wait condition: the histogram (devnet.Metrics.Histogram) satisfies ok. A histogram without a
// matching series yet is not an error: it waits.
func (n *Node) HistogramIs(ok func(h devnet.Histogram) bool, name string, labels ...string) func(ctx context.Context) (bool, error) {
	return func(ctx context.Context) (bool, error) {
		m, err := n.ScrapeMetrics(ctx)
		if err != nil {
			return false, err
		}
		h, err := m.Histogram(name, labels...)
		return err == nil && ok(h), nil
	}
}

// MetricIs is a wait condition: the metric (as Metric) satisfies ok. A metric without a matching series yet is not
// an error: it waits.
func (n *Node) MetricIs(ok func(v float64) bool, name string, labels ...string) func(ctx context.Context) (bool, error) {
	return func(ctx context.Context) (bool, error) {
		m, err := n.ScrapeMetrics(ctx)
		if err != nil {
			return false, err
		}
		v, err := m.Value(name, labels...)
		return err == nil && ok(v), nil
	}
}

// Positive is a MetricIs condition: above zero.
func Positive(v float64) bool { return v > 0 }

// AtLeast is a MetricIs condition: at least min.
func AtLeast(min float64) func(float64) bool { return func(v float64) bool { return v >= min } }

// Equal is a MetricIs condition: exactly want.
func Equal(want float64) func(float64) bool { return func(v float64) bool { return v == want } }

// startedTimeout bounds how long op-node may take, once its RPC answers, to know its heads.
const startedTimeout = 10 * time.Second

// HeadSamplePeriod is how often SampleHeads looks at a node.
const HeadSamplePeriod = 100 * time.Millisecond

// RewindDeadline is how soon after a halt op-geth's latest block must be what derivation produced.
const RewindDeadline = time.Second

// HeadSample is one look at a node as its users see it: op-geth's latest block, then op-node's sync status.
type HeadSample struct {
	At     time.Time
	Latest eth.BlockID
	SS     *eth.SyncStatus
}

// derivedBlockSettle bounds how long op-node takes to record as pending safe a block derivation just made op-geth's
// head: op-node updates its pending safe head only after op-geth's forkchoice update returns, so for a moment
// op-geth's latest is a derived block above what op-node reports.
const derivedBlockSettle = 100 * time.Millisecond

// PendingSafeAfter reads op-node's sync status after its op-geth reported latest. If latest is above the pending
// safe head, it reads again for up to derivedBlockSettle, until the pending safe head reaches it: a block derivation
// made op-geth's head is recorded by op-node right after. A block that came from outside derivation stays above.
func PendingSafeAfter(ctx context.Context, cl *devnet.CL, latest eth.BlockID) (*eth.SyncStatus, error) {
	deadline := time.Now().Add(derivedBlockSettle)
	for {
		ss, err := cl.SyncStatus(ctx)
		if err != nil || ss.PendingSafeL2.Number >= latest.Number || !time.Now().Before(deadline) {
			return ss, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// HeadSamples are a node's samples, in order.
type HeadSamples struct {
	base
	node    *Node
	Samples []HeadSample
}

// SampleHeads looks at the node every HeadSamplePeriod, in a goroutine of its own, until the returned stop is
// called, which returns the samples.
func (n *Node) SampleHeads() (stop func() *HeadSamples) {
	n.t.Helper()
	ctx, cancel := context.WithCancel(n.ctx())
	var (
		mu      sync.Mutex
		samples []HeadSample
		done    = make(chan struct{})
	)
	go func() {
		defer close(done)
		ticker := time.NewTicker(HeadSamplePeriod)
		defer ticker.Stop()
		for {
			at := time.Now()
			// latest first: the pending safe head read afterwards can only be higher.
			latest, err := n.EL.BlockID(ctx, rpc.LatestBlockNumber)
			if err == nil {
				var ss *eth.SyncStatus
				if ss, err = PendingSafeAfter(ctx, n.CL, latest); err == nil {
					mu.Lock()
					samples = append(samples, HeadSample{At: at, Latest: latest, SS: ss})
					mu.Unlock()
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-ticker.C:
			}
		}
	}()
	return func() *HeadSamples {
		cancel()
		<-done
		mu.Lock()
		defer mu.Unlock()
		return &HeadSamples{base: n.base, node: n, Samples: samples}
	}
}

// RequireHaltHeld fails unless, in every sample from RewindDeadline after the halt (since) on, op-geth's latest
// block is one derivation produced: not above op-node's pending safe head, and canonical's block at that height.
// The samples must cover at least window after the deadline.
func (hs *HeadSamples) RequireHaltHeld(since time.Time, window time.Duration, canonical *EL) {
	hs.t.Helper()
	hs.RequireHeldFrom(since, since.Add(RewindDeadline), window, canonical)
}

// RequireRewoundDown fails unless op-geth's latest block never rose in the samples from since (the halt) to until
// (the rewind done): while op-geth rolls its chain back, nothing may insert a block.
func (hs *HeadSamples) RequireRewoundDown(since, until time.Time) {
	hs.t.Helper()
	var prev *HeadSample
	for i, s := range hs.Samples {
		if s.At.Before(since) || s.At.After(until) {
			continue
		}
		if prev != nil {
			hs.require.LessOrEqual(s.Latest.Number, prev.Latest.Number, "%s after the halt, during the rewind, op-geth's "+
				"latest block rose from %s to %s", s.At.Sub(since).Round(time.Millisecond), prev.Latest, s.Latest)
		}
		prev = &hs.Samples[i]
	}
}

// RequireHeldFrom is RequireHaltHeld with the samples checked from from on (since is the halt, for messages).
func (hs *HeadSamples) RequireHeldFrom(since, from time.Time, window time.Duration, canonical *EL) {
	hs.t.Helper()
	var checked []HeadSample
	for _, s := range hs.Samples {
		if s.At.Before(from) {
			continue
		}
		hs.require.LessOrEqual(s.Latest.Number, s.SS.PendingSafeL2.Number,
			"%s after the halt, op-geth of %s served block %s as latest, above op-node's pending safe head %s (safe %s)",
			s.At.Sub(since).Round(time.Millisecond), hs.node.Name, s.Latest, s.SS.PendingSafeL2, s.SS.SafeL2)
		checked = append(checked, s)
	}
	hs.require.NotEmpty(checked, "no sample after the rewind deadline")
	hs.require.GreaterOrEqual(checked[len(checked)-1].At.Sub(from), window-HeadSamplePeriod, "the samples cover too short a window")
	nums := make([]uint64, len(checked))
	for i, s := range checked {
		nums[i] = s.Latest.Number
	}
	want := canonical.Hashes(nums)
	for i, s := range checked {
		hs.require.Equal(want[i], s.Latest.Hash, "%s after the halt, op-geth's latest block %s is not on the canonical chain",
			s.At.Sub(since).Round(time.Millisecond), s.Latest)
	}
	hs.t.Logf("op-geth's latest block stayed within what derivation produced in %d samples over %s from %s after the halt",
		len(checked), checked[len(checked)-1].At.Sub(from).Round(time.Millisecond), from.Sub(since).Round(time.Millisecond))
}
