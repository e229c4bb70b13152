package plugin

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ethereum-optimism/optimism/op-service/eth"
	opsigner "github.com/ethereum-optimism/optimism/op-service/signer"
	"github.com/ethereum-optimism/optimism/op-service/testlog"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/log"
	"github.com/op-replicator/op-replicator/driverhook"
	"github.com/op-replicator/op-replicator/plugin/api"
	"github.com/op-replicator/op-replicator/plugin/internal/testkit"
	"github.com/op-replicator/op-replicator/plugin/relay"
	"github.com/op-replicator/op-replicator/plugin/source"
	"github.com/stretchr/testify/require"
)

// signedChain returns n blocks with valid header hashes, each signed by key (not a linked chain: relays do not
// check linkage, the replicator's verifier does).
func signedChain(t *testing.T, key byte, n int, variant byte) []*opsigner.SignedExecutionPayloadEnvelope {
	cfg := testkit.RollupConfig()
	beacon := common.Hash{0xbe}
	var out []*opsigner.SignedExecutionPayloadEnvelope
	for _, b := range testkit.BuildChain(t, cfg, uint64(n), variant, 1) {
		p := *b.Env.ExecutionPayload
		out = append(out, testkit.Sign(t, cfg.L2ChainID, testkit.Key(key), &eth.ExecutionPayloadEnvelope{ExecutionPayload: &p, ParentBeaconBlockRoot: &beacon}))
	}
	return out
}

// Through gossip too: two signed blocks at a height at or below the safe head are a replay, dropped and counted,
// and never halt; above the safe head they halt with evidence, unless the second one is older than gossip's age
// window when it arrives (a replay to a node whose safe head is still low): then it is held as history.
func TestGossipReplayNeverHalts(t *testing.T) {
	for _, tc := range []struct {
		name   string
		height uint64
		late   bool // the second block arrives more than relay.ReplayAge after its timestamp
		halts  bool
	}{
		{name: "below the safe head", height: 2},
		{name: "at the safe head", height: 3},
		{name: "above the safe head", height: 4, halts: true},
		{name: "above the safe head, arriving as history", height: 4, late: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := &replayMetrics{}
			h := newHarness(t, driverhook.HaltManual, testkit.BuildChain(t, testkit.RollupConfig(), 4, 0, 0), withMetrics(m),
				withStore(func(h *harness) *relay.Store {
					return relay.NewStore(16, testlog.Logger(t, log.LevelDebug), h.engine, m)
				}))
			h.round()
			h.engine.setSafe(3)
			a, b := signedChain(t, 1, 4, 0), signedChain(t, 1, 4, 5)
			h.svc.OnSignedUnsafeL2Payload(context.Background(), a[tc.height-1])
			if tc.late {
				h.clock.AdvanceTime(relay.ReplayAge + time.Minute)
			}
			h.svc.OnSignedUnsafeL2Payload(context.Background(), b[tc.height-1])
			h.round()
			evs := h.svc.EquivocationEvidence()
			if tc.late {
				h.requireRunning()
				require.Empty(t, evs)
				require.Equal(t, int64(1), m.replays.Load())
				require.Len(t, h.svc.store.ByNumber(tc.height), 2, "held as history")
				return
			}
			if tc.halts {
				h.requireHalted(api.ReasonEquivocation)
				require.Len(t, evs, 1)
				require.Zero(t, m.replays.Load())
				return
			}
			h.requireRunning()
			require.Empty(t, evs)
			require.Equal(t, int64(2), m.replays.Load())
			require.Empty(t, h.svc.store.ByNumber(tc.height), "not held")
		})
	}
}

func TestEquivocationHaltsWithEvidence(t *testing.T) {
	blocks := testkit.BuildChain(t, testkit.RollupConfig(), 4, 0, 0)
	h := newHarness(t, driverhook.HaltManual, blocks, withStore(plainStore(16)))
	h.round()
	a, b := signedChain(t, 1, 3, 0), signedChain(t, 1, 3, 5)
	h.svc.OnSignedUnsafeL2Payload(context.Background(), a[2])
	h.svc.OnSignedUnsafeL2Payload(context.Background(), b[2])
	h.round()
	h.requireHalted(api.ReasonEquivocation)
	evs := h.svc.EquivocationEvidence()
	require.Len(t, evs, 1)
	require.Equal(t, a[2], evs[0].First)
	require.Equal(t, b[2], evs[0].Second)

	done := make(chan error, 1)
	h.rep.handle(context.Background(), request{done: done})
	require.NoError(t, <-done)
	h.round()
	h.requireRunning() // evidence halts once; it stays available
	require.Len(t, h.svc.EquivocationEvidence(), 1)
}

// A disagreement found in the same round as equivocation evidence arrives (e.g. the source's block at our height
// is the other signed one) is reported as the equivocation that explains it.
func TestEquivocationExplainsDisagreement(t *testing.T) {
	cfg := testkit.RollupConfig()
	a, b := signedChain(t, 1, 2, 0), signedChain(t, 1, 2, 5)
	store := relay.NewStore(8, log.Root(), nil, relay.NoopMetrics{})
	held, _, _, _ := store.Add(a[1], "relay-a", time.Now())
	other, _, _, _ := store.Add(b[1], "relay-b", time.Now())
	h := newHarness(t, driverhook.HaltManual, testkit.BuildChain(t, cfg, 4, 0, 0), withSource(func(h *harness) source.Source {
		return &hookSource{Source: h.source, onPayload: func() { h.rep.evidence.Record(held, other) }}
	}))
	h.engine.setChain(testkit.BuildChain(t, cfg, 3, 1, 2)) // the source disagrees with our head
	h.round()
	h.requireHalted(api.ReasonEquivocation)
}

// hookSource calls onPayload as it serves a block: something that happens while the block is fetched.
type hookSource struct {
	source.Source
	onPayload func()
}

func (s *hookSource) Payload(ctx context.Context, n uint64) (*eth.ExecutionPayloadEnvelope, error) {
	s.onPayload()
	return s.Source.Payload(ctx, n)
}

// replayMetrics counts the replays the store drops.
type replayMetrics struct {
	countingMetrics
	replays atomic.Int64
}

func (m *replayMetrics) RecordReplayDropped() { m.replays.Add(1) }
