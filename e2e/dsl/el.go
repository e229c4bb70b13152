package dsl

import (
	"context"
	"fmt"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/rpc"

	"github.com/ethereum-optimism/optimism/op-service/eth"

	"github.com/op-replicator/op-replicator/e2e/devnet"
)

// EL is what users of an execution engine's RPC (op-geth, or L1's geth) see. Its methods read blocks and check
// them; the embedded devnet.EL takes a context, for wait conditions.
type EL struct {
	base
	*devnet.EL
	sys *System
}

// HeaderAt returns the header at a block number or label (rpc.LatestBlockNumber, rpc.SafeBlockNumber, ...).
func (e *EL) HeaderAt(n rpc.BlockNumber) *types.Header {
	e.t.Helper()
	h, err := e.Header(e.ctx(), n)
	e.require.NoError(err)
	return h
}

// WaitNumberAt waits up to timeout until the block at label is at least block least, and returns its number.
func (e *EL) WaitNumberAt(label rpc.BlockNumber, least uint64, timeout time.Duration) uint64 {
	e.t.Helper()
	var got uint64
	e.sys.WaitFor(timeout, fmt.Sprintf("the %s block of %s to reach %d", label, e.HTTP, least),
		func(ctx context.Context) (bool, error) {
			h, err := e.Header(ctx, label)
			if err != nil {
				return false, err
			}
			got = h.Number.Uint64()
			return got >= least, nil
		})
	return got
}

// NumberAt returns the number of the block at a label.
func (e *EL) NumberAt(label rpc.BlockNumber) uint64 {
	e.t.Helper()
	return e.HeaderAt(label).Number.Uint64()
}

// HashAt returns the hash of the block at a number or label.
func (e *EL) HashAt(n rpc.BlockNumber) common.Hash {
	e.t.Helper()
	return e.HeaderAt(n).Hash()
}

// IDAt returns the hash and number of the block at a number or label.
func (e *EL) IDAt(n rpc.BlockNumber) eth.BlockID {
	e.t.Helper()
	return eth.HeaderBlockID(e.HeaderAt(n))
}

// Hashes returns the hashes of the blocks with the given numbers; each must exist.
func (e *EL) Hashes(nums []uint64) []common.Hash {
	e.t.Helper()
	hashes, err := e.HashesAt(e.ctx(), nums)
	e.require.NoError(err)
	return hashes
}

// RequireSameBlocks fails unless this engine has want's blocks at every height from..to.
func (e *EL) RequireSameBlocks(want *EL, from, to uint64) {
	e.t.Helper()
	nums := devnet.NumberRange(from, to)
	got, wanted := e.Hashes(nums), want.Hashes(nums)
	for i, n := range nums {
		e.require.Equal(wanted[i], got[i], "block %d of %s is not %s's", n, e.HTTP, want.HTTP)
	}
}

// RequireNoBlock fails if this engine has a block with hash h (anywhere, canonical or not).
func (e *EL) RequireNoBlock(h common.Hash, what string) {
	e.t.Helper()
	_, err := e.HeaderByHash(e.ctx(), h)
	e.require.ErrorIs(err, ethereum.NotFound, "%s (%s) is on %s", what, h, e.HTTP)
}

// RequireNoBlockAt fails if h is this engine's canonical block at height n.
func (e *EL) RequireNoBlockAt(n uint64, h common.Hash, what string) {
	e.t.Helper()
	got, err := e.BlockID(e.ctx(), rpc.BlockNumber(n))
	if err == nil {
		e.require.NotEqual(h, got.Hash, "%s (%d) is still canonical on %s", what, n, e.HTTP)
	}
}

// RequireReaches fails unless this engine's block at label is, or within SafeGrace gets, at least number mine:
// what (another node's block at that label) is not ahead of this engine's. Nodes poll L1 at their own phase; see
// SafeGrace.
func (e *EL) RequireReaches(label rpc.BlockNumber, mine uint64, what string) {
	e.t.Helper()
	e.require.NoError(e.sys.Net.WaitFor(e.ctx(), SafeGrace, fmt.Sprintf("%s: the reference's %s block to reach %d", what, label, mine),
		func(ctx context.Context) (bool, error) {
			h, err := e.Header(ctx, label)
			return err == nil && h.Number.Uint64() >= mine, err
		}), "%s is ahead of the reference", what)
}

// ConsistentWith fails the test unless this engine's safe and latest blocks are seq's blocks at those heights, and
// seq's safe head is, or within SafeGrace gets, at least this engine's. It returns this engine's latest and safe
// headers, or an RPC error (which fails nothing: a wait condition tries again).
func (e *EL) ConsistentWith(ctx context.Context, seq *EL) (head, safe *types.Header, err error) {
	e.t.Helper()
	if safe, err = e.Header(ctx, rpc.SafeBlockNumber); err != nil {
		return nil, nil, err
	}
	if head, err = e.Header(ctx, rpc.LatestBlockNumber); err != nil {
		return nil, nil, err
	}
	for _, h := range []*types.Header{safe, head} {
		want, err := seq.Header(ctx, rpc.BlockNumber(h.Number.Uint64()))
		if err != nil {
			return nil, nil, err
		}
		e.require.Equal(want.Hash(), h.Hash(), "block %d of %s is not %s's", h.Number, e.HTTP, seq.HTTP)
	}
	e.require.NoError(e.sys.Net.WaitFor(ctx, SafeGrace, fmt.Sprintf("the safe head of %s to reach %s's (%d)", seq.HTTP, e.HTTP, safe.Number),
		func(ctx context.Context) (bool, error) {
			seqSafe, err := seq.Header(ctx, rpc.SafeBlockNumber)
			return err == nil && seqSafe.Number.Cmp(safe.Number) >= 0, err
		}), "the safe head of %s is ahead of %s's", e.HTTP, seq.HTTP)
	return head, safe, nil
}

// RequireNoStateAt fails unless the engine cannot serve the state of block n (eth_getBalance there fails): it is
// not an archive node, and n is beyond the state it keeps readable (the last 128 blocks on a full node).
func (e *EL) RequireNoStateAt(n uint64) {
	e.t.Helper()
	var balance hexutil.Big
	err := e.RPC.CallContext(e.ctx(), &balance, "eth_getBalance", common.Address{}, hexutil.Uint64(n))
	e.require.Error(err, "the state of block %d can be read: an archive node, not op-geth as operators run it", n)
}
