package plugin

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ethereum-optimism/optimism/op-service/eth"
	opsigner "github.com/ethereum-optimism/optimism/op-service/signer"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/rpc"
	"github.com/stretchr/testify/require"

	"github.com/op-replicator/op-replicator/driverhook"
	"github.com/op-replicator/op-replicator/plugin/api"
	"github.com/op-replicator/op-replicator/plugin/internal/testkit"
	"github.com/op-replicator/op-replicator/plugin/source"
)

func TestBlockStatus(t *testing.T) {
	blocks := testkit.BuildChain(t, testkit.RollupConfig(), 8, 0, 0)
	h := newHarness(t, driverhook.HaltManual, blocks)
	h.engine.setChain(blocks[:2]) // 1 and 2 came from derivation
	h.engine.setSafe(2)
	h.engine.finalized = 1
	h.engine.l1Head, h.engine.l1Safe, h.engine.l1Final = testkit.L1Block(10, 0), testkit.L1Block(3, 0), testkit.L1Block(1, 0)
	h.round()
	require.Equal(t, uint64(8), h.engine.head().Number)
	client := h.client()
	ctx := context.Background()

	st, err := client.BlockStatus(ctx, rpc.BlockNumberOrHashWithNumber(rpc.LatestBlockNumber))
	require.NoError(t, err)
	require.Equal(t, blocks[7].Ref.Hash, st.Hash)
	require.Equal(t, api.LabelUnsafe, st.Label)
	require.Equal(t, blocks[7].Ref.L1Origin, st.L1Origin) // origin 4
	require.True(t, st.L1OriginCanonical)
	require.Equal(t, uint64(10-4+1), st.L1OriginDepth)
	require.False(t, st.L1OriginSafe)
	require.False(t, st.L1OriginFinalized)
	require.True(t, st.Replicated)
	require.Equal(t, "fake", st.Source)
	require.NotNil(t, st.ArrivedAt)

	st, err = client.BlockStatus(ctx, rpc.BlockNumberOrHashWithHash(blocks[5].Ref.Hash, true)) // block 6, origin 3
	require.NoError(t, err)
	require.Equal(t, api.LabelUnsafe, st.Label)
	require.True(t, st.L1OriginSafe, "origin 3 is at our L1 safe head")
	require.False(t, st.L1OriginFinalized)

	st, err = client.BlockStatus(ctx, rpc.BlockNumberOrHashWithNumber(2))
	require.NoError(t, err)
	require.Equal(t, api.LabelSafe, st.Label)
	require.False(t, st.Replicated, "block 2 was derived, not replicated")

	st, err = client.BlockStatus(ctx, rpc.BlockNumberOrHashWithNumber(rpc.FinalizedBlockNumber))
	require.NoError(t, err)
	require.Equal(t, uint64(1), st.Number)
	require.Equal(t, api.LabelFinalized, st.Label)
	require.True(t, st.L1OriginFinalized)

	h.reorgL1(4, 9)
	st, err = client.BlockStatus(ctx, rpc.BlockNumberOrHashWithNumber(8))
	require.NoError(t, err)
	require.False(t, st.L1OriginCanonical, "origin 4 was reorged out of our L1 view")
	require.Zero(t, st.L1OriginDepth)

	_, err = client.BlockStatus(ctx, rpc.BlockNumberOrHashWithNumber(9))
	require.ErrorContains(t, err, "not found")
	_, err = client.BlockStatus(ctx, rpc.BlockNumberOrHashWithHash(common.Hash{0x42}, false))
	require.ErrorContains(t, err, "not found")
}

func TestBlockStatusProvenance(t *testing.T) {
	blocks := testkit.BuildChain(t, testkit.RollupConfig(), 3, 0, 0)
	down := testkit.NewSource(blocks)
	down.Set(blocks, 3, errors.New("down"))
	h := newHarness(t, driverhook.HaltManual, blocks, withStore(plainStore(8)), withSource(func(h *harness) source.Source {
		return source.NewMulti([]source.Source{down, &namedSource{Source: h.source, name: "seq-rpc"}}, NoopMetrics{}, h.clock)
	}))
	arrived := h.clock.Now().Add(-time.Second)
	h.rep.store.Add(&opsigner.SignedExecutionPayloadEnvelope{Envelope: blocks[2].Env, Signature: eth.Bytes65{1}}, "relay+ws://relay", arrived) // block 3 came signed through a relay
	h.round()
	require.Equal(t, uint64(3), h.engine.head().Number)
	client := h.client()

	status, err := client.Status(context.Background())
	require.NoError(t, err)
	require.Len(t, status.Sources, 2, "per-source health")
	require.Equal(t, "seq-rpc", status.Sources[1].Name)
	require.Equal(t, uint64(3), status.Sources[1].Head.Number)
	require.Zero(t, status.Sources[1].Lag)
	// Heads are asked of every source at once, and the healthy answer is not held up by the failing one: its
	// failure is recorded when it comes.
	require.Eventually(t, func() bool {
		status, err := client.Status(context.Background())
		return err == nil && status.Sources[0].Errors > 0
	}, 5*time.Second, 10*time.Millisecond)

	st, err := client.BlockStatus(context.Background(), rpc.BlockNumberOrHashWithNumber(2))
	require.NoError(t, err)
	require.Equal(t, "seq-rpc", st.Source)
	require.False(t, st.Signed)

	st, err = client.BlockStatus(context.Background(), rpc.BlockNumberOrHashWithNumber(3))
	require.NoError(t, err)
	require.Equal(t, "relay+ws://relay", st.Source)
	require.True(t, st.Signed)
	require.True(t, arrived.Equal(*st.ArrivedAt), "arrived at %s, reported %s", arrived, st.ArrivedAt)
}

type namedSource struct {
	source.Source
	name string
}

func (n *namedSource) Name() string { return n.name }
