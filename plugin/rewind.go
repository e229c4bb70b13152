package plugin

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/rpc"

	"github.com/ethereum-optimism/optimism/op-service/eth"
)

// engineRewinder rewinds this node's op-geth to the safe head at a halt, over its user RPC (--replicator.l2.rpc).
//
// op-node's forkchoice update to the safe head is not enough: when the safe head is a canonical ancestor of
// op-geth's head, op-geth's forkchoiceUpdated changes nothing (the "ignore old head" branch is skipped for OP
// chains), and op-geth would go on serving the rejected blocks as latest until derivation overtook them.
// debug_setHead rewinds op-geth's canonical chain itself. It runs under op-node's engine-controller lock
// (driverhook.Engine.RewindUnsafeToSafe), so nothing inserts a block between the rewind and op-node's reset.
type engineRewinder struct {
	rpc     *rpc.Client
	name    string
	timeout time.Duration
}

func newEngineRewinder(rawURL string, timeout time.Duration) (*engineRewinder, error) {
	// Lazy: rpc.DialOptions connects http(s) on the first call; ws(s) and IPC connect now, and Check reports it.
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := rpc.DialOptions(ctx, rawURL)
	if err != nil {
		return nil, fmt.Errorf("--replicator.l2.rpc %s: %w", redactURL(rawURL), err)
	}
	return &engineRewinder{rpc: c, name: redactURL(rawURL), timeout: timeout}, nil
}

// Check proves at start-up that the RPC can rewind this chain's op-geth: it answers, serves the debug namespace,
// and has the rollup's L2 genesis block. It cannot tell this node's op-geth from another op-geth of the same
// chain; every rewind checks that op-node's engine was the one rewound (Rewind's caller reads it back).
func (r *engineRewinder) Check(ctx context.Context, genesis eth.BlockID) error {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	var modules map[string]string
	if err := r.rpc.CallContext(ctx, &modules, "rpc_modules"); err != nil {
		return fmt.Errorf("--replicator.l2.rpc %s is unreachable: %w", r.name, err)
	}
	if _, ok := modules["debug"]; !ok {
		return fmt.Errorf("--replicator.l2.rpc %s does not serve the debug namespace (it serves %v): start op-geth with "+
			"debug in --http.api, --ws.api, or use its IPC path", r.name, slices.Sorted(maps.Keys(modules)))
	}
	got, err := r.hashAt(ctx, rpc.BlockNumber(genesis.Number))
	if err != nil {
		return fmt.Errorf("--replicator.l2.rpc %s: L2 genesis block %d: %w", r.name, genesis.Number, err)
	}
	if got != genesis.Hash {
		return fmt.Errorf("--replicator.l2.rpc %s is another chain's node: its block %d is %s, the rollup's L2 genesis is %s",
			r.name, genesis.Number, got, genesis.Hash)
	}
	return nil
}

// Rewind makes the safe head op-geth's head: debug_setHead to its number, then op-geth's latest must be the safe
// head block. It does nothing when op-geth's head is the safe head already.
func (r *engineRewinder) Rewind(ctx context.Context, safe eth.L2BlockRef) error {
	if safe.Hash == (common.Hash{}) {
		return errors.New("no safe head yet: nothing to rewind to")
	}
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	latest, err := r.hashAt(ctx, rpc.LatestBlockNumber)
	if err != nil {
		return fmt.Errorf("op-geth's latest block: %w", err)
	}
	if latest == safe.Hash {
		return nil
	}
	// debug_setHead rewinds further than asked, down to a block with state, when op-geth lacks the safe head's
	// state: check it first, a missing state must fail the rewind, not the chain.
	var balance hexutil.Big
	if err := r.rpc.CallContext(ctx, &balance, "eth_getBalance", common.Address{}, rpc.BlockNumberOrHashWithHash(safe.Hash, true)); err != nil {
		return fmt.Errorf("op-geth has no state for the safe head %s, not rewinding to it: %w", safe.ID(), err)
	}
	if err := r.rpc.CallContext(ctx, nil, "debug_setHead", hexutil.Uint64(safe.Number)); err != nil {
		return fmt.Errorf("debug_setHead(%d) at %s: %w", safe.Number, r.name, err)
	}
	if latest, err = r.hashAt(ctx, rpc.LatestBlockNumber); err != nil {
		return fmt.Errorf("op-geth's latest block after debug_setHead(%d): %w", safe.Number, err)
	}
	if latest != safe.Hash {
		return fmt.Errorf("after debug_setHead(%d), op-geth's latest block is %s, not the safe head %s", safe.Number, latest, safe.ID())
	}
	return nil
}

func (r *engineRewinder) hashAt(ctx context.Context, n rpc.BlockNumber) (common.Hash, error) {
	var head *struct {
		Hash common.Hash `json:"hash"`
	}
	if err := r.rpc.CallContext(ctx, &head, "eth_getBlockByNumber", n, false); err != nil {
		return common.Hash{}, err
	}
	if head == nil {
		return common.Hash{}, fmt.Errorf("block %s not found", n)
	}
	return head.Hash, nil
}

func (r *engineRewinder) Close() { r.rpc.Close() }
