package plugin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/log"
	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/ethereum-optimism/optimism/op-node/rollup"
	"github.com/ethereum-optimism/optimism/op-node/rollup/attributes"
	"github.com/ethereum-optimism/optimism/op-node/rollup/derive"
	"github.com/ethereum-optimism/optimism/op-service/eth"

	"github.com/op-replicator/op-replicator/driverhook"
	"github.com/op-replicator/op-replicator/plugin/api"
)

// systemConfigsKept is how many recent blocks' SystemConfigs the derivation check keeps, so that checking the
// next block normally costs no read of its parent from the local engine.
const systemConfigsKept = 64

// derivationRules checks a block against what derivation would build on the same parent from the same L1
// origin, with op-node's own code, so a block the sequencer could not have had derived from L1 never reaches the
// engine, which executes whatever deposits it is given:
//   - the batch rules (derive.CheckBatch on the block as a singular batch, exactly as the batcher would submit it):
//     timestamp, epoch, L1-origin time, sequencer drift, no user transactions in a fork activation block, and no
//     deposit or not-yet-allowed transaction types among the sequencer's transactions;
//   - the payload attributes (derive.FetchingAttributesBuilder for the block's parent and L1 origin, on our L1
//     view): the L1-info deposit, the epoch's user deposits, network-upgrade transactions, timestamp, prev-randao,
//     fee recipient, gas limit, withdrawals, parent beacon root and EIP-1559 parameters, compared with the block
//     by attributes.AttributesMatchBlock, the check derivation makes before it keeps an unsafe block as safe. The
//     deposits must be exactly the attributes' transactions, in order, at the start of the block; the sequencer's
//     own transactions follow.
//
// What it cannot check is data availability: that the batch for the block will be posted to L1 in time. The
// block's batch is taken to be included in its own L1 origin, so the sequencing window never expires here.
type derivationRules struct {
	rollup *rollup.Config
	log    log.Logger
	l1     *l1View
	attrs  *derive.FetchingAttributesBuilder
	// sysCfgs holds the SystemConfig of blocks that passed, by hash: the next block's attributes start from its
	// parent's, which is then already known.
	sysCfgs *lru.Cache[common.Hash, eth.SystemConfig]
	l2      driverhook.L2Chain
}

// checkDerivationDeps refuses what derive.NewFetchingAttributesBuilder would panic on.
func checkDerivationDeps(deps driverhook.Deps) error {
	if deps.Rollup.LagoonTime != nil && deps.DependencySet == nil {
		return errors.New("the rollup config schedules Lagoon, but op-node has no interop dependency set")
	}
	return nil
}

// newDerivationRules builds the check, reading L1 blocks by height from l1 (deps.L1 with the verifier's kept
// blocks); deps must pass checkDerivationDeps.
func newDerivationRules(deps driverhook.Deps, l1 *l1View) *derivationRules {
	sysCfgs, _ := lru.New[common.Hash, eth.SystemConfig](systemConfigsKept) // only fails for a non-positive size
	d := &derivationRules{rollup: deps.Rollup, log: deps.Log, l1: l1, sysCfgs: sysCfgs, l2: deps.L2}
	var depSet derive.DependencySet
	if deps.DependencySet != nil {
		depSet = deps.DependencySet
	}
	d.attrs = derive.NewFetchingAttributesBuilder(deps.Rollup, deps.L1ChainConfig, depSet, deps.L1, d)
	return d
}

// Check returns nil if derivation, given the block's transactions as its batch, would build exactly this block on
// parent (the local unsafe head, which the block builds on). origin is our L1 block at the block's L1 origin, as
// the verifier found it canonical; l1Head is our L1 head.
func (d *derivationRules) Check(ctx context.Context, env *eth.ExecutionPayloadEnvelope, ref, parent eth.L2BlockRef, origin, l1Head eth.L1BlockRef) error {
	payload := env.ExecutionPayload
	batch, _, err := derive.PayloadToSingularBatch(d.rollup, payload)
	if err != nil {
		return disagree(api.ReasonAttributesMismatch, "block %s cannot be a batch: %v", ref.ID(), err)
	}
	l1Blocks, err := d.l1Blocks(ctx, parent, origin, l1Head)
	if err != nil {
		return err
	}
	rules := &ruleLog{}
	batchWithInclusion := &derive.BatchWithL1InclusionBlock{L1InclusionBlock: l1Blocks[0], Batch: batch}
	switch v := derive.CheckBatch(ctx, d.rollup, log.NewLogger(rules), l1Blocks, parent, batchWithInclusion, nil); v {
	case derive.BatchAccept:
	case derive.BatchUndecided:
		// Only when the next L1 block, which the rule needs, is beyond our L1 head.
		return fmt.Errorf("%w: block %s needs L1 block %d to be judged (%s)", errWait, ref.ID(), l1Blocks[0].Number+1, rules.last())
	default:
		return disagree(api.ReasonAttributesMismatch, "block %s breaks a batch rule of derivation: %s", ref.ID(), rules.last())
	}
	attrs, err := d.attrs.PreparePayloadAttributes(ctx, parent, batch.Epoch())
	if errors.Is(err, derive.ErrTemporary) {
		return fmt.Errorf("%w: attributes for block %s: %w", errL1, ref.ID(), err)
	} else if err != nil {
		return disagree(api.ReasonAttributesMismatch, "derivation cannot build block %s on %s from L1 origin %s: %v",
			ref.ID(), parent.ID(), batch.Epoch(), err)
	}
	// As derivation builds a block from a batch: the attributes' deposits, then the batch's transactions.
	attrs.Transactions = append(attrs.Transactions, batch.Transactions...)
	if err := matchTransactions(attrs.Transactions, payload.Transactions); err != nil {
		return disagree(api.ReasonAttributesMismatch, "block %s is not the block derivation builds: %v", ref.ID(), err)
	}
	if err := attributes.AttributesMatchBlock(d.rollup, attrs, parent.Hash, env, d.log); err != nil {
		return disagree(api.ReasonAttributesMismatch, "block %s is not the block derivation builds: %v", ref.ID(), err)
	}
	if sysCfg, err := derive.PayloadToSystemConfig(d.rollup, payload); err == nil {
		d.sysCfgs.Add(ref.Hash, sysCfg)
	}
	return nil
}

