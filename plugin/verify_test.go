package plugin

import (
	"context"
	"errors"
	"testing"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/log"
	"github.com/stretchr/testify/require"

	"github.com/ethereum-optimism/optimism/op-service/eth"
	"github.com/ethereum-optimism/optimism/op-service/testlog"

	"github.com/op-replicator/op-replicator/driverhook"
	"github.com/op-replicator/op-replicator/plugin/api"
	"github.com/op-replicator/op-replicator/plugin/internal/testkit"
)

func TestVerifierCheck(t *testing.T) {
	cfg := testkit.RollupConfig()
	blocks := testkit.BuildChain(t, cfg, 6, 0, 0)
	l1Head := testkit.L1Block(1000, 0)

	verifierOn := func(l1 *fakeL1) *verifier {
		return newVerifier(driverhook.Deps{Log: testlog.Logger(t, log.LevelDebug), Rollup: cfg, L1: l1, L2: newFakeEngine(cfg)})
	}
	requireReason := func(t *testing.T, err error, reason api.Reason) {
		t.Helper()
		var d *Disagreement
		require.ErrorAs(t, err, &d)
		require.Equal(t, reason, d.Reason, d.Detail)
	}

	t.Run("next block with canonical origin passes", func(t *testing.T) {
		v := verifierOn(&fakeL1{})
		ref, err := v.Check(context.Background(), blocks[3].Env, blocks[2].Ref, blocks[0].Ref, l1Head)
		require.NoError(t, err)
		require.Equal(t, blocks[3].Ref, ref)
	})
	t.Run("not the next number is stale, not a disagreement", func(t *testing.T) {
		v := verifierOn(&fakeL1{})
		_, err := v.Check(context.Background(), blocks[4].Env, blocks[2].Ref, blocks[0].Ref, l1Head)
		require.ErrorIs(t, err, errStale)
	})
	t.Run("at or below safe is never inserted", func(t *testing.T) {
		v := verifierOn(&fakeL1{})
		_, err := v.Check(context.Background(), blocks[3].Env, blocks[2].Ref, blocks[3].Ref, l1Head)
		require.ErrorIs(t, err, errStale)
	})
	t.Run("parent is not the local head", func(t *testing.T) {
		v := verifierOn(&fakeL1{})
		other := testkit.BuildChain(t, cfg, 6, 1, 3)
		_, err := v.Check(context.Background(), blocks[3].Env, other[2].Ref, blocks[0].Ref, l1Head)
		requireReason(t, err, api.ReasonHeadMismatch)
	})
	t.Run("origin beyond our L1 head waits", func(t *testing.T) {
		v := verifierOn(&fakeL1{})
		_, err := v.Check(context.Background(), blocks[3].Env, blocks[2].Ref, blocks[0].Ref, testkit.L1Block(1, 0))
		require.ErrorIs(t, err, errWait)
	})
	t.Run("origin not canonical on our L1 view", func(t *testing.T) {
		l1 := &fakeL1{}
		l1.reorg(2, 7)
		v := verifierOn(l1)
		_, err := v.Check(context.Background(), blocks[3].Env, blocks[2].Ref, blocks[0].Ref, l1Head)
		requireReason(t, err, api.ReasonL1OriginMismatch)
	})
	t.Run("L1 view unavailable is transient", func(t *testing.T) {
		v := verifierOn(&fakeL1{err: errors.New("l1 down")})
		_, err := v.Check(context.Background(), blocks[3].Env, blocks[2].Ref, blocks[0].Ref, l1Head)
		require.ErrorIs(t, err, errL1)
	})
	t.Run("origin skips an L1 block", func(t *testing.T) {
		v := verifierOn(&fakeL1{})
		b := testkit.MakeBlock(t, cfg, blocks[2].Ref, testkit.L1Block(blocks[2].Ref.L1Origin.Number+2, 0), 0, common.Hash{1})
		_, err := v.Check(context.Background(), b.Env, blocks[2].Ref, blocks[0].Ref, l1Head)
		requireReason(t, err, api.ReasonL1OriginMismatch)
	})
	t.Run("origin goes back", func(t *testing.T) {
		v := verifierOn(&fakeL1{})
		b := testkit.MakeBlock(t, cfg, blocks[4].Ref, testkit.L1Block(blocks[4].Ref.L1Origin.Number-1, 0), 0, common.Hash{1})
		_, err := v.Check(context.Background(), b.Env, blocks[4].Ref, blocks[0].Ref, l1Head)
		requireReason(t, err, api.ReasonL1OriginMismatch)
	})
	t.Run("same epoch with a wrong sequence number", func(t *testing.T) {
		v := verifierOn(&fakeL1{})
		parent := blocks[1].Ref // block 2, origin 1, seq 0
		b := testkit.MakeBlock(t, cfg, parent, testkit.L1Block(parent.L1Origin.Number, 0), 5, common.Hash{1})
		_, err := v.Check(context.Background(), b.Env, parent, blocks[0].Ref, l1Head)
		requireReason(t, err, api.ReasonL1OriginMismatch)
	})
	t.Run("new epoch with a non-zero sequence number", func(t *testing.T) {
		v := verifierOn(&fakeL1{})
		parent := blocks[2].Ref // block 3, origin 1
		b := testkit.MakeBlock(t, cfg, parent, testkit.L1Block(parent.L1Origin.Number+1, 0), 1, common.Hash{1})
		_, err := v.Check(context.Background(), b.Env, parent, blocks[0].Ref, l1Head)
		requireReason(t, err, api.ReasonL1OriginMismatch)
	})
	t.Run("no L1-info deposit", func(t *testing.T) {
		v := verifierOn(&fakeL1{})
		p := *blocks[3].Env.ExecutionPayload
		p.Transactions = nil
		_, err := v.Check(context.Background(), &eth.ExecutionPayloadEnvelope{ExecutionPayload: &p}, blocks[2].Ref, blocks[0].Ref, l1Head)
		requireReason(t, err, api.ReasonInvalidPayload)
	})
}