// matchTransactions names the first transaction where a block differs from derivation's, by hash and type
// (attributes.AttributesMatchBlock checks the same, but prints whole transactions).
func matchTransactions(derived []hexutil.Bytes, block []eth.Data) error {
	describe := func(txs []hexutil.Bytes, i int) string {
		if i >= len(txs) {
			return "none"
		}
		if len(txs[i]) == 0 {
			return "empty"
		}
		return fmt.Sprintf("%s (type %#x)", crypto.Keccak256Hash(txs[i]), txs[i][0])
	}
	for i := 0; i < max(len(derived), len(block)); i++ {
		if i < len(derived) && i < len(block) && bytes.Equal(derived[i], block[i]) {
			continue
		}
		what := "transaction"
		if i == 0 {
			what = "L1-info deposit"
		}
		return fmt.Errorf("%s %d differs: the block has %s, derivation has %s (%d transactions in the block, %d derived)",
			what, i, describe(block, i), describe(derived, i), len(block), len(derived))
	}
	return nil
}

// l1Blocks is the L1 context derivation judges the batch in: the parent's L1 origin, and the L1 block after it
// when our L1 view has it.
func (d *derivationRules) l1Blocks(ctx context.Context, parent eth.L2BlockRef, origin, l1Head eth.L1BlockRef) ([]eth.L1BlockRef, error) {
	epoch := origin
	if origin.Number != parent.L1Origin.Number {
		var err error
		if epoch, err = d.l1.L1BlockRefByNumber(ctx, parent.L1Origin.Number, l1Head); err != nil {
			return nil, fmt.Errorf("%w: L1 block %d: %w", errL1, parent.L1Origin.Number, err)
		}
	}
	if epoch.Hash != parent.L1Origin.Hash {
		// The watcher halts for this (l1-origin-reorged) before the next round.
		return nil, fmt.Errorf("%w: L1 origin %s of the local head %s is no longer canonical", errStale, parent.L1Origin, parent.ID())
	}
	if epoch.Number+1 > l1Head.Number {
		return []eth.L1BlockRef{epoch}, nil
	}
	if origin.Number == epoch.Number+1 {
		return []eth.L1BlockRef{epoch, origin}, nil
	}
	next, err := d.l1.L1BlockRefByNumber(ctx, epoch.Number+1, l1Head)
	if err != nil {
		return nil, fmt.Errorf("%w: L1 block %d: %w", errL1, epoch.Number+1, err)
	}
	return []eth.L1BlockRef{epoch, next}, nil
}

// SystemConfigByL2Hash is the attributes builder's source of the parent's SystemConfig: kept from the parent's
// own check, or read from the local engine.
func (d *derivationRules) SystemConfigByL2Hash(ctx context.Context, hash common.Hash) (eth.SystemConfig, error) {
	if sysCfg, ok := d.sysCfgs.Get(hash); ok {
		return sysCfg, nil
	}
	return d.l2.SystemConfigByL2Hash(ctx, hash)
}

// ruleLog keeps what derive.CheckBatch says about the batch it judges: its logs are its only explanation.
type ruleLog struct {
	mu   sync.Mutex
	msgs []string
}

func (r *ruleLog) Enabled(context.Context, slog.Level) bool { return true }
func (r *ruleLog) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *ruleLog) WithGroup(string) slog.Handler            { return r }

func (r *ruleLog) Handle(_ context.Context, rec slog.Record) error {
	msg := rec.Message
	rec.Attrs(func(a slog.Attr) bool {
		msg += fmt.Sprintf(" %s=%v", a.Key, a.Value)
		return true
	})
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, msg)
	return nil
}

// last is the rule's last word: the reason for its verdict.
func (r *ruleLog) last() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.msgs) == 0 {
		return "no reason given"
	}
	return r.msgs[len(r.msgs)-1]
}
